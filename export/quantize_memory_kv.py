"""The memory cross-attention K/V in int8: what `rxt-edge quantize` does to the three graphs that carry them.

Every generated token reads, in each memory layer, that layer's STM keys and values: at alpha-mini 8 MB of fp32
a token, about as much as the int4 weights, and what kept our CPU decode behind a same-dims Llama (docs/
benchmarks.md). Quantized once per turn and read by onnxruntime's `DynamicQuantizeMatMul` (an int8 GEMM with
the query, or the attention probabilities, quantized on the fly), a token reads a quarter of those bytes.

The form (`contract.MEMORY_KVS` "int8"): keys `[B, Hkv, hd, S]` (transposed, so the score product is a plain
MatMul) with one float32 scale per slot, values `[B, Hkv, S, hd]` with one per channel, symmetric (zero point 0);
a scale is shared by the heads (and the batch) because `DynamicQuantizeMatMul` takes a scalar or one scale per
column of B. Values span [-63, 63] (7 bits in int8, onnxruntime's "reduce range"): on x86 without VNNI the
uint8 x int8 kernel adds pairs of products in int16, which saturates once 255 x 127 x 2 > 32767; with the full
[-127, 127] range the trained demo misspelt recalled values (held-out recall 90-98%, 100% with 7 bits).
Rewrites:
- memory_kv / memory_update: each float K/V output is quantized in the graph (absolute max per slot / per
  channel, `QuantizeLinear` along that axis), the scales become outputs beside the tensors;
- decoder: each fused memory attention (`com.microsoft.MultiHeadAttention` over `memory_key.i` /
  `memory_value.i`, see export/memory_attention.py) becomes one `rxt_edge.MemoryAttentionInt8` node and a Reshape
  (export/memory_kernel.py): our CPU kernel where a session registered it, else the function's body, scaled
  scores = DQMatMul(q, K), Softmax, DQMatMul(p, V) with the query/output head layout the MHA node had. The
  exporter's Reshapes around the MHA node merge into the path's own, and the softmax scale goes into the query
  projection's weights (`read_int8_memory`); the K/V inputs and their scales keep their meaning.
Only the static-cache decoder has the fused node; `available` says whether a decoder can take the form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rxt_edge.runtimes.operators import MS_DOMAIN

from rxt_edge import contract

from . import memory_kernel

FORM = "int8"
# |quantized value| <= 63: no int16 saturation in onnxruntime's AVX2 uint8 x int8 products (module docstring)
LEVELS = 63.0
_MEMORY_GRAPHS = (contract.MEMORY_KV, contract.MEMORY_UPDATE)


class MemoryKVError(ValueError):
    """The graph cannot take the int8 memory K/V form; the message says why."""


def _memory_attention_nodes(model: onnx.ModelProto, layers: int) -> dict[int, onnx.NodeProto]:
    keys = {contract.memory_key(i): i for i in range(layers)}
    found = {}
    for node in model.graph.node:
        if node.op_type == "MultiHeadAttention" and node.domain == MS_DOMAIN and len(node.input) >= 3:
            i = keys.get(node.input[1])
            if i is not None and node.input[2] == contract.memory_value(i):
                found[i] = node
    return found


def available(decoder: onnx.ModelProto, dims: contract.ModelDims) -> bool:
    """Whether every memory layer of `decoder` reads its K/V through one fused attention node (and nothing else
    reads them), which is what the rewrite replaces."""
    nodes = _memory_attention_nodes(decoder, dims.memory_layers)
    if len(nodes) != dims.memory_layers:
        return False
    names = {contract.memory_key(i) for i in range(dims.memory_layers)}
    names |= {contract.memory_value(i) for i in range(dims.memory_layers)}
    readers = [n for n in decoder.graph.node for x in n.input if x in names]
    return len(readers) == 2 * dims.memory_layers


def _ints(name: str, values: list[int]) -> TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _reduce_max(
    model: onnx.ModelProto, x: str, axes: list[int], out: str, prefix: str
) -> list[onnx.NodeProto]:
    if _opset(model) >= 18:  # axes became an input in opset 18
        model.graph.initializer.append(_ints(f"{prefix}/axes", axes))
        return [helper.make_node("ReduceMax", [x, f"{prefix}/axes"], [out], keepdims=0)]
    return [helper.make_node("ReduceMax", [x], [out], axes=axes, keepdims=0)]


def _quantizer(model, source: str, tensor: str, scale: str, axis: int, size: int, transpose: bool):
    """Nodes: symmetric int8 of `source` [B, H, S, hd] along `axis` (one scale per index), -> `tensor`, `scale`."""
    p = f"{tensor}/int8"
    others = [a for a in range(4) if a != axis]
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(size, np.int8), f"{p}/zero"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(LEVELS, np.float32), f"{p}/levels"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(1e-30, np.float32), f"{p}/tiny"))
    quantized = f"{p}/q" if transpose else tensor
    nodes = [helper.make_node("Abs", [source], [f"{p}/abs"])]
    nodes += _reduce_max(model, f"{p}/abs", others, f"{p}/max", p)
    nodes += [
        helper.make_node("Max", [f"{p}/max", f"{p}/tiny"], [f"{p}/max1"]),  # an all-zero slot: scale > 0
        helper.make_node("Div", [f"{p}/max1", f"{p}/levels"], [scale]),
        helper.make_node("QuantizeLinear", [source, scale, f"{p}/zero"], [quantized], axis=axis),
    ]
    if transpose:  # [B, H, S, hd] -> [B, H, hd, S]
        nodes.append(helper.make_node("Transpose", [quantized], [tensor], perm=[0, 1, 3, 2]))
    return nodes


def _redeclare(
    values, dims: contract.ModelDims, graph: str, kv_cache: str, outputs: bool, form: str = FORM
) -> list:
    """The graph's inputs (or outputs) in contract order, the memory K/V (and any scales) declared in `form`,
    every other one as the graph had it."""
    ins, outs = contract.graph_io(dims, graph, "float32", kv_cache, form)
    memory = {s.name for s in contract.memory_kv_specs(dims, "float32", form)}
    by_name = {v.name: v for v in values}
    declared = []
    for spec in outs if outputs else ins:
        if spec.name in memory:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
            declared.append(helper.make_tensor_value_info(spec.name, elem, list(spec.shape)))
        elif spec.name in by_name:
            declared.append(by_name[spec.name])
        else:
            raise MemoryKVError(f"the graph has no {spec.name!r} (not a graph of this package's contract?)")
    return declared


def redeclare_io(
    model: onnx.ModelProto,
    dims: contract.ModelDims,
    graph: str,
    kv_cache: str,
    outputs: bool,
    form: str = FORM,
) -> None:
    """Replace the graph's inputs (or outputs) by `_redeclare`'s list."""
    values = model.graph.output if outputs else model.graph.input
    declared = _redeclare(values, dims, graph, kv_cache, outputs, form)
    del values[:]
    values.extend(declared)


def for_graph(
    model: onnx.ModelProto, graph: str, dims: contract.ModelDims, kv_cache: str, read, write
) -> int:
    """A memory K/V form's rewrite of one graph: `read(model, dims, kv_cache)` for the decoder, `write(model, graph,
    dims)` for the graphs that write the K/V, nothing for the encoder; returns the memory layers rewritten."""
    if graph == contract.DECODER:
        return read(model, dims, kv_cache)
    if graph in _MEMORY_GRAPHS:
        return write(model, graph, dims)
    return 0


def rename_memory_outputs(
    model: onnx.ModelProto, graph: str, dims: contract.ModelDims, tag: str
) -> dict[str, str]:
    """Rename the float memory K/V a memory graph writes to `<name>/<tag>` (they keep flowing under the new
    names, for the form's nodes to read) and return old -> new; MemoryKVError where the graph does not write them."""
    if graph not in _MEMORY_GRAPHS:
        raise MemoryKVError(f"{graph}: only {_MEMORY_GRAPHS} write the memory K/V")
    g = model.graph
    produced = {o for n in g.node for o in n.output}
    renamed = {}
    for i in range(dims.memory_layers):
        for name in (contract.memory_key(i), contract.memory_value(i)):
            if name not in produced:
                raise MemoryKVError(f"{graph}: no node writes {name!r}")
            renamed[name] = f"{name}/{tag}"
    for n in g.node:
        n.output[:] = [renamed.get(o, o) for o in n.output]
        n.input[:] = [renamed.get(x, x) for x in n.input]
    for info in g.value_info:  # (shape annotations follow them)
        info.name = renamed.get(info.name, info.name)
    return renamed


def quantize_memory_outputs(model: onnx.ModelProto, graph: str, dims: contract.ModelDims) -> int:
    """memory_kv / memory_update: quantize each memory layer's K/V output in the graph; returns the layers done."""
    g, renamed = model.graph, rename_memory_outputs(model, graph, dims, "float")
    s, hd = dims.stm_slots, dims.head_dim
    for i in range(dims.memory_layers):
        k, v = contract.memory_key(i), contract.memory_value(i)
        g.node.extend(_quantizer(model, renamed[k], k, contract.memory_key_scale(i), 2, s, transpose=True))
        g.node.extend(
            _quantizer(model, renamed[v], v, contract.memory_value_scale(i), 3, hd, transpose=False)
        )
    redeclare_io(model, dims, graph, "dynamic", outputs=True)
    return dims.memory_layers


# Below this many float32 bytes of memory K/V per token the float form is faster: the K/V stay in the core's
# caches and DynamicQuantizeMatMul's per-call work outweighs the bytes saved. Measured on a quiet Xeon, 1 thread
# (docs/quantization.md): alpha-micro (0.75 MB) int8 K/V 7-14% slower, alpha-mini (8 MB) 15-20% faster, Beta
# (88 MB) 29% faster.
INT8_MEMORY_KV_FROM_BYTES = 2 << 20


def int8_memory_kv_pays(dims: contract.ModelDims) -> bool:
    """Whether the memory K/V every token reads are large enough for the int8 form to be the faster one."""
    per_token = 2 * dims.memory_layers * dims.cross_kv_heads * dims.stm_slots * dims.head_dim * 4
    return per_token >= INT8_MEMORY_KV_FROM_BYTES


def choose_memory_kv(
    asked: str | None, scheme: str, cpu_scheme: bool, decoder: Path, dims: contract.ModelDims
) -> str:
    """The memory K/V form a quantized package gets: `asked`, checked against the scheme and the `decoder` file;
    None picks int8 where it runs and pays (a CPU scheme, the static-cache decoder's fused memory attention, K/V
    of `INT8_MEMORY_KV_FROM_BYTES` a token or more), "expanded" for fp16 (GPU) packages of grouped memory
    attention (export/memory_kv_heads.py), float elsewhere. Raises MemoryKVError."""
    if asked is not None and asked not in contract.MEMORY_KVS:
        raise MemoryKVError(f"memory_kv: {asked!r} is not one of {list(contract.MEMORY_KVS)}")
    if asked == "expanded" or (asked is None and scheme == "fp16"):
        from .memory_kv_heads import query_heads  # (that module builds on this one)

        if query_heads(onnx.load(str(decoder), load_external_data=False), dims) is not None:
            return "expanded"
        if asked is None:  # one K/V head per query head already, or a decoder without the fused attention
            return "float"
        raise MemoryKVError(
            "memory_kv expanded needs the static-cache decoder's fused memory attention with more query than "
            "K/V heads; this package's decoder does not have it"
        )
    if asked == "float" or (asked is None and not (cpu_scheme and int8_memory_kv_pays(dims))):
        return "float"
    why = (
        None
        if cpu_scheme
        else f"memory_kv int8 is a CPU form (DynamicQuantizeMatMul); {scheme} packages keep float"
    )
    if why is None and not available(onnx.load(str(decoder), load_external_data=False), dims):
        why = (
            "memory_kv int8 needs the static-cache decoder's fused memory attention (export with the default "
            "kv_cache); this package's decoder does not have it"
        )
    if why is None:
        return "int8"
    if asked is None:  # a dynamic-cache or unfused export: the form it can read
        return "float"
    raise MemoryKVError(why)


def _attribute(node: onnx.NodeProto, name: str):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


# Ops that are linear in their first input and only move or keep its values: scaling that input scales the output.
_VIEWS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
_DEFAULT = ("", "ai.onnx")


class _Index:
    """Who writes and who reads each value of a graph (subgraph reads count), for the rewrite's local checks."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        self.outputs = {o.name for o in graph.output}
        for node in graph.node:
            for name in [*node.input, *_subgraph_reads(node)]:
                if name:
                    self.readers.setdefault(name, []).append(node)

    def only_reader(self, name: str) -> onnx.NodeProto | None:
        """The one node reading `name`, or None where more (or a graph output) read it."""
        readers = self.readers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None

    def ints(self, name: str) -> list[int] | None:
        """A constant int64 tensor (initializer or Constant node) as a flat list, else None."""
        t = self.inits.get(name)
        node = self.producer.get(name)
        if t is None and node is not None and node.op_type == "Constant" and node.domain in _DEFAULT:
            t = _attribute(node, "value")
        if t is None or t.data_type != TensorProto.INT64:
            return None
        return numpy_helper.to_array(t).reshape(-1).tolist()


def _subgraph_reads(node: onnx.NodeProto) -> list[str]:
    graphs = [g for a in node.attribute for g in ([a.g] if a.type == a.GRAPH else list(a.graphs))]
    return [x for g in graphs for n in g.node for x in [*n.input, *_subgraph_reads(n)]]


def _plain_reshape(node: onnx.NodeProto | None) -> bool:
    """A default-domain Reshape whose 0 entries copy the input's dim (allowzero unset)."""
    return (
        node is not None
        and node.op_type == "Reshape"
        and node.domain in _DEFAULT
        and not _attribute(node, "allowzero")
    )


def _query_source(index: _Index, mha: onnx.NodeProto) -> tuple[str, onnx.NodeProto | None]:
    """The tensor the int8 path's `[0, -1, h, hd]` Reshape of the query reads, and the Reshape it makes
    redundant: the exporter's own Reshape of the query (read only here) is skipped when it keeps dim 0 (its
    shape's first entry 0), since Reshape(Reshape(x, a), [0, -1, h, hd]) is then Reshape(x, [0, -1, h, hd])."""
    q = mha.input[0]
    inner = index.producer.get(q)
    shape = index.ints(inner.input[1]) if _plain_reshape(inner) and len(inner.input) > 1 else None
    if index.only_reader(q) is mha and shape and shape[0] == 0:
        return inner.input[0], inner
    return q, None


def _output_target(index: _Index, mha: onnx.NodeProto) -> tuple[str, str, onnx.NodeProto | None]:
    """(output, shape) of the int8 path's last Reshape, and the Reshape it replaces: the output's only reader,
    where it is a Reshape to a constant shape whose 0 entries fall on dims the heads layout [B, T', h, hd] shares
    with [B, T', h * hd] (so Reshape(Reshape(o, [0, -1, h * hd]), b) is Reshape(o, b))."""
    out = mha.output[0]
    outer = index.only_reader(out)
    shape = index.ints(outer.input[1]) if _plain_reshape(outer) and len(outer.input) > 1 else None
    if shape is not None and outer.input[0] == out and all(d != 0 for d in shape[2:]):
        return outer.output[0], outer.input[1], outer
    return out, "memory_kv/int8/heads_out", None


def _query_projection(index: _Index, q: str) -> list[tuple[onnx.NodeProto, int]] | None:
    """The float initializers, as (node, input index), that multiplied by c multiply the query `q` by c: the
    weight of the constant-weight MatMul whose output reaches `q` only through ops linear in it (views,
    RotaryEmbedding) and at most one constant Add (a bias), each value read by the next op alone. None where
    there is no such chain."""
    value, scaled = q, []
    while (node := index.producer.get(value)) is not None and index.only_reader(value) is not None:
        view = node.op_type in _VIEWS and node.domain in _DEFAULT
        if view or (node.op_type == "RotaryEmbedding" and node.domain == MS_DOMAIN):  # RoPE: linear in x
            value = node.input[0]
            continue
        consts = [k for k, x in enumerate(node.input) if _float_init(index, x)]
        if node.op_type == "Add" and node.domain in _DEFAULT and len(consts) == 1 and not scaled:
            scaled.append((node, consts[0]))  # a bias: c (x + b) = c x + c b
            value = node.input[1 - consts[0]]
            continue
        if node.op_type == "MatMul" and node.domain in _DEFAULT and consts == [1]:
            return [(node, 1), *scaled]
        return None
    return None


def _float_init(index: _Index, name: str) -> bool:
    t = index.inits.get(name)
    return t is not None and t.data_type == TensorProto.FLOAT


def _fold_scale(model: onnx.ModelProto, index: _Index, q: str, scale: float) -> bool:
    """Scale the query projection's weight (and bias) by the softmax scale instead of the query at every step:
    the ops between are linear in it (RoPE rotates), so the query arrives scaled. Done before the weights are
    quantized; a block's scale takes the factor, its integers stay. Returns whether it was folded."""
    found = _query_projection(index, q)
    if found is None:
        return False
    for node, k in found:
        name = node.input[k]
        array = numpy_helper.to_array(index.inits[name]) * np.float32(scale)
        if len(index.readers.get(name, [])) == 1 and name not in index.outputs:
            index.inits[name].CopyFrom(numpy_helper.from_array(array, name))
        else:  # shared with another reader: a scaled copy for this one
            node.input[k] = f"{name}/scaled_rxq"
            model.graph.initializer.append(numpy_helper.from_array(array, node.input[k]))
    return True


def _drop_unused(model: onnx.ModelProto, names: set[str]) -> None:
    """Remove the initializers among `names` and the value_info of values that nothing reads or writes now."""
    g = model.graph
    read = {x for n in g.node for x in [*n.input, *_subgraph_reads(n)]} | {o.name for o in g.output}
    written = (
        {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
    )
    kept = [t for t in g.initializer if t.name not in names or t.name in read]
    if len(kept) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(kept)
    info = [v for v in g.value_info if v.name in written]
    del g.value_info[:]
    g.value_info.extend(info)


def read_int8_memory(model: onnx.ModelProto, dims: contract.ModelDims, kv_cache: str) -> int:
    """decoder: each fused memory attention -> `rxt_edge.MemoryAttentionInt8` (export/memory_kernel.py: our
    kernel where built, else its body: DQMatMul scores, Softmax, DQMatMul output); returns the layers.

    Per layer, at one thread every node is a few microseconds of dispatch in a ~2 ms step, so the path is kept
    short: the exporter's Reshapes on either side are merged into the path's own (`_query_source`,
    `_output_target`) and the softmax scale goes into the query projection's weights (`_fold_scale`), leaving
    the function and one Reshape. Where a check fails the layer keeps the Reshape pair or the scale Mul: the same
    numbers either way."""
    nodes = _memory_attention_nodes(model, dims.memory_layers)
    if not available(model, dims):
        raise MemoryKVError(
            "the decoder's memory attention is not one fused node per memory layer (a dynamic-cache or "
            "unfused export): the int8 memory K/V needs the static-cache decoder"
        )
    g = model.graph
    h, hd = dims.cross_kv_heads, dims.head_dim
    for i, node in nodes.items():
        heads = _attribute(node, "num_heads")
        if heads != h:
            raise MemoryKVError(f"memory layer {i}: the attention has {heads} heads, the K/V {h}")
    index = _Index(g)
    g.initializer.append(_ints("memory_kv/int8/heads_out", [0, -1, h * hd]))
    layer_of = {id(n): i for i, n in nodes.items()}
    merged: set[int] = set()  # ids of the exporter's Reshapes merged into a path
    plans = {}
    for i, node in nodes.items():
        scale = _attribute(node, "scale")
        scale = float(scale) if scale else hd**-0.5
        source, inner = _query_source(index, node)
        out, shape, outer = _output_target(index, node)
        merged.update(id(n) for n in (inner, outer) if n is not None)
        folded = _fold_scale(model, index, node.input[0], scale)
        plans[i] = (source, out, shape, None if folded else scale)
    rebuilt = []
    for node in g.node:
        if id(node) in merged:
            continue
        i = layer_of.get(id(node))
        if i is None:
            rebuilt.append(node)
            continue
        source, out, shape, scale = plans[i]
        p = f"memory_attention.{i}/int8"
        query = source
        if scale is not None:  # not folded into the weights: the query scaled (linear: before the heads view)
            g.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), f"{p}/scale"))
            rebuilt.append(helper.make_node("Mul", [source, f"{p}/scale"], [f"{p}/qs"]))
            query = f"{p}/qs"
        key, value = contract.memory_key(i), contract.memory_value(i)
        key_scale, value_scale = contract.memory_key_scale(i), contract.memory_value_scale(i)
        rebuilt += [
            memory_kernel.call(query, key, key_scale, value, value_scale, f"{p}/o4", name=p),  # [B, R, h, hd]
            helper.make_node("Reshape", [f"{p}/o4", shape], [out]),
        ]
    dropped = {x for n in g.node if id(n) in merged for x in n.input[1:]}
    del g.node[:]
    g.node.extend(rebuilt)
    _drop_unused(model, dropped | {"memory_kv/int8/heads_out"})
    redeclare_io(model, dims, contract.DECODER, kv_cache, outputs=False)
    memory_kernel.declare(model, h, hd)
    return dims.memory_layers


def rewrite(model: onnx.ModelProto, graph: str, dims: contract.ModelDims, kv_cache: str = "dynamic") -> int:
    """The int8 memory K/V form for one graph (none for the encoder); returns the memory layers rewritten."""
    return for_graph(model, graph, dims, kv_cache, read_int8_memory, quantize_memory_outputs)


def dequantized(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """The float `[key.0, value.0, key.1, ...]` that the int8 memory K/V outputs
    `[key.0, key_scale.0, value.0, value_scale.0, ...]` stand for (for comparisons such as `verify`)."""
    out = []
    for k, ks, v, vs in zip(outputs[0::4], outputs[1::4], outputs[2::4], outputs[3::4], strict=True):
        out += [np.swapaxes(k.astype(np.float32), 2, 3) * ks[:, None], v.astype(np.float32) * vs]
    return out
