"""Graph rewrites applied to the exported ONNX graphs before they are saved.

RoPE -> `com.microsoft.RotaryEmbedding`. The canonical model writes interleaved RoPE as
`x * cos + (x @ R) * sin` with R a constant signed pair swap (export/layers.py): four kernels and two passes over
x per rotated tensor, three rotated tensors per decoder layer. onnxruntime's contrib op does it in one kernel
(CPU and CUDA execution providers; DirectML registers it too). The graph already holds this step's cos/sin rows
(`cos`, `sin`: [T, 1, head_dim], each angle repeated for its pair), so the op gets them as its cache with
position 0: row t of the cache is position t of this call, exactly the angles the unfused graph uses.

Only float32 graphs are rewritten (in float16 graphs cos/sin are cast first and the pattern does not match);
`rxt-edge verify` checks the fused graphs against the torch model like any other.

Shared-input projections -> one MatMul. Attention projects one input three times (queries, keys, values; the
memory K/V graph twice): three small matrix products per layer, each a kernel call and, once quantized, its own
activation quantization. Their weights are concatenated into one initializer ([K, Nq + Nk + Nv]) and a Split
hands each consumer its columns: one larger product, the same numbers. Quantizers see one ordinary MatMul
with a constant weight.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern, rewrite

MS_DOMAIN = "com.microsoft"


def _rope_target(op, x, r, cos, sin):
    return op.Add(op.Mul(x, cos), op.Mul(op.MatMul(x, r), sin))


def _is_pair_swap(r: ir.Value) -> bool:
    """R with (x @ R)[2i] = -x[2i+1] and (x @ R)[2i+1] = x[2i] (export/layers.py `_pair_swap`)."""
    if r.const_value is None:
        return False
    m = r.const_value.numpy()
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] % 2:
        return False
    expected = np.zeros(m.shape, dtype=m.dtype)
    idx = np.arange(0, m.shape[0], 2)
    expected[idx + 1, idx] = -1
    expected[idx, idx + 1] = 1
    return bool(np.array_equal(m, expected))


def _rope_check(context, x, r, cos, sin, **_) -> bool:
    shape = x.shape
    return (
        _is_pair_swap(r)
        and x.dtype == ir.DataType.FLOAT
        and cos.dtype == ir.DataType.FLOAT
        and sin.dtype == ir.DataType.FLOAT
        and shape is not None
        and len(shape) == 4
        and all(isinstance(d, int) for d in shape[2:])  # [B, T, heads, head_dim], heads and head_dim static
        and cos.shape is not None
        and len(cos.shape) == 3
    )


def _rope_replacement(op, x, r, cos, sin, **_):
    heads, head_dim = x.shape[2], x.shape[3]

    def ints(*values: int):
        return op.Constant(value=ir.tensor(np.array(values, dtype=np.int64)))

    def cache(table):  # [T, 1, head_dim] -> [T, head_dim / 2]: one angle per pair
        return op.Reshape(op.Slice(table, ints(0), ints(head_dim), ints(2), ints(2)), ints(-1, head_dim // 2))

    # [B, T, heads * head_dim]: where x is a view of the projection's output, rotate that output directly
    source = x.producer()
    flat = source.inputs[0] if source is not None and source.op_type == "Reshape" else None
    shape = flat.shape if flat is not None else None
    if (
        shape is None
        or len(shape) != 3
        or shape[2] != heads * head_dim
        or list(shape[:2]) != list(x.shape[:2])
    ):
        flat = op.Reshape(x, ints(0, 0, heads * head_dim))
    rotated = op.RotaryEmbedding(
        flat, ints(0), cache(cos), cache(sin), interleaved=1, num_heads=heads, _domain=MS_DOMAIN
    )
    return op.Reshape(rotated, ints(0, 0, heads, head_dim))


ROPE_RULE = pattern.RewriteRule(_rope_target, _rope_replacement, _rope_check, name="InterleavedRoPE")


def fuse_rope(model: ir.Model) -> int:
    """Rewrite every interleaved RoPE of `model` in place; returns how many were fused."""
    before = sum(1 for n in model.graph if n.op_type == "RotaryEmbedding")
    rewrite(model, pattern_rewrite_rules=[ROPE_RULE])
    fused = sum(1 for n in model.graph if n.op_type == "RotaryEmbedding") - before
    if fused and MS_DOMAIN not in model.opset_imports:
        model.opset_imports[MS_DOMAIN] = 1
    return fused


def _constant_weight(node: ir.Node) -> np.ndarray | None:
    """The 2-D constant right operand of a plain MatMul, or None."""
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return None
    weight = node.inputs[1]
    if weight is None or weight.const_value is None or len(weight.uses()) != 1:
        return None
    array = weight.const_value.numpy()
    return array if array.ndim == 2 else None


def fuse_shared_input_matmuls(model: ir.Model) -> int:
    """Merge every group of MatMuls that read the same input with constant 2-D weights of one dtype and one
    row count into one MatMul + Split (see the module docstring); returns how many MatMuls were removed."""
    graph = model.graph
    groups: dict[tuple[ir.Value, str, int], list[tuple[ir.Node, np.ndarray]]] = defaultdict(list)
    for node in graph:  # topological order: a group's first node comes first
        weight = _constant_weight(node)
        if weight is not None and node.inputs[0] is not None:  # ir.Value hashes by identity
            groups[(node.inputs[0], str(weight.dtype), weight.shape[0])].append((node, weight))
    removed = 0
    for (source, _, _), members in groups.items():
        if len(members) < 2 or any(node.outputs[0].is_graph_output() for node, _ in members):
            continue  # a graph output keeps its producer (its name is part of the contract)
        first = members[0][0]
        widths = [w.shape[1] for _, w in members]
        stacked = ir.Value(
            name=f"{first.name}_fused_weight",
            const_value=ir.tensor(
                np.concatenate([w for _, w in members], axis=1), name=f"{first.name}_fused_weight"
            ),
        )
        graph.register_initializer(stacked)
        sizes = ir.Value(
            name=f"{first.name}_fused_split",
            const_value=ir.tensor(np.array(widths, dtype=np.int64), name=f"{first.name}_fused_split"),
        )
        graph.register_initializer(sizes)
        product = ir.node("MatMul", [source, stacked], name=f"{first.name}_fused")
        split = ir.node(
            "Split",
            [product.outputs[0], sizes],
            {"axis": -1},
            num_outputs=len(members),
            name=f"{first.name}_split",
        )
        graph.insert_before(first, [product, split])
        for (node, _), part in zip(members, split.outputs, strict=True):
            part.shape, part.type = node.outputs[0].shape, node.outputs[0].type
            node.outputs[0].replace_all_uses_with(part)
        for node, _ in members:
            weight = node.inputs[1]
            graph.remove(node, safe=True)
            graph.initializers.pop(weight.name, None)
        removed += len(members) - 1
    return removed
