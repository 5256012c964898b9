"""The 4-bit weight-only product as one ONNX function, `rxt_edge.MatMulInt4`: our kernel where it is built,
onnxruntime's MatMulNBits everywhere else.

The function's body is the very MatMulNBits node it replaces (4 bits, blocks of 32, accuracy level 4, no zero
points: the int4 scheme's products) with the bias Add that follows it, if any (onnxruntime fuses that Add into
MatMulNBits but cannot into a custom op), K and N passed as the call's attributes; so a package runs
unchanged wherever the library is missing (CUDA, other runtimes), and CPU sessions that registered
rxt-edge's library (runtimes/native_kernels.py) run runtimes/native/matmul_int4.cc at one activation row
(decode steps), which does the same arithmetic in about half the instructions on AVX2, and onnxruntime's own
MatMulNBits, invoked by the kernel, for prompts. See export/memory_kernel.py for the mechanism.
"""

from __future__ import annotations

import onnx
from onnx import helper
from rxt_edge.runtimes.native_kernels import DOMAIN
from rxt_edge.runtimes.operators import MS_DOMAIN

FUNCTION = "MatMulInt4"
ATTRIBUTES = {"bits": 4, "block_size": 32, "accuracy_level": 4}  # what the kernel computes, besides K and N


def function_proto() -> onnx.FunctionProto:
    """MatMulNBits(A, B, scales, bias) with the call's K and N (a call without a bias leaves it out)."""
    body = helper.make_node(
        "MatMulNBits", ["A", "B", "scales", "", "", "bias"], ["Y"], domain=MS_DOMAIN, **ATTRIBUTES
    )
    for name in ("K", "N"):
        ref = onnx.AttributeProto(name=name, ref_attr_name=name, type=onnx.AttributeProto.INT)
        body.attribute.append(ref)
    imports = [helper.make_opsetid(MS_DOMAIN, 1)]
    inputs = ["A", "B", "scales", "bias"]
    return helper.make_function(DOMAIN, FUNCTION, inputs, ["Y"], [body], imports, ["K", "N"])


def declare(model: onnx.ModelProto) -> None:
    """Put the function (once) and its domains' opset imports into `model`."""
    if not any(f.domain == DOMAIN and f.name == FUNCTION for f in model.functions):
        model.functions.append(function_proto())
    for domain in (DOMAIN, MS_DOMAIN):
        if not any(o.domain == domain for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(domain, 1))


def _float_initializer(model: onnx.ModelProto, name: str) -> bool:
    return any(t.name == name and t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)


def takes(node: onnx.NodeProto, model: onnx.ModelProto) -> bool:
    """Whether `node` is a product the kernel computes: MatMulNBits with the function's settings, K a multiple
    of 32, float scales, and only A, B and scales as inputs (no zero points, group index or bias)."""
    if node.op_type != "MatMulNBits" or node.domain != MS_DOMAIN or len(node.input) != 3:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if any(attrs.get(k) != v for k, v in ATTRIBUTES.items()) or set(attrs) != {*ATTRIBUTES, "K", "N"}:
        return False
    return attrs["K"] % 32 == 0 and _float_initializer(model, node.input[2])


def _bias_add(model: onnx.ModelProto, call: onnx.NodeProto, n: int) -> onnx.NodeProto | None:
    """The Add of a constant float [N] that is the only reader of `call`'s output, if there is one."""
    out = call.output[0]
    readers = [node for node in model.graph.node if out in node.input]
    if len(readers) != 1 or any(o.name == out for o in model.graph.output):
        return None
    (add,) = readers
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
        return None
    other = add.input[1] if add.input[0] == out else add.input[0]
    init = next((t for t in model.graph.initializer if t.name == other), None)
    if init is None or init.data_type != onnx.TensorProto.FLOAT or list(init.dims) != [n]:
        return None
    return add


def rewrite(model: onnx.ModelProto) -> int:
    """Turn every product the kernel computes into a call of the function (in place), taking in the bias Add
    that follows it (onnxruntime fuses that Add into MatMulNBits, never into a custom op); returns how many."""
    count, absorbed = 0, []
    for node in model.graph.node:
        if takes(node, model):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            node.op_type, node.domain = FUNCTION, DOMAIN
            del node.attribute[:]
            node.attribute.extend(
                [helper.make_attribute("K", attrs["K"]), helper.make_attribute("N", attrs["N"])]
            )
            add = _bias_add(model, node, attrs["N"])
            if add is not None:
                node.input.append(add.input[1] if add.input[0] == node.output[0] else add.input[0])
                node.output[0] = add.output[0]
                absorbed.append(add)
            count += 1
    for add in absorbed:
        model.graph.node.remove(add)
    if count:
        declare(model)
    return count


def uses_kernel(model: onnx.ModelProto) -> int:
    """How many nodes of `model`'s graph call the function (what a kernel library would run)."""
    return sum(1 for n in model.graph.node if n.domain == DOMAIN and n.op_type == FUNCTION)
