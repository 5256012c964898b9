"""Routed experts in quantized packages: each `com.microsoft.MoE` node becomes a `com.microsoft.QMoE` node.

The exporter writes a model's routed experts as one contrib `MoE` node per layer (export/moe_onnx.py): fc1
`[E, 2H, D]` (SwiGLU gate and linear rows interleaved) or `[E, H, D]`, fc2 `[E, D, H]`, optional biases. The
generic quantizers only see 2-D MatMul weights, so without this module the experts (most of an MoE model's
bytes) stayed fp32. onnxruntime's `QMoE` (CPU kernel in 1.32) takes the same routing and activation attributes
and the same weight rows, stored as unsigned integers with one scale per block of the input dimension:

- `weights_prepacked=0`: raw `[E, N, K * bits / 8]` rows (the default, -1, means an execution provider's
  prepacked layout); 4-bit values two per byte, the even element in the low nibble;
- symmetric: no zero-point input, so the kernel uses 2^(bits-1) (128 / 8); a block's value of largest magnitude
  maps to -2^(bits-1) (a signed scale), the convention of onnxruntime's MatMulNBits quantizer (`block_quantize`
  reproduces `quantize_matmul_{4,8}bits`, tested);
- `block_size` 32 (16 where a dimension is not a multiple of 32; the kernel wants both D and H divisible):
  block-wise experts run int8-activation kernels (`accuracy_level=4`). One scale per row (no `block_size`)
  dequantizes to fp32 instead: 2.2x slower at 8 bits on a Beta-shaped layer, so it is only the fallback for
  dimensions no block size divides.

Every CPU scheme quantizes the experts with the same kernel family: the `int8*` schemes (int8-dynamic included:
QMoE has no dynamic per-channel mode) as 8-bit blocks, the `int4*` schemes as 4-bit blocks. A node the kernel cannot compute as ours
(a separate fc3, a non-interleaved SwiGLU, an activation the exporter does not emit, weights that are not
constants or not fp32, 4-bit rows of odd length) stays fp32 and is listed with its reason in the record that
`quantize_experts` returns (the package's `quantization.experts`, shown by the quality report). So are the
MatMuls over stacked expert weights, which no quantizer here takes: the dense-dispatch form (`--no-fuse`, or
an activation the MoE op lacks). A layer's several shared experts (RxT-Beta's 2) are a MoE node of their own
(k = their number, `normalize_routing_weights=0`) and become QMoE like the routed one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from rxt_edge.runtimes.operators import MS_DOMAIN

BLOCK_SIZES = (32, 16)  # preferred first; the kernel allows powers of two >= 16
ACCURACY_LEVEL = 4  # int8 activations in the block-wise kernels (8-bit blocks use them at every level)
_ACTIVATIONS = {"relu", "silu", "identity", "swiglu"}  # what export/moe_onnx.py emits
STACKED_NOTE = (
    "stacked experts (a MatMul over [E, K, N] weights: routed or shared experts exported with --no-fuse or "
    "with an activation the MoE op lacks) have no quantized kernel here"
)
_CHUNK = 32  # experts quantized at a time: bounds the temporaries at Beta shapes (~40 MB per chunk)


def block_quantize(w: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """w [..., N, K] float -> (uint8 [..., N, K * bits / 8], float32 scales [..., N, K / block]).

    Symmetric with an implicit zero point 2^(bits-1); per block of `block` inputs the value of largest
    magnitude maps to -2^(bits-1) exactly (its scale carries the sign)."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    *lead, n, k = w.shape
    if k % block or (bits == 4 and k % 2):
        raise ValueError(f"rows of {k} cannot be split into blocks of {block} at {bits} bits")
    half = 1 << (bits - 1)
    blocks = w.astype(np.float32, copy=False).reshape(*lead, n, k // block, block)
    peak = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)
    scales = peak / -half
    q = np.rint(blocks / np.where(scales == 0, 1, scales))
    q = (np.clip(q, -half, half - 1) + half).astype(np.uint8).reshape(*lead, n, k)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    return np.ascontiguousarray(q), np.ascontiguousarray(scales[..., 0], dtype=np.float32)


