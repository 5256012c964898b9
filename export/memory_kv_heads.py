"""The memory cross-attention K/V repeated per query head ("expanded"): the form `rxt-edge quantize --scheme fp16`
writes for GPUs.

Grouped memory attention (Hq query heads in groups of G = Hq / Hkv over Hkv K/V heads) is one
`com.microsoft.MultiHeadAttention` per memory layer with the G query heads of a group folded into the query
sequence (export/memory_attention.py, graph_fusions.fold_memory_head_groups): exact, and on the CPU it reads
each K/V byte once. On CUDA that shape (G query rows a head) sends onnxruntime 1.31 to cuDNN's 64-row prefill
kernel, a few thread blocks for the whole GPU; one query row a head gets its split-KV decode kernel instead.
Measured on an H200 (bench/cross_attention_cuda.py, fp16, one step's attention): 11.9 -> 4.9 us at alpha-mini's
8 heads over 1024 slots, 37.7 -> 6.8 us over RxT-Beta's 4096. So for GPU packages the K/V are repeated for the
query heads once per turn, in the graphs that write them, and a token reads twice the K/V bytes (nothing, on
a GPU's bandwidth).

Rewrites (float graphs, before the fp16 conversion):
- memory_kv / memory_update: each K/V output [B, Hkv, S, hd] becomes Reshape [B, Hkv, 1, S, hd], Expand by G,
  Reshape [B, Hq, S, hd]: head h reads K/V head h // G, the usual grouped-query order;
- decoder: each fused memory attention takes Hq heads and the query as projected; the query projection's
  columns and the output projection's rows go back from the fold's (g, kv) order to head order, and the
  Reshapes either side of the node go.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from rxt_edge.runtimes.operators import MS_DOMAIN

from rxt_edge import contract

from .quantize_memory_kv import (
    MemoryKVError,
    _attribute,
    _drop_unused,
    _Index,
    _ints,
    _memory_attention_nodes,
    _plain_reshape,
    for_graph,
    redeclare_io,
    rename_memory_outputs,
)
from .quantize_memory_kv import rewrite as int8_rewrite

FORM = "expanded"


@dataclass
class _Layer:
    mha: onnx.NodeProto
    inner: onnx.NodeProto  # Reshape [B, T, Hq*hd] -> [B, T*G, Hkv*hd] (the fold)
    outer: onnx.NodeProto  # Reshape back
    q_weight: str  # the query projection's weight [D, Hq*hd], columns in (g, kv, d) order
    o_weight: str  # the output projection's weight [Hq*hd, D], rows likewise
    groups: int


def _weight(index: _Index, node: onnx.NodeProto | None) -> str | None:
    """The float initializer a default-domain MatMul multiplies by (input 1), read by nothing else."""
    if node is None or node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
        return None
    name = node.input[1]
    t = index.inits.get(name)
    if t is None or t.data_type != onnx.TensorProto.FLOAT or len(index.readers.get(name, [])) != 1:
        return None
    return name


def _layer(index: _Index, mha: onnx.NodeProto, dims: contract.ModelDims) -> _Layer | str:
    """The parts of one folded memory attention, or why it is not one."""
    if _attribute(mha, "num_heads") != dims.cross_kv_heads:
        return "its attention node does not have one head per K/V head"
    inner = index.producer.get(mha.input[0])
    outer = index.only_reader(mha.output[0])
    if not (_plain_reshape(inner) and index.only_reader(mha.input[0]) is mha and _plain_reshape(outer)):
        return "its attention node is not between the fold's two Reshapes"
    rotated = inner.input[0]
    node = index.producer.get(rotated)
    if node is not None and node.op_type == "RotaryEmbedding" and node.domain == MS_DOMAIN:
        node = index.producer.get(node.input[0]) if index.only_reader(node.input[0]) is node else None
    q_weight, o_weight = _weight(index, node), _weight(index, index.only_reader(outer.output[0]))
    if q_weight is None or o_weight is None:
        return "its query or output projection is not a MatMul by a weight of its own"
    width = index.inits[q_weight].dims[1]
    group = dims.cross_kv_heads * dims.head_dim
    if width % group or index.inits[o_weight].dims[0] != width:
        return f"its projections' width {width} is not a whole number of head groups ({group})"
    return _Layer(mha, inner, outer, q_weight, o_weight, width // group)


def _plan(model: onnx.ModelProto, dims: contract.ModelDims) -> list[_Layer] | str:
    nodes = _memory_attention_nodes(model, dims.memory_layers)
    if len(nodes) != dims.memory_layers:
        return "the decoder's memory attention is not one fused node per memory layer (static-cache export)"
    index = _Index(model.graph)
    layers = []
    for i in range(dims.memory_layers):
        layer = _layer(index, nodes[i], dims)
        if isinstance(layer, str):
            return f"memory layer {i}: {layer}"
        layers.append(layer)
    if len({x.groups for x in layers}) != 1:
        return "the memory layers differ in query heads"
    return layers


def query_heads(decoder: onnx.ModelProto, dims: contract.ModelDims) -> int | None:
    """Hq where `decoder` can take the expanded form with more query than K/V heads (else None)."""
    plan = _plan(decoder, dims)
    if isinstance(plan, str) or plan[0].groups < 2:
        return None
    return plan[0].groups * dims.cross_kv_heads


def form_dims(form: str, decoder: Path, dims: contract.ModelDims) -> contract.ModelDims:
    """The dims a package whose memory K/V take `form` declares: the expanded form records the query heads
    (read from the `decoder` file's graph, weights left on disk)."""
    if form != FORM:
        return dims
    heads = query_heads(onnx.load(str(decoder), load_external_data=False), dims)
    return replace(dims, cross_query_heads=heads)


def _head_order(kv_heads: int, groups: int, head_dim: int) -> np.ndarray:
    """Index into the fold's (g, kv, d) order for each position of head order (kv, g, d)."""
    fold = np.arange(kv_heads * groups * head_dim).reshape(kv_heads, groups, head_dim).transpose(1, 0, 2)
    return np.argsort(fold.reshape(-1))


def read_expanded_memory(model: onnx.ModelProto, dims: contract.ModelDims, kv_cache: str) -> int:
    """decoder: each memory attention over Hq heads of repeated K/V, projections in head order; returns layers."""
    plan = _plan(model, dims)
    if isinstance(plan, str):
        raise MemoryKVError(f"memory_kv expanded: {plan}")
    g, index = model.graph, _Index(model.graph)
    order = _head_order(dims.cross_kv_heads, plan[0].groups, dims.head_dim)
    dropped = set()
    for layer in plan:
        for name, axis in ((layer.q_weight, 1), (layer.o_weight, 0)):
            w = np.take(numpy_helper.to_array(index.inits[name]), order, axis=axis)
            index.inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w), name))
        layer.mha.input[0] = layer.inner.input[0]
        layer.mha.output[0] = layer.outer.output[0]
        for a in layer.mha.attribute:
            if a.name == "num_heads":
                a.i = dims.cross_kv_heads * layer.groups
        dropped.update(layer.inner.input[1:], layer.outer.input[1:])
    gone = {id(x) for layer in plan for x in (layer.inner, layer.outer)}
    kept = [n for n in g.node if id(n) not in gone]
    del g.node[:]
    g.node.extend(kept)
    _drop_unused(model, dropped)
    redeclare_io(model, dims, contract.DECODER, kv_cache, outputs=False, form=FORM)
    return len(plan)


