"""Memory cross-attention of the static-cache decoder as one `com.microsoft.MultiHeadAttention` node.

Every token of an RxT answer attends, in each memory layer, over that layer's STM keys and values
`[B, Hkv, S, hd]` (computed once per turn by the memory K/V graph). Written with standard ops that is a dozen
nodes a layer (query regrouping, two batched MatMuls, scale, Softmax, the output's Reshape/Transpose chain), each
a kernel call per token; onnxruntime's contrib `MultiHeadAttention` does the same in one kernel on CPU (float32)
and CUDA (float16 / float32), reading the 4-D keys and values as they are (its BNSH "cross-attention" form, no
copy, no mask).

The op wants as many query heads as K/V heads. Grouped heads (G = Hq / Hkv query heads per K/V head) are folded
into the query *sequence*: query head h = kv * G + g of token t becomes row t * G + g of K/V head kv, an exact
re-layout of the query (and back for the output) by Reshape/Transpose of the few query values, never of K/V.

- eager (torch), and what parity tests call: `memory_attention_reference` (layers.mix_heads, the unfused math);
- under `torch.export` the custom op `rxt_edge::memory_attention`, which `translation_table()` lowers to the
  node above. Only the static-cache decoder uses it (a variant that needs contrib ops anyway); the dynamic
  decoder and `--no-fuse` exports keep the standard-op formulation.
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

from .layers import mix_heads


def supports(q_heads: int, kv_heads: int) -> bool:
    """Whether the fused node computes this attention: query heads a whole multiple of K/V heads (reverse SQA,
    fewer query than K/V heads, tiles its queries and stays unfused)."""
    return q_heads >= kv_heads and q_heads % kv_heads == 0


def memory_attention_reference(
    q: torch.Tensor, mem_k: torch.Tensor, mem_v: torch.Tensor, q_heads: int
) -> torch.Tensor:
    """q [B, T, Hq*hd] (queries already rotated), mem_k/v [B, Hkv, S, hd] -> [B, T, Hq*hd], no mask."""
    b, t, _ = q.shape
    return mix_heads(q.view(b, t, q_heads, mem_k.shape[-1]), mem_k, mem_v, None)


_memory_attention_op = torch.library.custom_op("rxt_edge::memory_attention", mutates_args=())(
    memory_attention_reference
)


@_memory_attention_op.register_fake
def _(q, mem_k, mem_v, q_heads):
    return torch.empty_like(q)


def memory_attention(q: torch.Tensor, mem_k: torch.Tensor, mem_v: torch.Tensor, q_heads: int) -> torch.Tensor:
    """`memory_attention_reference(q, mem_k, mem_v, q_heads)`; under `torch.export` one node (the custom op)."""
    run = _memory_attention_op if torch.compiler.is_exporting() else memory_attention_reference
    return run(q, mem_k, mem_v, q_heads)


# --- ONNX ------------------------------------------------------------------------------------------------
def _mha_schema() -> OpSchema:
    """The part of onnxruntime's contrib `MultiHeadAttention` schema used here and in turn_attention.py
    (onnxscript needs a schema)."""
    optional = OpSchema.FormalParameterOption.Optional
    return OpSchema(
        "MultiHeadAttention",
        MS_DOMAIN,
        1,
        inputs=[
            OpSchema.FormalParameter("query", "T"),
            OpSchema.FormalParameter("key", "T"),
            OpSchema.FormalParameter("value", "T"),
            OpSchema.FormalParameter("bias", "T", param_option=optional),
            OpSchema.FormalParameter("key_padding_mask", "M", param_option=optional),
        ],
        outputs=[OpSchema.FormalParameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[
            OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, ""),
            OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, ""),
        ],
    )


_MHA = Op(Opset(MS_DOMAIN, 1), "MultiHeadAttention", _mha_schema())


def _ints(*values: int):
    return op.Constant(value=ir.tensor(np.array(values, dtype=np.int64)))


def grouped_mha(q, k, v, key_padding_mask, q_heads: int, kv_heads: int, head_dim: int):
    """One `MultiHeadAttention` node for q [B, T, Hq*hd] with Hq = G * Hkv grouped heads: the G query heads of a
    K/V head are folded into the query rows (and back for the output). `key_padding_mask`: int32 [B, S] or None."""
    groups = q_heads // kv_heads
    swap = [0, 1, 3, 2, 4]  # (kv, g) <-> (g, kv) within a token
    if groups > 1:  # [B, T, (kv, g, d)] -> [B, T * G, (kv, d)]
        q = op.Reshape(q, _ints(0, 0, kv_heads, groups, head_dim))
        q = op.Reshape(op.Transpose(q, perm=swap), _ints(0, -1, kv_heads * head_dim))
    scale = 1.0 / math.sqrt(head_dim)
    if key_padding_mask is None:
        out = _MHA(q, k, v, num_heads=kv_heads, scale=scale)
    else:
        out = _MHA(q, k, v, None, key_padding_mask, num_heads=kv_heads, scale=scale)
    if groups > 1:  # [B, T * G, (kv, d)] -> [B, T, (kv, g, d)]
        out = op.Reshape(out, _ints(0, -1, groups, kv_heads, head_dim))
        out = op.Reshape(op.Transpose(out, perm=swap), _ints(0, -1, q_heads * head_dim))
    return out


def _memory_attention_mha(q, mem_k, mem_v, q_heads: int):
    return grouped_mha(q, mem_k, mem_v, None, q_heads, mem_k.shape[1], mem_k.shape[3])


def translation_table() -> dict:
    return {_memory_attention_op._opoverload: _memory_attention_mha}
