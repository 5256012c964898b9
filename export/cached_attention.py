"""Self-attention over a static KV cache: the decoder's step as onnxruntime's `GroupQueryAttention` runs it.

The static-cache decoder (`kv_cache: "static"` in the manifest, docs/graph-contract.md) keeps each layer's keys and
values in one `[B, Hkv, T_max, hd]` buffer that is both the graph's `past_key.i` input and its `present_key.i`
output: the runtime binds the same memory to both, and the op writes this run's rows at positions
`seqlens_k + 1 - T .. seqlens_k` in place. Every step then has the same shapes and buffer addresses (what CUDA-graph
capture needs), nothing is concatenated, and RoPE, the cache write, the causal softmax and the K/V-head sharing
are one kernel instead of a dozen.

- eager (torch), and what parity tests call: `cached_attention_reference`, plain tensor code with exactly that
  meaning (the cache is returned updated, not written in place);
- under `torch.export` the custom op `rxt_edge::cached_attention` is one opaque node that
  `translation_table()` turns into `com.microsoft.GroupQueryAttention` (interleaved rotary from cos/sin tables of
  `T_max` rows; `total_sequence_length` a constant `T_max`: with a shared buffer the op reads each row's length
  from `seqlens_k`).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import torch
from onnx.defs import OpSchema
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset
from rxt_edge.runtimes.operators import MS_DOMAIN


def supports(q_heads: int, kv_heads: int, head_dim: int) -> bool:
    """Whether GroupQueryAttention computes this attention: query heads a multiple of K/V heads (reverse SQA,
    fewer query than K/V heads, is not) and a head dim that is a multiple of 16 (the CPU kernel's rule)."""
    return q_heads >= kv_heads and q_heads % kv_heads == 0 and head_dim % 16 == 0


def rotate_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, hd]; cos, sin [B, T, hd/2]: pairs (x[2i], x[2i+1]) rotated by angle i."""
    c, s = cos[:, :, None, :].to(x.dtype), sin[:, :, None, :].to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * c - odd * s, odd * c + even * s), dim=-1).flatten(-2)


def cached_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    seqlens_k: torch.Tensor,
    cos_cache: torch.Tensor,
    sin_cache: torch.Tensor,
    q_heads: int,
    kv_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B, T, Hq*hd], k/v [B, T, Hkv*hd] (before RoPE), cache_k/v [B, Hkv, T_max, hd], seqlens_k [B] int32
    (cached tokens after this run, minus one), cos/sin_cache [T_max, hd/2].

    Returns (attention output [B, T, Hq*hd], cache_k, cache_v with this run's rotated keys / values written)."""
    b, t, _ = q.shape
    hd = cache_k.shape[-1]
    start = seqlens_k.long() + 1 - t  # [B]: position of this run's first token
    pos = start[:, None] + torch.arange(t, device=q.device)[None, :]  # [B, T]
    cos, sin = cos_cache[pos], sin_cache[pos]  # [B, T, hd/2]
    qr = rotate_interleaved(q.view(b, t, q_heads, hd), cos, sin)
    kr = rotate_interleaved(k.view(b, t, kv_heads, hd), cos, sin)
    vr = v.view(b, t, kv_heads, hd)
    rows = pos[:, None, :, None].expand(b, kv_heads, t, hd)  # [B, Hkv, T, hd]
    cache_k = cache_k.scatter(2, rows, kr.transpose(1, 2).to(cache_k.dtype))
    cache_v = cache_v.scatter(2, rows, vr.transpose(1, 2).to(cache_v.dtype))
    groups = q_heads // kv_heads
    keys = cache_k.repeat_interleave(groups, dim=1)  # [B, Hq, T_max, hd]: query head h reads K/V head h // G
    values = cache_v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(qr.transpose(1, 2), keys.transpose(-1, -2)) / math.sqrt(hd)  # [B, Hq, T, T_max]
    key_pos = torch.arange(cache_k.shape[2], device=q.device)
    visible = key_pos[None, None, None, :] <= pos[:, None, :, None]  # causal, and nothing past the cache end
    wide = torch.promote_types(scores.dtype, torch.float32)
    scores = scores.to(wide).masked_fill(~visible, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1).to(q.dtype), values)  # [B, Hq, T, hd]
    return out.transpose(1, 2).reshape(b, t, q_heads * hd), cache_k, cache_v


