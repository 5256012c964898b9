"""The 4-bit weight-only product as an ONNX function, `rxt_edge.MatMulInt4` (and `MatMulInt4Bias`, the product
with the bias Add that followed it): our kernel where it is built, onnxruntime's own operators everywhere else.

Each function's body is exactly the nodes it replaces: MatMulNBits (4 bits, blocks of 32, accuracy level 4, no
zero points: the int4 scheme's products), then for MatMulInt4Bias the Add of the bias, with K and N passed as
the call's attributes. So a package runs unchanged wherever the library is missing (CUDA, other runtimes: the
same graph as before, onnxruntime fusing the Add where its kernels can), and CPU sessions that registered
rxt-edge's library (runtimes/native_kernels.py) run runtimes/native/matmul_int4.cc, which does the same
arithmetic in about half the AVX2 instructions and adds the bias itself (onnxruntime cannot fuse an Add into a
custom op: left outside, the Adds cost half the kernel's gain). See export/memory_kernel.py for the mechanism.
"""

from __future__ import annotations

import onnx
from onnx import helper
from rxt_edge.runtimes.native_kernels import DOMAIN
from rxt_edge.runtimes.operators import MS_DOMAIN

from . import kernel_functions

FUNCTION, FUNCTION_BIAS = "MatMulInt4", "MatMulInt4Bias"
FUNCTIONS = (FUNCTION, FUNCTION_BIAS)
ATTRIBUTES = {"bits": 4, "block_size": 32, "accuracy_level": 4}  # what the kernel computes, besides K and N


def function_proto(name: str = FUNCTION, opset: int = 18) -> onnx.FunctionProto:
    """MatMulNBits(A, B, scales) with the call's K and N; for FUNCTION_BIAS, then + bias (`opset`: the model's)."""
    with_bias = name == FUNCTION_BIAS
    product = "P" if with_bias else "Y"
    nodes = [helper.make_node("MatMulNBits", ["A", "B", "scales"], [product], domain=MS_DOMAIN, **ATTRIBUTES)]
    for attr in ("K", "N"):
        ref = onnx.AttributeProto(name=attr, ref_attr_name=attr, type=onnx.AttributeProto.INT)
        nodes[0].attribute.append(ref)
    if with_bias:
        nodes.append(helper.make_node("Add", [product, "bias"], ["Y"]))
    imports = [helper.make_opsetid(MS_DOMAIN, 1), helper.make_opsetid("", opset)]
    inputs = ["A", "B", "scales"] + (["bias"] if with_bias else [])
    return helper.make_function(DOMAIN, name, inputs, ["Y"], nodes, imports, ["K", "N"])


def declare(model: onnx.ModelProto, names: tuple[str, ...] = FUNCTIONS) -> None:
    """Put the functions `names` (once each) and their domains' opset imports into `model`."""
    for name in names:
        kernel_functions.declare(model, name, lambda opset, name=name: function_proto(name, opset))


def takes(node: onnx.NodeProto, model: onnx.ModelProto, inits: dict | None = None) -> bool:
    """Whether `node` is a product the kernel computes: MatMulNBits with the function's settings, K a multiple
    of 32, float scales, and only A, B and scales as inputs (no zero points, group index or bias). `inits`: the
    model's initializers by name, where the caller has them."""
    if node.op_type != "MatMulNBits" or node.domain != MS_DOMAIN or len(node.input) != 3:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if any(attrs.get(k) != v for k, v in ATTRIBUTES.items()) or set(attrs) != {*ATTRIBUTES, "K", "N"}:
        return False
    inits = _initializers(model) if inits is None else inits
    scales = inits.get(node.input[2])
    return attrs["K"] % 32 == 0 and scales is not None and scales.data_type == onnx.TensorProto.FLOAT


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _bias_add(
    call: onnx.NodeProto, n: int, readers: dict, inits: dict, outputs: set
) -> onnx.NodeProto | None:
    """The Add of a constant float [N] that is the only reader of `call`'s output, if there is one."""
    out = call.output[0]
    if len(readers.get(out, ())) != 1 or out in outputs:
        return None
    (add,) = readers[out]
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
        return None
    bias = inits.get(add.input[1] if add.input[0] == out else add.input[0])
    if bias is None or bias.data_type != onnx.TensorProto.FLOAT or list(bias.dims) != [n]:
        return None
    return add


def rewrite(model: onnx.ModelProto) -> int:
    """Turn every product the kernel computes into a call of MatMulInt4, or of MatMulInt4Bias taking in the bias
    Add that follows it (in place); returns how many."""
    g, inits = model.graph, _initializers(model)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in set(node.input):
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in g.output}
    count, absorbed, used = 0, [], set()
    for node in g.node:
        if not takes(node, model, inits):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        node.op_type, node.domain = FUNCTION, DOMAIN
        del node.attribute[:]
        node.attribute.extend(
            [helper.make_attribute("K", attrs["K"]), helper.make_attribute("N", attrs["N"])]
        )
        add = _bias_add(node, attrs["N"], readers, inits, outputs)
        if add is not None:
            node.op_type = FUNCTION_BIAS
            node.input.append(add.input[1] if add.input[0] == node.output[0] else add.input[0])
            node.output[0] = add.output[0]
            absorbed.append(add)
        used.add(node.op_type)
        count += 1
    for add in absorbed:
        g.node.remove(add)
    if used:
        declare(model, tuple(sorted(used)))
    return count


def uses_kernel(model: onnx.ModelProto) -> int:
    """How many nodes of `model`'s graph call one of the functions (what a kernel library would run)."""
    return kernel_functions.calls(model, FUNCTIONS)
