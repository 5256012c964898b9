"""RoPE on the memory cross-attention queries of the static-cache decoder, from the tables GroupQueryAttention uses.

The static decoder's self-attention rotates inside `GroupQueryAttention` from constant cos/sin tables
`[T_max, hd/2]`. The cross-attention queries need the same angles (RoPE on queries only, never on STM keys).
Written as `x * cos + (x @ R) * sin` with this step's cos/sin computed in the graph, that is a dozen shared nodes
(angles, repeat, sin, cos, slices) plus four per layer; onnxruntime's contrib `RotaryEmbedding` reads the same
tables at a start position in one kernel (CPU and CUDA, float32 and float16).

- eager (torch), and what parity tests call: `rotate_queries_reference`;
- under `torch.export` the custom op `rxt_edge::rotate_queries`, lowered by `translation_table()` to
  `RotaryEmbedding(q, start, cos_cache, sin_cache, interleaved=1)`; position_ids of shape [1] is the op's
  "start position" form (every batch row at the same positions, as the static decoder's rows are).
"""

from __future__ import annotations

import torch
from onnx.defs import OpSchema
from onnxscript.values import Op, Opset
from rxt_edge.runtimes.operators import MS_DOMAIN

from .cached_attention import rotate_interleaved


def rotate_queries_reference(
    q: torch.Tensor, start: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor, heads: int
) -> torch.Tensor:
    """q [B, T, H*hd] rotated at positions start .. start + T - 1 (start: [1] int64); cos/sin_cache [T_max, hd/2]
    (export/layers.py `rope_tables`) -> [B, T, H*hd]."""
    b, t, width = q.shape
    pos = start + torch.arange(t, device=q.device)  # [T]
    cos, sin = cos_cache[pos][None], sin_cache[pos][None]  # [1, T, hd/2]
    return rotate_interleaved(q.view(b, t, heads, width // heads), cos, sin).reshape(b, t, width)


_rotate_queries_op = torch.library.custom_op("rxt_edge::rotate_queries", mutates_args=())(
    rotate_queries_reference
)


@_rotate_queries_op.register_fake
def _(q, start, cos_cache, sin_cache, heads):
    return torch.empty_like(q)


def rotate_queries(
    q: torch.Tensor, start: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor, heads: int
) -> torch.Tensor:
    """`rotate_queries_reference(...)`; under `torch.export` one node (the custom op), exported as
    RotaryEmbedding."""
    run = _rotate_queries_op if torch.compiler.is_exporting() else rotate_queries_reference
    return run(q, start, cos_cache, sin_cache, heads)


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


def _rotate_queries_onnx(q, start, cos_cache, sin_cache, heads: int):
    return _ROTARY(q, start, cos_cache, sin_cache, interleaved=1, num_heads=heads)


def translation_table() -> dict:
    return {_rotate_queries_op._opoverload: _rotate_queries_onnx}