# The same function as an opaque custom op (its outputs are new tensors: `scatter` copies, nothing aliases)
_cached_attention_op = torch.library.custom_op("rxt_edge::cached_attention", mutates_args=())(
    cached_attention_reference
)


@_cached_attention_op.register_fake
def _(q, k, v, cache_k, cache_v, seqlens_k, cos_cache, sin_cache, q_heads, kv_heads):
    return torch.empty_like(q), torch.empty_like(cache_k), torch.empty_like(cache_v)


def cached_attention(*args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`cached_attention_reference(q, k, v, cache_k, cache_v, seqlens_k, cos_cache, sin_cache, q_heads, kv_heads)`;
    under `torch.export` one node (the custom op), exported as GroupQueryAttention."""
    run = _cached_attention_op if torch.compiler.is_exporting() else cached_attention_reference
    return run(*args)


# --- ONNX ------------------------------------------------------------------------------------------------
def _gqa_schema() -> OpSchema:
    """The part of onnxruntime's contrib `GroupQueryAttention` schema used here (onnxscript needs a schema)."""
    optional = OpSchema.FormalParameterOption.Optional
    single = OpSchema.FormalParameterOption.Single
    names = [
        ("query", "T", single),
        ("key", "T", optional),
        ("value", "T", optional),
        ("past_key", "T", optional),
        ("past_value", "T", optional),
        ("seqlens_k", "M", single),
        ("total_sequence_length", "M", single),
        ("cos_cache", "T", optional),
        ("sin_cache", "T", optional),
    ]
    attrs = {
        "num_heads": OpSchema.AttrType.INT,
        "kv_num_heads": OpSchema.AttrType.INT,
        "do_rotary": OpSchema.AttrType.INT,
        "rotary_interleaved": OpSchema.AttrType.INT,
        "scale": OpSchema.AttrType.FLOAT,
    }
    return OpSchema(
        "GroupQueryAttention",
        MS_DOMAIN,
        1,
        inputs=[OpSchema.FormalParameter(n, t, param_option=o) for n, t, o in names],
        outputs=[
            OpSchema.FormalParameter("output", "T"),
            OpSchema.FormalParameter("present_key", "T"),
            OpSchema.FormalParameter("present_value", "T"),
        ],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], ""),
            ("M", ["tensor(int32)"], ""),
        ],
        attributes=[OpSchema.Attribute(n, kind, "") for n, kind in attrs.items()],
    )


_GQA = Op(Opset(MS_DOMAIN, 1), "GroupQueryAttention", _gqa_schema())


def _cached_attention_gqa(
    q, k, v, cache_k, cache_v, seqlens_k, cos_cache, sin_cache, q_heads: int, kv_heads: int
):
    max_len, head_dim = cache_k.shape[2], cache_k.shape[3]
    total = op.Constant(
        value=ir.tensor(np.array(max_len, dtype=np.int32))
    )  # shared buffer: rows from seqlens_k
    return _GQA(
        q,
        k,
        v,
        cache_k,
        cache_v,
        seqlens_k,
        total,
        cos_cache,
        sin_cache,
        num_heads=q_heads,
        kv_num_heads=kv_heads,
        do_rotary=1,
        rotary_interleaved=1,
        scale=1.0 / math.sqrt(head_dim),
        _num_outputs=3,
    )


def translation_table() -> dict:
    return {_cached_attention_op._opoverload: _cached_attention_gqa}