def block_dequantize(q: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """The float32 weights [..., N, K] that `block_quantize`'s output stands for (what the kernel computes with)."""
    if bits == 4:
        q = np.stack([q & 15, q >> 4], axis=-1).reshape(*q.shape[:-1], -1)
    vals = q.astype(np.float32) - (1 << (bits - 1))
    blocks = scales.shape[-1]
    shaped = vals.reshape(*vals.shape[:-1], blocks, -1) * scales[..., None]
    return shaped.reshape(vals.shape)


def choose_block(dim: int, inter: int, bits: int) -> int | None:
    """The QMoE block size for experts of input `dim` and hidden `inter`: 32, else 16, else 0 (one scale per
    row); None when even a row cannot be stored (4-bit rows of odd length)."""
    for block in BLOCK_SIZES:
        if dim % block == 0 and inter % block == 0:
            return block
    if bits == 4 and (dim % 2 or inter % 2):
        return None
    return 0


def _quantize_stack(w: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """block_quantize over the experts in chunks; block 0 = one scale per row ([E, N] scales)."""
    size = block or w.shape[-1]
    parts = [block_quantize(w[i : i + _CHUNK], bits, size) for i in range(0, w.shape[0], _CHUNK)]
    q = np.concatenate([p[0] for p in parts])
    s = np.concatenate([p[1] for p in parts])
    return q, (s if block else s[..., 0])


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _unsupported(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], bits: int) -> str | None:
    """Why this MoE node cannot become an equivalent QMoE node here, or None."""
    attrs = _attrs(node)
    act = attrs.get("activation_type", b"relu")
    act = act.decode() if isinstance(act, bytes) else act
    if act not in _ACTIVATIONS:
        return f"activation_type {act!r} is not one the exporter emits"
    if act == "swiglu" and attrs.get("swiglu_fusion", 0) != 1:
        return f"SwiGLU layout swiglu_fusion={attrs.get('swiglu_fusion', 0)} (only interleaved fc1, 1, is converted)"
    if len(node.input) > 6 and any(node.input[6:]):
        return "separate fc3 weights"
    for i in (2, 4):
        t = inits.get(node.input[i])
        if t is None:
            return f"expert weight {node.input[i]!r} is not a constant initializer"
        if t.data_type != onnx.TensorProto.FLOAT or len(t.dims) != 3:
            return f"expert weight {node.input[i]!r} is not a float32 [E, N, K] tensor"
    dim, inter = inits[node.input[4]].dims[1], inits[node.input[4]].dims[2]
    if choose_block(dim, inter, bits) is None:
        return f"{bits}-bit rows of {dim} and {inter} values are not byte-aligned"
    return None


def _stacked_expert_matmuls(model: onnx.ModelProto, inits: dict[str, onnx.TensorProto]) -> list[str]:
    """MatMul nodes with a constant 3-D float weight, which the 2-D quantizers skip: routed or shared experts
    in the static formulation. Named so that the record says they stayed fp32."""
    found = []
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.domain in ("", "ai.onnx"):
            w = next((inits[i] for i in n.input if i in inits), None)
            if w is not None and w.data_type == onnx.TensorProto.FLOAT and len(w.dims) == 3:
                found.append(n.name or n.output[0])
    return found


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def scheme_bits(scheme: str) -> int | None:
    """The expert weight bits of a quantization scheme (`int8*` 8, `int4*` 4; None: experts left as they are)."""
    return 8 if scheme.startswith("int8") else 4 if scheme.startswith("int4") else None


def experts_record(records: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The package manifest's `quantization` addition for the graphs' `quantize_experts` records ({} if none)."""
    found = {graph: rec for graph, rec in records.items() if rec}
    return {"experts": found} if found else {}


def quantize_experts(model: onnx.ModelProto, scheme: str, base_dir: str | Path = "") -> dict[str, Any] | None:
    """Replace every `com.microsoft.MoE` node of `model` (in place) by a QMoE node with the scheme's bits.

    Expert weights may still be external data (`quantize_io.load_graph(defer_experts=True)`): each is read
    from `base_dir` when its node is converted, so one layer's fp32 experts are in memory at a time.

    Returns None when the graph has no MoE node (or the scheme quantizes no weights, e.g. fp16); otherwise the
    record for the package's quantization entry: how many nodes became QMoE, their bits, block sizes and
    accuracy level, and every node kept fp32 with its reason."""
    bits = scheme_bits(scheme)
    moe_nodes = [n for n in model.graph.node if n.domain == MS_DOMAIN and n.op_type == "MoE"]
    inits = {t.name: t for t in model.graph.initializer}
    stacked = _stacked_expert_matmuls(model, inits)
    if bits is None or not (moe_nodes or stacked):
        return None
    taken = set(inits) | {o for n in model.graph.node for o in n.output}
    kept = dict.fromkeys(stacked, STACKED_NOTE)
    blocks: set[int] = set()
    converted = 0
    for node in moe_nodes:
        label = node.name or node.output[0]
        reason = _unsupported(node, inits, bits)
        if reason is not None:
            kept[label] = reason
            continue
        fc1 = numpy_helper.to_array(inits[node.input[2]], str(base_dir))
        fc2 = numpy_helper.to_array(inits[node.input[4]], str(base_dir))
        block = choose_block(fc2.shape[1], fc2.shape[2], bits)
        blocks.add(block)
        names = []
        for tag, w in (("fc1", fc1), ("fc2", fc2)):
            q, s = _quantize_stack(w, bits, block)
            qn, sn = _unique(f"{label}.{tag}_q{bits}", taken), _unique(f"{label}.{tag}_scales", taken)
            model.graph.initializer.extend([numpy_helper.from_array(q, qn), numpy_helper.from_array(s, sn)])
            names.append((qn, sn))
        del fc1, fc2
        replaced = {node.input[2], node.input[4]}
        inputs = list(node.input) + [""] * (6 - len(node.input))
        attrs = _attrs(node)
        attrs.update(expert_weight_bits=bits, weights_prepacked=0, accuracy_level=ACCURACY_LEVEL)
        if block:
            attrs["block_size"] = block
        q_inputs = [inputs[0], inputs[1], *names[0], inputs[3], *names[1], inputs[5]]
        while q_inputs and not q_inputs[-1]:
            q_inputs.pop()
        qmoe = helper.make_node(
            "QMoE", q_inputs, list(node.output), name=node.name, domain=MS_DOMAIN, **attrs
        )
        node.CopyFrom(qmoe)
        converted += 1
        _drop_unused(
            model, replaced, inits
        )  # node by node: one layer's fp32 experts in memory beside the graph
    if MS_DOMAIN not in {o.domain for o in model.opset_import}:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return {
        "op": "com.microsoft.QMoE",
        "qmoe_nodes": converted,
        "bits": bits,
        "block_sizes": sorted(blocks),  # 0 = one scale per row
        "accuracy_level": ACCURACY_LEVEL,
        "symmetric": True,
        "kept_fp32": kept,
    }


def _drop_unused(model: onnx.ModelProto, names: set[str], inits: dict[str, onnx.TensorProto]) -> None:
    """Remove the initializers `names` (replaced fp32 expert weights) that nothing reads any more, from the
    graph and from `inits` (whose references would keep their bytes alive)."""
    used: set[str] = {o.name for o in model.graph.output}

    def visit(graph: onnx.GraphProto) -> None:
        for n in graph.node:
            used.update(n.input)
            for a in n.attribute:
                for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    visit(g)

    visit(model.graph)
    gone = names - used
    for i in reversed([i for i, t in enumerate(model.graph.initializer) if t.name in gone]):
        del model.graph.initializer[i]  # by index: remove() would compare whole tensors
    for name in gone:
        inits.pop(name, None)
