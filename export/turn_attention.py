"""Attention of the per-turn graphs (encoder self-attention, memory attention) as one `com.microsoft.MultiHeadAttention`.

The encoder and the memory update run once per turn, off the answer's path, but on CUDA they are launch-bound:
written with standard ops each attention is a dozen kernels (query regrouping, key transpose, two batched
MatMuls, scale, padding bias, Softmax, the output's Reshape/Transpose chain). onnxruntime's contrib
`MultiHeadAttention` computes it in one kernel on CPU (float32) and CUDA (float16 / float32), reading queries,
keys and values as the projections write them ([B, T, H * hd], its BSD form: no transpose of K/V) and the
interaction's padding as its 2-D `key_padding_mask` ([B, S], 0 = padding; int32).

Three attentions use it: the encoder's bidirectional self-attention (padding mask), the memory write (STM slots
attend over the encoded interaction; RoPE on its keys only; padding mask) and the memory's self / interlayer
attention over the slots (no mask). Grouped heads (G = Hq / Hkv) are folded into the query *sequence* exactly as
export/memory_attention.py does for the decoder (query head h = kv * G + g of token t becomes row t * G + g of
K/V head kv), and `graph_fusions.fold_memory_head_groups` then moves that re-layout into the projections' weights.

- eager (torch), and what parity tests call: `turn_attention_reference` (layers.mix_heads with the additive
  padding bias: the unfused math, bit for bit);
- under `torch.export` inside `fused_export()` (what `rxt-edge export` does unless `--no-fuse`): the custom op
  `rxt_edge::turn_attention`, which `translation_table()` lowers to the node above. Outside it (`--no-fuse`),
  callers keep the standard-op formulation (`active()` is False).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import onnx_ir as ir
import torch
from onnxscript import opset18 as op

from .layers import Attention, heads_first, mix_heads, padding_bias
from .memory_attention import grouped_mha, supports

__all__ = ["active", "attend", "fused_export", "supports", "turn_attention", "turn_attention_reference"]

_FUSED = contextvars.ContextVar("rxt_edge_turn_attention", default=False)


@contextlib.contextmanager
def fused_export(enabled: bool = True) -> Iterator[None]:
    """Export the per-turn attentions as the custom op (lowered by `translation_table()`) while inside."""
    token = _FUSED.set(enabled)
    try:
        yield
    finally:
        _FUSED.reset(token)


def active(q_heads: int, kv_heads: int) -> bool:
    """Whether this attention is being exported as one fused node (inside `fused_export`, heads that fold)."""
    return _FUSED.get() and torch.compiler.is_exporting() and supports(q_heads, kv_heads)


def turn_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, q_heads: int, kv_heads: int
) -> torch.Tensor:
    """q [B, T, Hq*hd], k/v [B, S, Hkv*hd] (already rotated where the model rotates), mask [B, S] (> 0: a
    token, else padding) or None -> [B, T, Hq*hd]; no causal mask."""
    b, t, width = q.shape
    s, hd = k.shape[1], width // q_heads
    kh = k.view(b, s, kv_heads, hd).transpose(1, 2)
    vh = v.view(b, s, kv_heads, hd).transpose(1, 2)
    bias = padding_bias(mask, q.dtype) if mask is not None else None
    return mix_heads(q.view(b, t, q_heads, hd), kh, vh, bias)


_turn_attention_op = torch.library.custom_op("rxt_edge::turn_attention", mutates_args=())(
    turn_attention_reference
)


@_turn_attention_op.register_fake
def _(q, k, v, mask, q_heads, kv_heads):
    return torch.empty_like(q)


def turn_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, q_heads: int, kv_heads: int
) -> torch.Tensor:
    """`turn_attention_reference(...)`; one node (the custom op) while `active(q_heads, kv_heads)`."""
    run = _turn_attention_op if active(q_heads, kv_heads) else turn_attention_reference
    return run(q, k, v, mask, q_heads, kv_heads)


# --- ONNX ------------------------------------------------------------------------------------------------
def _turn_attention_mha(q, k, v, mask, q_heads: int, kv_heads: int):
    keep = op.Cast(mask, to=ir.DataType.INT32.value) if mask is not None else None
    return grouped_mha(q, k, v, keep, q_heads, kv_heads, k.shape[2] // kv_heads)


def translation_table() -> dict:
    return {_turn_attention_op._opoverload: _turn_attention_mha}


def attend(
    attn: Attention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    gate_input: torch.Tensor,
) -> torch.Tensor:
    """`attn.attend` for q [B, T, Hq, hd] over k, v [B, S, Hkv, hd] (sequence-major, as projected) with the
    additive padding `bias` [B, 1, 1, S] or None, which `mask` [B, S] (or None) also describes; exported as one
    fused node while `active`, else exactly the standard-op formulation."""
    cfg = attn.cfg
    if active(cfg.q_heads, cfg.kv_heads):
        out = turn_attention(q.flatten(2), k.flatten(2), v.flatten(2), mask, cfg.q_heads, cfg.kv_heads)
        return attn.project_out(out, gate_input)
    return attn.attend(q, heads_first(k), heads_first(v), bias, gate_input)
