"""What the graphs' calls of rxt-edge's kernels share: declaring a model-local function once, counting calls.

The functions themselves (their bodies, their calls) are in export/memory_kernel.py and export/matmul_kernel.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx
from onnx import helper
from rxt_edge.runtimes.native_kernels import DOMAIN
from rxt_edge.runtimes.operators import MS_DOMAIN


def declare(model: onnx.ModelProto, name: str, build: Callable[[int], onnx.FunctionProto]) -> None:
    """Put the function `name` into `model` once, built for the model's default opset (`build(opset)`), and the
    opset imports of our domain and onnxruntime's (its bodies use com.microsoft operators)."""
    if not any(f.domain == DOMAIN and f.name == name for f in model.functions):
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
        model.functions.append(build(opset))
    for domain in (DOMAIN, MS_DOMAIN):
        if not any(o.domain == domain for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(domain, 1))


def calls(model: onnx.ModelProto, names: Iterable[str]) -> int:
    """How many nodes of `model`'s graph call one of the functions `names` (what a kernel library would run)."""
    wanted = set(names)
    return sum(1 for n in model.graph.node if n.domain == DOMAIN and n.op_type in wanted)
