"""ONNX side of the routed experts (export/moe.py): the translation to `com.microsoft.MoE` and the layout fold.

The translation is traced by onnxscript while `torch.onnx.export` runs; it sees the expert weights as graph
values, so it writes their re-layout as ops (Reshape, Gather, Transpose) and `fold_expert_layouts` evaluates
those ops into new initializers afterwards: the saved graph holds each expert weight once, in the op's layout,
and onnxruntime has nothing to fold (or to hold twice) when it loads the graph.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx.defs import OpSchema
from onnx_ir.passes.common import RemoveUnusedNodesPass
from onnxscript import opset18 as op
from onnxscript.optimizer import fold_constants
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


def fold_expert_layouts(model: ir.Model) -> int:
    """Fold the weight re-layout ops feeding every contrib MoE node into initializers (see the module
    docstring); returns how many nodes were folded. Nothing else in the graph is touched."""
    targets = _layout_nodes(model)
    if not targets:
        return 0
    if any(
        v.const_value is None for n in targets for v in n.inputs if v is not None and v.producer() is None
    ):
        raise ValueError("an expert weight of a MoE node is not a constant")
    before = len(list(model.graph))
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