def expand_memory_outputs(model: onnx.ModelProto, graph: str, dims: contract.ModelDims) -> int:
    """memory_kv / memory_update: each K/V output repeated for the query heads of its group; returns layers."""
    hkv, hq, s, hd = dims.cross_kv_heads, dims.cross_query_heads, dims.stm_slots, dims.head_dim
    if hq < hkv or hq % hkv:
        raise MemoryKVError(f"memory_kv expanded: {hq} query heads are not groups of the {hkv} K/V heads")
    g, renamed = model.graph, rename_memory_outputs(model, graph, dims, "grouped")
    p = "memory_kv/expanded"
    g.initializer.extend(
        [
            _ints(f"{p}/grouped", [0, hkv, 1, s, hd]),
            _ints(f"{p}/repeat", [1, 1, hq // hkv, 1, 1]),
            _ints(f"{p}/heads", [0, hq, s, hd]),
        ]
    )
    for name, source in renamed.items():
        g.node.extend(
            [
                helper.make_node("Reshape", [source, f"{p}/grouped"], [f"{name}/5d"]),
                helper.make_node("Expand", [f"{name}/5d", f"{p}/repeat"], [f"{name}/repeated"]),
                helper.make_node("Reshape", [f"{name}/repeated", f"{p}/heads"], [name]),
            ]
        )
    redeclare_io(model, dims, graph, "dynamic", outputs=True, form=FORM)
    return dims.memory_layers


def rewrite(model: onnx.ModelProto, graph: str, dims: contract.ModelDims, kv_cache: str = "dynamic") -> int:
    """The expanded memory K/V form for one graph (none for the encoder); returns the memory layers rewritten."""
    return for_graph(model, graph, dims, kv_cache, read_expanded_memory, expand_memory_outputs)


def rewrite_form(
    form: str, model: onnx.ModelProto, graph: str, dims: contract.ModelDims, kv_cache: str
) -> int:
    """One graph rewritten for the memory K/V `form`: "expanded" here, "int8" by export/quantize_memory_kv.py."""
    return (rewrite if form == FORM else int8_rewrite)(model, graph, dims, kv_cache)


def collapsed(outputs: list[np.ndarray], groups: int) -> list[np.ndarray]:
    """The `[B, Hkv, S, hd]` K/V that expanded outputs `[B, Hq, S, hd]` repeat (for comparisons: `verify`)."""
    return [x[:, ::groups] for x in outputs]
