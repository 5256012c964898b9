"""Weight bytes one decode step reads: what the bandwidth floor of decoding divides by the memory bandwidth.

A decoder step reads every initializer of the decoder graph once, in its stored dtype (packed quantized bytes,
scales and zero points included), except where the graph itself says that only part of it is read:

- embedding tables (read only by `Gather` / `GatherBlockQuantized` along axis 0): one row per token;
- the RoPE cos/sin tables of `GroupQueryAttention`: one row, the token's position;
- routed experts (`com.microsoft.MoE` / `QMoE` choosing k of E experts): k/E of every per-expert input (weights,
  biases, scales, zero points), since only the top-k experts are read; a node with k = E (a layer's several
  shared experts) reads all of them.

An initializer read by several nodes counts at the largest share (a tied embedding that is also the LM head is
read whole). Numpy and onnx only (no onnxruntime): the graph is loaded without its external data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from rxt_edge.runtimes.operators import MS_DOMAIN

_HALF_BYTE = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
_ROPE_INPUTS = (7, 8)  # GroupQueryAttention's cos_cache, sin_cache: [max_seq_len, head_dim / 2]


def tensor_bytes(t: onnx.TensorProto) -> int:
    """Stored bytes of an initializer from its dims and dtype (no data needed: external data stays on disk)."""
    numel = int(np.prod(list(t.dims), dtype=np.int64)) if t.dims else 1
    if t.data_type in _HALF_BYTE:
        return (numel + 1) // 2
    return numel * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _shares(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> list[tuple[int, float, str]]:
    """(input index, fraction read per token, category) for the initializer inputs this node reads in part."""
    rows = lambda i: inits[node.input[i]].dims[0]  # noqa: E731
    ms = node.domain == MS_DOMAIN
    if node.op_type in ("MoE", "QMoE") and ms and len(node.input) > 2 and node.input[2] in inits:
        experts, k = rows(2), _attr(node, "k", 1)
        kind = "shared_experts" if k >= experts else "routed_experts"
        per_expert = [
            i
            for i, name in enumerate(node.input)
            if i >= 2 and name in inits and inits[name].dims and inits[name].dims[0] == experts
        ]
        return [(i, min(k, experts) / experts, kind) for i in per_expert]
    if node.op_type == "Gather" and node.domain in ("", "ai.onnx") and node.input[0] in inits:
        if _attr(node, "axis", 0) == 0 and len(inits[node.input[0]].dims) == 2:
            return [(0, 1 / rows(0), "embedding")]
    if node.op_type == "GatherBlockQuantized" and ms and node.input[0] in inits:
        if _attr(node, "gather_axis", 0) == 0:
            n = rows(0)
            return [
                (i, 1 / n, "embedding")
                for i in (0, 2, 3)
                if i < len(node.input) and node.input[i] in inits and inits[node.input[i]].dims[:1] == [n]
            ]
    if node.op_type == "GroupQueryAttention" and ms:
        return [
            (i, 1 / rows(i), "rope") for i in _ROPE_INPUTS if i < len(node.input) and node.input[i] in inits
        ]
    return []


def decoder_weight_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Weight bytes a decode step of `model` reads, in total (`weights`) and per part: `routed_experts`,
    `shared_experts`, `embedding` (rows gathered), `rope`, `other` (read whole: attention, dense layers, norms,
    LM head). `stored` is every initializer's bytes, `routed_experts_stored` the routed experts' in full."""
    inits = {t.name: t for t in model.graph.initializer}
    share: dict[str, tuple[float, str]] = {}
    for node in model.graph.node:
        partial = {i: (f, kind) for i, f, kind in _shares(node, inits)}
        for i, name in enumerate(node.input):
            if name in inits:
                got = partial.get(i, (1.0, "other"))
                if got[0] > share.get(name, (0.0, ""))[0]:
                    share[name] = got
    out = dict.fromkeys(("routed_experts", "shared_experts", "embedding", "rope", "other"), 0)
    stored = routed_stored = 0
    for name, t in inits.items():
        size = tensor_bytes(t)
        stored += size
        fraction, kind = share.get(name, (0.0, "other"))  # an initializer nothing reads costs nothing
        out[kind] += int(round(size * fraction))
        routed_stored += size if kind == "routed_experts" else 0
    return {"weights": sum(out.values()), **out, "stored": stored, "routed_experts_stored": routed_stored}


def decoder_file_weight_bytes(path: str | Path) -> dict[str, int]:
    """`decoder_weight_bytes` of a graph file, read without its external data."""
    return decoder_weight_bytes(onnx.load(str(path), load_external_data=False))
