"""ONNX side of the routed experts (export/moe.py): the translation to `com.microsoft.MoE` and the layout fold.

The translation is traced by onnxscript while `torch.onnx.export` runs; it sees the expert weights as graph
values, so it writes their re-layout as ops (Reshape, Gather, Transpose) and `fold_expert_layouts` evaluates
those ops into new initializers afterwards: the saved graph holds each expert weight once, in the op's layout,
and onnxruntime has nothing to fold (or to hold twice) when it loads the graph.

The fold is lazy by default: each new initializer is an `ir.LazyTensor` computed from the (torch-owned) weight
when `program.save` writes it, one at a time. An eager fold would hold a second copy of every expert weight
(almost all of a Beta-sized model) until the save. Both folds give the same bytes (tests/test_beta_scale.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
from onnx.defs import OpSchema
from onnx_ir.passes.common import RemoveUnusedNodesPass
from onnxscript import opset18 as op
from onnxscript.optimizer import fold_constants
from onnxscript.optimizer._constant_folding import FOLDED_FROM_KEY
from onnxscript.values import Op, Opset
from rxt_edge.runtimes.operators import MS_DOMAIN

from .moe import _routed_experts_op, contrib_activation


def _moe_schema() -> OpSchema:
    """The part of onnxruntime's contrib `MoE` schema this module uses (onnx itself does not know the op, and
    onnxscript needs a schema to emit a call)."""
    optional = OpSchema.FormalParameterOption.Optional
    inputs = [
        ("input", None),
        ("router_probs", None),
        ("fc1_experts_weights", None),
        ("fc1_experts_bias", optional),
        ("fc2_experts_weights", None),
        ("fc2_experts_bias", optional),
    ]
    attrs = {
        "k": OpSchema.AttrType.INT,
        "activation_type": OpSchema.AttrType.STRING,
        "normalize_routing_weights": OpSchema.AttrType.INT,
        "swiglu_fusion": OpSchema.AttrType.INT,
        "activation_alpha": OpSchema.AttrType.FLOAT,
        "activation_beta": OpSchema.AttrType.FLOAT,
    }
    return OpSchema(
        "MoE",
        MS_DOMAIN,
        1,
        inputs=[
            OpSchema.FormalParameter(name, "T", param_option=option or OpSchema.FormalParameterOption.Single)
            for name, option in inputs
        ],
        outputs=[OpSchema.FormalParameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
        attributes=[OpSchema.Attribute(name, kind, "") for name, kind in attrs.items()],
    )


_MOE = Op(Opset(MS_DOMAIN, 1), "MoE", _moe_schema())


def _gate_first_rows(w, axis: int, perm: list[int], flat: list[int]):
    """[..., 2, H, ...] halves (linear, gate) at `axis` -> gate and linear rows interleaved (g0, l0, g1, ...)."""
    swapped = op.Gather(w, op.Constant(value_ints=[1, 0]), axis=axis)
    return op.Reshape(op.Transpose(swapped, perm=perm), op.Constant(value_ints=flat))


def _routed_experts_moe(
    x, logits, w1, b1, w2, b2, top_k: int, activation: str, gated: bool, normalize: bool = True
):
    """x [N, D], logits [N, E], w1 [E, D, H'], w2 [E, H, D] -> com.microsoft.MoE (fc1 [E, H', D], fc2 [E, D, H]).

    normalize_routing_weights=0 keeps the top-k softmax probabilities as they are (shared experts, k = E)."""
    act = contrib_activation(activation, gated)
    if act is None:  # routed_experts only emits the op for activations the contrib op has
        raise ValueError(f"the contrib MoE op cannot compute {'gated ' if gated else ''}{activation} experts")
    attrs = {"k": top_k, "activation_type": act, "normalize_routing_weights": int(normalize)}
    if gated:
        # [E, D, 2H] -> [E, D, 2, H] -> gate half first -> [E, H, 2, D] -> [E, 2H, D]: row 2i gate, 2i+1 linear
        halves = op.Reshape(w1, op.Constant(value_ints=[0, 0, 2, -1]))
        fc1 = _gate_first_rows(halves, 2, [0, 3, 2, 1], [0, -1, w1.shape[1]])
        if b1 is not None:
            b1 = _gate_first_rows(op.Reshape(b1, op.Constant(value_ints=[0, 2, -1])), 1, [0, 2, 1], [0, -1])
        attrs.update(swiglu_fusion=1, activation_alpha=1.0, activation_beta=0.0)
    else:
        fc1 = op.Transpose(w1, perm=[0, 2, 1])
    fc2 = op.Transpose(w2, perm=[0, 2, 1])
    return _MOE(x, logits, fc1, b1, fc2, b2, **attrs)


def translation_table() -> dict:
    return {_routed_experts_op._opoverload: _routed_experts_moe}


def _layout_nodes(model: ir.Model) -> set[ir.Node]:
    """Every node computing a weight input of a contrib MoE node from constants."""
    found: set[ir.Node] = set()
    for node in model.graph:
        if node.domain != MS_DOMAIN or node.op_type != "MoE":
            continue
        stack = [v for v in node.inputs[2:] if v is not None]
        while stack:
            producer = stack.pop().producer()
            if producer is not None and producer not in found:
                found.add(producer)
                stack.extend(v for v in producer.inputs if v is not None)
    return found


def fold_expert_layouts(model: ir.Model, lazy: bool = True) -> int:
    """Fold the weight re-layout ops feeding every contrib MoE node into initializers (see the module
    docstring); returns how many nodes were folded. Nothing else in the graph is touched.
    `lazy`: the new initializers are computed when saved (no second copy of the experts in memory)."""
    targets = _layout_nodes(model)
    if not targets:
        return 0
    if any(
        v.const_value is None for n in targets for v in n.inputs if v is not None and v.producer() is None
    ):
        raise ValueError("an expert weight of a MoE node is not a constant")
    before = len(list(model.graph))
    if lazy and all(_lazy_foldable(n) for n in targets):
        _fold_lazily(model, targets)
    else:
        fold_constants(model, should_fold=lambda node: node in targets)
    RemoveUnusedNodesPass()(model)
    for name in [n for n, v in model.graph.initializers.items() if not v.uses() and not v.is_graph_output()]:
        model.graph.initializers.pop(name)
    if MS_DOMAIN not in model.opset_imports:
        model.opset_imports[MS_DOMAIN] = 1
    left = _layout_nodes(model)
    if left:
        raise ValueError(f"could not fold the expert weight layout ops {sorted(n.op_type for n in left)}")
    return before - len(list(model.graph))


def _reshape(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return x.reshape(_reshaped(x.shape, shape))


def _reshaped(dims: tuple[int, ...], shape: np.ndarray) -> tuple[int, ...]:
    """ONNX Reshape's output shape (allowzero=0: a 0 keeps the input's dim, one -1 takes the rest)."""
    out = [dims[i] if d == 0 else int(d) for i, d in enumerate(shape.tolist())]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(dims) // known if known else 0
    return tuple(out)


# The ops `_routed_experts_moe` writes to re-lay expert weights (fed by Constant nodes): numpy for the values,
# and the output shapes without data.
_LAYOUT_OPS: dict[str, tuple[Callable, Callable]] = {
    "Reshape": (
        lambda x, s, a: _reshape(x, s),
        lambda dims, s, a: _reshaped(dims, s),
    ),
    "Gather": (
        lambda x, i, a: np.take(x, i, axis=a.get("axis", 0)),
        lambda dims, i, a: (
            dims[: a.get("axis", 0) % len(dims)] + i.shape + dims[a.get("axis", 0) % len(dims) + 1 :]
        ),
    ),
    "Transpose": (
        lambda x, a: np.transpose(x, a["perm"]),
        lambda dims, a: tuple(dims[p] for p in a["perm"]),
    ),
}


def _lazy_foldable(node: ir.Node) -> bool:
    """A node `_fold_lazily` computes exactly as onnx does (anything else goes to the eager fold)."""
    if node.domain != "" or (node.op_type != "Constant" and node.op_type not in _LAYOUT_OPS):
        return False
    allowzero = node.attributes.get("allowzero")
    return allowzero is None or allowzero.value == 0


def _fold_lazily(model: ir.Model, targets: set[ir.Node]) -> None:
    """What `fold_constants(should_fold=targets)` does to these nodes (each output becomes an initializer of
    the same name, with the same `folded_from` record, in graph order), but each value is a LazyTensor: the
    expert weights are re-laid out one at a time when the graph is saved."""
    graph = model.graph
    for node in [n for n in graph if n in targets and n.op_type != "Constant"]:
        evaluate, infer = _LAYOUT_OPS[node.op_type]
        attrs = {k: a.value for k, a in node.attributes.items()}
        data, *small = [ir.convenience.get_const_tensor(v) for v in node.inputs]
        if data is None or any(t is None for t in small):
            raise ValueError(f"an input of the expert layout node {node.name} is not a constant")
        small = [t.numpy() for t in small]  # shapes, indices: a few integers
        out = node.outputs[0]
        shape = infer(tuple(data.shape.numpy()), *small, attrs)

        def compute(data=data, small=small, attrs=attrs, evaluate=evaluate) -> ir.Tensor:
            return ir.tensor(np.ascontiguousarray(evaluate(data.numpy(), *small, attrs)))

        folded = ir.Value(
            name=out.name,
            type=ir.TensorType(data.dtype),
            shape=ir.Shape(shape),
            const_value=ir.LazyTensor(compute, data.dtype, ir.Shape(shape), name=out.name),
        )
        origin: set[str] = set()
        for v in node.inputs:
            if v is not None:
                origin |= v.meta.get(FOLDED_FROM_KEY, set()) | {v.name}
        folded.meta[FOLDED_FROM_KEY] = origin
        folded.metadata_props[FOLDED_FROM_KEY] = repr(sorted(origin))
        graph.register_initializer(folded)
        inputs = [v for v in node.inputs if v is not None]
        ir.convenience.replace_nodes_and_values(graph, node, [node], [], node.outputs, [folded])
        for v in inputs:  # an input nothing reads any more goes, as in fold_constants
            if v.is_initializer() and not v.uses() and not v.is_graph_output():
                graph.initializers.pop(v.name)
