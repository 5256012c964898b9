"""Rotary cos/sin tables as initializers in float16 graphs.

The exported decoder computes its RoPE tables as `Cos(angles)` and `Sin(angles)` of a constant `angles`
initializer ([max_seq_len, head_dim / 2]); onnxruntime folds such nodes at load time by running them on the
CPU. In a float16 graph it cannot (the CPU provider has no float16 Sin/Cos), so on CUDA both ran on every decode
step: two kernels a token for a table that never changes. `fold_trig_tables` computes them once, in float64
rounded to the graph's type, and stores them as initializers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .quantize_memory_kv import _drop_unused

_FUNCS = {"Sin": np.sin, "Cos": np.cos}


def fold_trig_tables(model: onnx.ModelProto) -> int:
    """Replace every Sin/Cos of an initializer by the initializer of its values; returns how many."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep, sources = [], set()
    for node in graph.node:
        src = inits.get(node.input[0]) if node.op_type in _FUNCS and node.domain in ("", "ai.onnx") else None
        if src is None or node.output[0] in outputs:
            keep.append(node)
            continue
        x = numpy_helper.to_array(src)
        table = _FUNCS[node.op_type](x.astype(np.float64)).astype(x.dtype)
        graph.initializer.append(numpy_helper.from_array(table, node.output[0]))
        sources.add(src.name)
    folded = len(graph.node) - len(keep)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        _drop_unused(model, sources)  # the angles, where nothing else reads them
    return folded
