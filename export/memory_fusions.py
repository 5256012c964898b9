"""Clean-up of the per-turn graphs (encoder, memory update, memory K/V) after the shared fusions.

These graphs run once per turn, off the answer's path, and on CUDA their cost is kernel launches, not
arithmetic. Their attentions are already single `MultiHeadAttention` nodes (export/turn_attention.py, lowered
by the exporter) with the grouped-head re-layout folded into the weights (graph_fusions.fold_memory_head_groups),
and their residual norms `SkipSimplifiedLayerNormalization` (graph_fusions.fuse_skip_rms_norm). What the
rewrites leave behind is bookkeeping that this pass removes:

- per-layer reads of the stacked new STM (`new_stm[i]`, for the next turn's K/V): the layer's own value, so
  its norm fuses with the gate's final Add into `SkipSimplifiedLayerNormalization` like the others;
- repeated subexpressions: the RoPE fusion builds its cos/sin caches per rotated tensor (two Slices and two
  Reshapes each, identical across layers) and every attention casts the same padding mask: computed once;
- `Constant` nodes: lifted to initializers (onnxruntime folds them at load, but they are graph nodes to
  every other tool and to the node counts we track);
- Reshape chains: `Reshape(Reshape(x, a), b)` is x where the result has x's shape (the view of a projection
  into heads and back to [B, T, H * hd] that the fused ops leave), else `Reshape(x, b)` where b is a
  constant without 0 entries (a 0 copies a dim of the middle shape).

Plain RMS norms (no residual) stay as they are: onnxruntime fuses them into `SimplifiedLayerNormalization` at
load on every execution provider, and that op, in the default domain, is unknown to `onnx.checker`.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import CommonSubexpressionEliminationPass, LiftConstantsToInitializersPass

from rxt_edge import contract

from .graph_fusions import fuse_skip_rms_norm

TURN_GRAPHS = (contract.ENCODER, contract.MEMORY_UPDATE, contract.MEMORY_KV)


def _known(shape: ir.Shape | None) -> bool:
    """Every dim an int or a named symbol (the exporter's `batch`, `seq`): comparable across values."""
    return shape is not None and all(isinstance(d, int) or d.value is not None for d in shape)


def _same_shape(a: ir.Value | None, b: ir.Value) -> bool:
    return a is not None and _known(a.shape) and _known(b.shape) and list(a.shape) == list(b.shape)


def _collapse_reshapes(graph: ir.Graph) -> int:
    """A Reshape to the shape its input has -> its input; `Reshape(Reshape(x, a), b)` (the inner result read
    only there) -> x where the result has x's shape (a view into heads and back), else -> `Reshape(x, b)` where
    b is a constant free of 0 (copy a dim) entries. Returns how many Reshapes were removed."""
    for node in graph:  # the RoPE fusion leaves its outputs' shapes unset: the op keeps its input's shape
        if node.op_type == "RotaryEmbedding" and node.outputs[0].shape is None and node.inputs[0] is not None:
            node.outputs[0].shape = node.inputs[0].shape
    removed = 0
    for node in list(graph):
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or node.graph is None:
            continue
        middle, result = node.inputs[0], node.outputs[0]
        if _same_shape(middle, result) and not result.is_graph_output():  # a Reshape to the shape it has
            result.replace_all_uses_with(middle)
            graph.remove(node, safe=True)
            removed += 1
            continue
        inner = middle.producer() if middle is not None else None
        if (
            inner is None
            or inner.op_type != "Reshape"
            or inner.domain not in ("", "ai.onnx")
            or len(middle.uses()) != 1
            or middle.is_graph_output()
        ):
            continue
        source = inner.inputs[0]
        if _same_shape(source, result):
            if result.is_graph_output():
                continue  # a graph output keeps its producer (its name is part of the contract)
            result.replace_all_uses_with(source)
            graph.remove([node, inner], safe=True)
            removed += 2
            continue
        shape = node.inputs[1].const_value if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if shape is None or 0 in shape.numpy().tolist():
            continue
        node.replace_input_with(0, source)
        graph.remove(inner, safe=True)
        removed += 1
    return removed


def _int_scalar(value: ir.Value | None) -> int | None:
    array = value.const_value.numpy() if value is not None and value.const_value is not None else None
    return int(array) if array is not None and array.ndim == 0 else None


def _unstack_reads(graph: ir.Graph) -> int:
    """`Gather(Concat(Unsqueeze(x_0, 0), ..., axis=0), i, axis=0)` -> x_i: the memory update reads its new STM
    (stacked for the `new_stm` output) back per layer for the next turn's K/V. Reading the layer itself drops a
    copy and lets that layer's norm join the gate's final Add (`fuse_skip_rms_norm`). Returns how many."""
    done = 0
    for node in list(graph):
        if (
            node.op_type != "Gather"
            or node.domain not in ("", "ai.onnx")
            or node.attributes.get_int("axis", 0)
        ):
            continue
        stack, index = node.inputs[0].producer(), _int_scalar(node.inputs[1])
        if stack is None or stack.op_type != "Concat" or stack.attributes.get_int("axis", -1) != 0:
            continue
        if index is None or not -len(stack.inputs) <= index < len(stack.inputs):
            continue
        part = stack.inputs[index].producer()
        axes = part.inputs[1] if part is not None and part.op_type == "Unsqueeze" else None
        if axes is None or axes.const_value is None or axes.const_value.numpy().tolist() != [0]:
            continue
        if node.outputs[0].is_graph_output():
            continue
        node.outputs[0].replace_all_uses_with(part.inputs[0])
        graph.remove(node, safe=True)
        done += 1
    return done


def fuse_turn_graph(model: ir.Model, graph: str) -> None:
    """The clean-up above, on `graph` if it is one of the per-turn graphs (the decoder is left alone)."""
    if graph not in TURN_GRAPHS:
        return
    if _unstack_reads(model.graph):
        fuse_skip_rms_norm(model)  # the norms now reading a gate's sum
    CommonSubexpressionEliminationPass()(model)
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    _collapse_reshapes(model.graph)
