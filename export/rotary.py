"""RoPE on the memory cross-attention queries of the static-cache decoder, from the tables GroupQueryAttention uses.

The static decoder's self-attention rotates inside `GroupQueryAttention` from constant cos/sin tables
`[T_max, hd/2]`. The cross-attention queries need the same angles (RoPE on queries only, never on STM keys).
Written as `x * cos + (x @ R) * sin` with this step's cos/sin computed in the graph, that is a dozen shared nodes
(angles, repeat, sin, cos, slices) plus four per layer; onnxruntime's contrib `RotaryEmbedding` reads the same
tables at given positions in one kernel (CPU and CUDA, float32 and float16).

- eager (torch), and what parity tests call: `rotate_queries_reference`;
- under `torch.export` the custom op `rxt_edge::rotate_queries`, lowered by `translation_table()` to
  `RotaryEmbedding(q, positions, cos_cache, sin_cache, interleaved=1)` with position_ids [B, T].

The positions come from `step_positions(input_ids, seqlens_k)`: `seqlens_k + 1 - T .. seqlens_k` per row, formed
on the device from the ids' count, never their shape read on the host (that copy would bar the step from CUDA-graph
capture): four kernels (ones like the ids, a reverse exclusive CumSum, a Cast and a Sub), where the same formula
written in torch exported as a dozen (Expand, CumSum, Slices, Unsqueeze, Cast, Add, Sub, Gather).
"""

from __future__ import annotations

import onnx_ir as ir
import torch
from onnx.defs import OpSchema
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset
from rxt_edge.runtimes.operators import MS_DOMAIN

from .cached_attention import rotate_interleaved


def step_positions_reference(input_ids: torch.Tensor, seqlens_k: torch.Tensor) -> torch.Tensor:
    """input_ids [B, T], seqlens_k [B] (int32: cached tokens after this run - 1) -> positions [B, T] int64."""
    t = input_ids.shape[1]
    # T-1-t: what a reverse exclusive CumSum of ones gives
    back = torch.arange(t - 1, -1, -1, device=input_ids.device)
    return seqlens_k.long()[:, None] - back[None]


_step_positions_op = torch.library.custom_op("rxt_edge::step_positions", mutates_args=())(
    step_positions_reference
)


@_step_positions_op.register_fake
def _(input_ids, seqlens_k):
    return torch.empty_like(input_ids)


def step_positions(input_ids: torch.Tensor, seqlens_k: torch.Tensor) -> torch.Tensor:
    """`step_positions_reference(...)`; under `torch.export` one node (the custom op), exported as four."""
    run = _step_positions_op if torch.compiler.is_exporting() else step_positions_reference
    return run(input_ids, seqlens_k)


def rotate_queries_reference(
    q: torch.Tensor, positions: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor, heads: int
) -> torch.Tensor:
    """q [B, T, H*hd] rotated at `positions` [B, T] (int64); cos/sin_cache [T_max, hd/2] (export/layers.py
    `rope_tables`) -> [B, T, H*hd]."""
    b, t, width = q.shape
    cos, sin = cos_cache[positions], sin_cache[positions]  # [B, T, hd/2]
    return rotate_interleaved(q.view(b, t, heads, width // heads), cos, sin).reshape(b, t, width)


_rotate_queries_op = torch.library.custom_op("rxt_edge::rotate_queries", mutates_args=())(
    rotate_queries_reference
)


@_rotate_queries_op.register_fake
def _(q, positions, cos_cache, sin_cache, heads):
    return torch.empty_like(q)


def rotate_queries(
    q: torch.Tensor, positions: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor, heads: int
) -> torch.Tensor:
    """`rotate_queries_reference(...)`; under `torch.export` one node (the custom op), exported as
    RotaryEmbedding."""
    run = _rotate_queries_op if torch.compiler.is_exporting() else rotate_queries_reference
    return run(q, positions, cos_cache, sin_cache, heads)


# --- ONNX ------------------------------------------------------------------------------------------------
def _rotary_schema() -> OpSchema:
    """The part of onnxruntime's contrib `RotaryEmbedding` schema used here (onnxscript needs a schema)."""
    return OpSchema(
        "RotaryEmbedding",
        MS_DOMAIN,
        1,
        inputs=[
            OpSchema.FormalParameter("input", "T"),
            OpSchema.FormalParameter("position_ids", "M"),
            OpSchema.FormalParameter("cos_cache", "T"),
            OpSchema.FormalParameter("sin_cache", "T"),
        ],
        outputs=[OpSchema.FormalParameter("output", "T")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], ""),
            ("M", ["tensor(int64)"], ""),
        ],
        attributes=[
            OpSchema.Attribute("interleaved", OpSchema.AttrType.INT, ""),
            OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, ""),
        ],
    )


_ROTARY = Op(Opset(MS_DOMAIN, 1), "RotaryEmbedding", _rotary_schema())


def _rotate_queries_onnx(q, positions, cos_cache, sin_cache, heads: int):
    return _ROTARY(q, positions, cos_cache, sin_cache, interleaved=1, num_heads=heads)


def _step_positions_onnx(input_ids, seqlens_k):
    ones = op.ConstantOfShape(op.Shape(input_ids), value=ir.tensor([1], dtype=ir.DataType.INT64))
    back = op.CumSum(ones, op.Constant(value_int=1), exclusive=1, reverse=1)  # [B, T]: T-1-t
    return op.Sub(op.Unsqueeze(op.Cast(seqlens_k, to=ir.DataType.INT64.value), [1]), back)


def translation_table() -> dict:
    return {
        _rotate_queries_op._opoverload: _rotate_queries_onnx,
        _step_positions_op._opoverload: _step_positions_onnx,
    }
