"""The int8 memory attention as one ONNX function, `rxt_edge.MemoryAttentionInt8`: our kernel where it is built,
onnxruntime's operators everywhere else.

A model-local function is a node with a body. onnxruntime runs a registered kernel for the node's (domain, op)
when a session has one (runtimes/native_kernels.py registers rxt-edge's library in CPU sessions) and inlines the
body otherwise, so one decoder graph serves both, and older packages (the seven nodes written out) keep working.
The body is the int8 form's path (export/quantize_memory_kv.py):

    query [B, T, h' * hd] -> Reshape [B, R, h, hd] -> Transpose [B, h, R, hd]     (R = T h' / h query rows)
    scores = DynamicQuantizeMatMul(query, key [B, h, hd, S], key_scale [S])      (query already scaled)
    probs = Softmax(scores)                                                      [B, h, R, S]
    heads = Transpose(DynamicQuantizeMatMul(probs, value [B, h, S, hd], value_scale [hd]))   [B, R, h, hd]

The kernel (runtimes/native/memory_attention.cc) computes the same attention from the same inputs, with finer
quantization of the query and the probabilities than DynamicQuantizeMatMul's 8 bits.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from rxt_edge.runtimes.native_kernels import DOMAIN
from rxt_edge.runtimes.operators import MS_DOMAIN

from . import kernel_functions

FUNCTION = "MemoryAttentionInt8"
INPUTS = ["query", "key", "key_scale", "value", "value_scale"]


def function_proto(heads: int, head_dim: int, opset: int) -> onnx.FunctionProto:
    """The function's body for K/V heads `heads` of `head_dim` (constants of the model, so one per model)."""
    shape = numpy_helper.from_array(np.array([0, -1, heads, head_dim], np.int64), "heads_shape")
    nodes = [
        helper.make_node("Constant", [], ["heads_shape"], value=shape),
        helper.make_node("Reshape", ["query", "heads_shape"], ["q4"]),
        helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),  # [B, h, R, hd]
        helper.make_node("DynamicQuantizeMatMul", ["qh", "key", "key_scale"], ["scores"], domain=MS_DOMAIN),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),  # [B, h, R, S]
        helper.make_node(
            "DynamicQuantizeMatMul", ["probs", "value", "value_scale"], ["oh"], domain=MS_DOMAIN
        ),
        helper.make_node("Transpose", ["oh"], ["heads"], perm=[0, 2, 1, 3]),  # [B, R, h, hd]
    ]
    imports = [helper.make_opsetid("", opset), helper.make_opsetid(MS_DOMAIN, 1)]
    return helper.make_function(DOMAIN, FUNCTION, INPUTS, ["heads"], nodes, imports)


def declare(model: onnx.ModelProto, heads: int, head_dim: int) -> None:
    """Put the function (once) and its domains' opset imports into `model`."""
    kernel_functions.declare(model, FUNCTION, lambda opset: function_proto(heads, head_dim, opset))


def call(
    query: str, key: str, key_scale: str, value: str, value_scale: str, heads: str, name: str
) -> onnx.NodeProto:
    """One layer's attention: the function's node."""
    return helper.make_node(
        FUNCTION, [query, key, key_scale, value, value_scale], [heads], domain=DOMAIN, name=name
    )


def uses_kernel(model: onnx.ModelProto) -> int:
    """How many nodes of `model`'s graph call the function (what a kernel library would run)."""
    return kernel_functions.calls(model, (FUNCTION,))
