"""`rxt-edge quantize`: an fp32 model package -> a new package with quantized (or fp16) graphs.

Torch-free: onnx + onnxruntime.quantization only. Schemes:
- `int8` (the CLI's default) / `int4`: weight-only `MatMulNBits`, symmetric, `accuracy_level=4`, block size measured
  fastest among the sound ones (export/quantize_nbits.py); int4's in `rxt_edge.MatMulInt4` calls (matmul_kernel).
- `int8-dynamic`: weights int8 per output channel, activations quantized at run time (DynamicQuantizeLinear +
  MatMulInteger, fused by onnxruntime into DynamicQuantizeMatMul). Presets name the instruction set of the
  target CPU (see `DYNAMIC_PRESETS`).
- `int8-block` / `int4-block`: as `int8` / `int4` with block 32, the settings onnxruntime-genai's model builder
  uses on CPU. Always `accuracy_level=4` unless told otherwise (int8 activation kernels on CPU; the quantizer's
  default level 0 dequantizes every weight on every call: 8-bit weights 15-27x slower, docs/quantization.md).
- `fp16`: every graph in float16 with float16 I/O (as `rxt-edge export --dtype fp16` writes), for GPUs.

Which graphs and weights are quantized is a measured choice (docs/quantization.md): `DEFAULT_SCOPES`. The
package is built by `rxt_edge.package_writer` (staged beside the destination, renamed into place whole).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rxt_edge import contract
from rxt_edge.manifest import Manifest, ManifestError, load_manifest, verify_files
from rxt_edge.package_writer import PackageWriteError, PackageWriter

from . import matmul_kernel
from .constant_tables import fold_trig_tables
from .greedy_pick import add_next_token, writes_next_token
from .memory_kv_heads import form_dims, rewrite_form
from .quantize_io import graph_bytes, load_deferred, load_graph
from .quantize_memory_kv import MemoryKVError, choose_memory_kv
from .quantize_moe import experts_record, quantize_experts
from .quantize_nbits import BLOCK_SCHEMES, BlockConfig, block_config, block_widths, plan_passes

SCHEMES = ("int8", "int4", "int8-dynamic", "int8-block", "int4-block", "fp16")
CPU_SCHEMES = ("int8", "int4", "int8-dynamic", "int8-block", "int4-block")
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with headroom


class QuantizeError(RuntimeError):
    """Quantization failed or was asked something impossible; nothing was written at the destination."""


@dataclass(frozen=True)
class DynamicPreset:
    """Dynamic-int8 settings for one CPU family.

    The values are those of optimum-onnx's `AutoQuantizationConfig.<name>(is_static=False)` (onnxruntime
    IntegerOps, uint8 activations): optimum itself is not a dependency because it requires torch and pins
    transformers < 4.58 (see docs/quantization.md); tests compare the two where optimum is installed.
    """

    name: str
    weight_type: str  # "uint8" | "int8"
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: avoids VPMADDUBSW saturation on AVX2/AVX-512 without VNNI
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    activation_type: str = "uint8"  # onnxruntime's dynamic quantization supports uint8 activations only


DYNAMIC_PRESETS = {
    "avx2": DynamicPreset("avx2", "uint8"),  # u8 x u8: no saturation on AVX2 (no VNNI)
    "avx512": DynamicPreset("avx512", "int8"),
    "avx512_vnni": DynamicPreset("avx512_vnni", "int8"),  # u8 x s8 -> VPDPBUSD
    "arm64": DynamicPreset("arm64", "int8"),
}
DEFAULT_PRESET = "avx2"  # runs correctly on every x86-64 laptop CPU; pick avx512_vnni/arm64 for those targets


@dataclass(frozen=True)
class Scope:
    """What gets quantized: which graphs, and within them whether the head and the embedding are included."""

    graphs: tuple[str, ...]
    head: bool = True  # the decoder's output projection (dim x vocab)
    embedding: bool = False  # the token embedding (a Gather); only size changes, never speed

    def to_json(self) -> dict[str, Any]:
        return {"graphs": list(self.graphs), "head": self.head, "embedding": self.embedding}


# Measured defaults (docs/quantization.md, alpha-mini): the decoder (head included) carries the decode cost and
# tolerates int8 (head in int8: KL 0.0101 -> 0.0106 nats). The encoder and memory update write the STM: in int8
# it ends 1-4% off after 6 turns and the decoder's KL doubles (int4: 14-47% off); they run off the user's path,
# so they stay fp32 unless asked for. memory_kv (once per turn) gains no speed and adds error: fp32 (its
# output, the K/V every token reads, is a separate choice: `quantize_package(memory_kv=...)`).
DEFAULT_SCOPES = {
    "int8-dynamic": Scope(graphs=(contract.DECODER,), head=True, embedding=False),
    "int8-block": Scope(graphs=(contract.DECODER,), head=True, embedding=False),
    "int4-block": Scope(graphs=(contract.DECODER,), head=True, embedding=False),
    "int8": Scope(graphs=(contract.DECODER,), head=True, embedding=False),
    "int4": Scope(graphs=(contract.DECODER,), head=True, embedding=False),
    "fp16": Scope(graphs=contract.GRAPH_NAMES, head=True, embedding=True),
}


@dataclass
class QuantizeResult:
    output: Path
    manifest: Manifest
    scheme: str
    preset: str | None
    scope: Scope
    quantized_nodes: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- graph helpers


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: the quantizers include/exclude nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}_rxq"
        seen.add(node.name)


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def head_gemm_to_matmul(model: onnx.ModelProto, vocab: int) -> int:
    """Rewrite the head's `Gemm(x, W^T, b)` as `MatMul(x, W') + b` so the quantizers (MatMul only) can take it.

    Only a plain Gemm (alpha = beta = 1, no transA, constant W of shape [vocab, dim] or [dim, vocab]) is
    rewritten; returns how many nodes were. The arithmetic is unchanged up to fp32 rounding.
    """
    inits = _initializers(model)
    users: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    new_nodes, count = [], 0
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type == "Gemm" and len(node.input) >= 2 else None
        plain = (
            w is not None
            and _attr(node, "alpha", 1.0) == 1.0
            and _attr(node, "beta", 1.0) == 1.0
            and not _attr(node, "transA", 0)
            and len(w.dims) == 2
            and vocab in tuple(w.dims)
        )
        if not plain:
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(w)
        if _attr(node, "transB", 0):
            weight = weight.T
        if weight.shape[1] != vocab:
            new_nodes.append(node)
            continue
        wname = f"{node.input[1]}.matmul_rxq"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), wname))
        if users.get(node.input[1], 0) == 1:
            model.graph.initializer.remove(w)
        out = node.output[0]
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{out}.matmul_rxq" if has_bias else out
        new_nodes.append(
            helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=f"{node.name}_matmul")
        )
        if has_bias:
            new_nodes.append(
                helper.make_node("Add", [mm_out, node.input[2]], [out], name=f"{node.name}_bias")
            )
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return count


def _const_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> onnx.TensorProto | None:
    if node.op_type in ("MatMul", "Gemm") and len(node.input) >= 2:
        return inits.get(node.input[1])
    if node.op_type == "Gather":
        return inits.get(node.input[0])
    return None


def classify_nodes(model: onnx.ModelProto, vocab: int, dim: int) -> dict[str, list[str]]:
    """Names of the weight-carrying nodes by role: `linear` (MatMul with a constant weight), `head`, `embedding`."""
    inits = _initializers(model)
    roles: dict[str, list[str]] = {"linear": [], "head": [], "embedding": []}
    for node in model.graph.node:
        w = _const_weight(node, inits)
        if w is None or w.data_type != onnx.TensorProto.FLOAT or len(w.dims) != 2:
            continue
        dims = tuple(w.dims)
        if node.op_type == "Gather":
            if dims == (vocab, dim):
                roles["embedding"].append(node.name)
        elif vocab in dims and dim in dims:
            roles["head"].append(node.name)
        elif node.op_type == "MatMul":
            roles["linear"].append(node.name)
    return roles


def _selected(roles: dict[str, list[str]], scope: Scope) -> tuple[list[str], list[str]]:
    """(nodes to quantize, other weight nodes to leave in fp32)."""
    take = list(roles["linear"])
    take += roles["head"] if scope.head else []
    take += roles["embedding"] if scope.embedding else []
    leave = [n for r in roles.values() for n in r if n not in take]
    return take, leave


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizers log a warning per model (pre-processing advice) and print progress."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _load(path: Path, defer_experts: bool = False) -> onnx.ModelProto:
    return load_graph(path, defer_experts)  # export/quantize_io.py: graphs past 2 GB


def _save(model: onnx.ModelProto, path: Path) -> None:
    big = graph_bytes(model) > EXTERNAL_DATA_BYTES
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=big,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data",
    )


def _count(model: onnx.ModelProto, ops: Iterable[str]) -> int:
    ops = set(ops)
    return sum(1 for n in model.graph.node if n.op_type in ops)


# ---------------------------------------------------------------- schemes


def quantize_graph_dynamic(
    model: onnx.ModelProto, out: Path, preset: DynamicPreset, take: list[str], leave: list[str]
) -> int:
    """Dynamic int8 (IntegerOps) of the `take` nodes; returns how many nodes were quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    wtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[preset.weight_type]
    ops = sorted({"MatMul"} | ({"Gather"} if any(_is_gather(model, n) for n in take) else set()))
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        tmp_out = Path(tmp) / "q.onnx"
        quantize_dynamic(
            model,
            tmp_out,
            op_types_to_quantize=ops,
            per_channel=preset.per_channel,
            reduce_range=preset.reduce_range,
            weight_type=wtype,
            nodes_to_quantize=take,
            nodes_to_exclude=leave,
            use_external_data_format=graph_bytes(model) > EXTERNAL_DATA_BYTES,
            extra_options={
                "WeightSymmetric": preset.weight_symmetric,
                "ActivationSymmetric": preset.activation_symmetric,
                "MatMulConstBOnly": True,
            },
        )
        q = _load(tmp_out)
    _save(q, out)
    return _count(q, ("MatMulInteger", "DynamicQuantizeMatMul")) + _gathers_quantized(q)


def _is_gather(model: onnx.ModelProto, name: str) -> bool:
    return any(n.name == name and n.op_type == "Gather" for n in model.graph.node)


def _gathers_quantized(model: onnx.ModelProto) -> int:
    inits = _initializers(model)
    return sum(
        1
        for n in model.graph.node
        if n.op_type == "Gather"
        and n.input[0] in inits
        and inits[n.input[0]].data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)
    )


def quantize_graph_block(
    model: onnx.ModelProto,
    out: Path,
    block: BlockConfig,
    take: list[str],
    leave: list[str],
    head: Iterable[str] = (),
) -> int:
    """Weight-only MatMulNBits (and GatherBlockQuantized for the embedding) of the `take` nodes.

    `head` (a subset of `take`) gets `block.head_bits` when that differs from `block.bits`: a second pass,
    as onnxruntime's quantizer applies one bit width per pass."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    for bits, size, nodes in plan_passes(block, take, head, block_widths(model, take, block.block_size)):
        ops = ("MatMul", "Gather") if any(_is_gather(model, n) for n in nodes) else ("MatMul",)
        with _quiet():
            q = MatMulNBitsQuantizer(
                model,
                bits=bits,
                block_size=size,
                is_symmetric=block.symmetric,
                accuracy_level=block.accuracy_level,
                nodes_to_include=nodes,
                nodes_to_exclude=leave + [n for n in take if n not in nodes],
                op_types_to_quantize=ops,
            )
            q.process()
        model = q.model.model
    matmul_kernel.rewrite(model)  # 4-bit products -> rxt_edge.MatMulInt4 (our CPU kernel, else MatMulNBits)
    _save(model, out)
    return _count(model, ("MatMulNBits", "GatherBlockQuantized", *matmul_kernel.FUNCTIONS))


def convert_graph_fp16(model: onnx.ModelProto, out: Path, graph: str = "") -> int:
    """Everything float16, I/O included (a decoder gains the greedy pick: export/greedy_pick.py); returns the
    number of float initializers converted."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    n = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    fold_trig_tables(model)  # float16 Sin/Cos would run every step: no CPU kernel folds them at load
    with _quiet():
        half = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True)
    if writes_next_token(graph, "float16"):
        add_next_token(half)
    _save(half, out)
    return n


# ---------------------------------------------------------------- package


def _check_scope(scope: Scope, scheme: str) -> None:
    bad = [g for g in scope.graphs if g not in contract.GRAPH_NAMES]
    if bad:
        raise QuantizeError(f"graphs: unknown graph(s) {bad}; choose from {list(contract.GRAPH_NAMES)}")
    if scheme == "fp16" and set(scope.graphs) != set(contract.GRAPH_NAMES):
        raise QuantizeError(
            "graphs: fp16 converts all four graphs (the runtime shares float16 STM buffers between them)"
        )
    if not scope.graphs:
        raise QuantizeError("graphs: nothing to quantize (empty graph list)")
    if scheme in BLOCK_SCHEMES and BLOCK_SCHEMES[scheme].bits == 8 and scope.embedding:
        raise QuantizeError(
            f"embedding: {scheme} cannot quantize the embedding (onnxruntime's GatherBlockQuantized is 4-bit only)"
        )


def quantize_package(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    scheme: str,
    preset: str | None = None,
    scope: Scope | None = None,
    reduce_range: bool | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    per_channel: bool | None = None,
    block_size: int | None = None,
    accuracy_level: int | None = None,
    symmetric: bool | None = None,
    head_bits: int | None = None,
    memory_kv: str | None = None,
) -> QuantizeResult:
    """Write a quantized copy of the fp32 package `source` to `output` (atomically) and return its manifest.

    `preset` applies to `int8-dynamic` only (default `DEFAULT_PRESET`); `scope` overrides the measured
    default of the scheme; `reduce_range` and `per_channel` override the preset's (`per_channel=False`: one
    weight scale per matrix, 7-11% faster decode on our CPU at a small cost in exactness, docs/quantization.md).
    `block_size`, `accuracy_level`, `symmetric` and `head_bits` override the settings of the MatMulNBits
    schemes (`BLOCK_SCHEMES`). `memory_kv`: the memory cross-attention K/V form (`contract.MEMORY_KVS`,
    export/quantize_memory_kv.py); default: "int8" for the CPU schemes of a static-cache export whose K/V are
    large enough to pay (`int8_memory_kv_pays` there: a quarter of the bytes every token reads, recall
    unchanged, docs/quantization.md), "float" otherwise (`default_memory_kv`).
    """
    if scheme not in SCHEMES:
        raise QuantizeError(f"scheme: {scheme!r} is not supported; choose one of {list(SCHEMES)}")
    if scheme == "int8-dynamic":
        preset = preset or DEFAULT_PRESET
        if preset not in DYNAMIC_PRESETS:
            raise QuantizeError(f"preset: {preset!r} is unknown; choose one of {list(DYNAMIC_PRESETS)}")
    elif preset is not None:
        raise QuantizeError(f"preset: presets apply to int8-dynamic only, not to {scheme}")
    dyn = DYNAMIC_PRESETS[preset] if preset else None
    if dyn is None and per_channel is not None:
        raise QuantizeError(f"per-channel / per-tensor weights apply to int8-dynamic only, not to {scheme}")
    if dyn is not None and reduce_range is not None:
        dyn = replace(dyn, reduce_range=bool(reduce_range))
    if dyn is not None and per_channel is not None:
        dyn = replace(dyn, per_channel=bool(per_channel))
    block_opts = {"block_size": block_size, "accuracy_level": accuracy_level, "symmetric": symmetric}
    block_opts["head_bits"] = head_bits
    if scheme not in BLOCK_SCHEMES and any(v is not None for v in block_opts.values()):
        named = ", ".join(k for k, v in block_opts.items() if v is not None)
        raise QuantizeError(
            f"{named}: apply to the MatMulNBits schemes {list(BLOCK_SCHEMES)} only, not to {scheme}"
        )
    try:
        block = block_config(scheme, **block_opts) if scheme in BLOCK_SCHEMES else None
    except ValueError as e:
        raise QuantizeError(str(e)) from None
    scope = scope or DEFAULT_SCOPES[scheme]
    _check_scope(scope, scheme)

    src, out = Path(source), Path(output)
    try:
        manifest = load_manifest(src)
        verify_files(src, manifest)
    except ManifestError as e:
        raise QuantizeError(f"{src}: not a valid model package: {e}") from None
    if manifest.precision != "fp32" or manifest.quantization is not None:
        raise QuantizeError(
            f"{src}: precision is {manifest.precision!r}; quantize an fp32 package (the exporter's default)"
        )
    try:  # before any work: a destination that may not be written or replaced is refused here
        writer = PackageWriter(out, overwrite=overwrite, sources=[src])
    except PackageWriteError as e:
        raise QuantizeError(str(e)) from None

    fdt = "float16" if scheme == "fp16" else "float32"
    decoder = src / manifest.graphs[contract.DECODER].file
    memory_kv = _memory_kv_form(memory_kv, scheme, decoder, manifest.model)
    dims = form_dims(memory_kv, decoder, manifest.model)  # (the expanded form records the query heads)
    data = {**manifest.to_json(), "model": dims.to_json()}
    with writer:
        counts: dict[str, int] = {}
        experts: dict[str, dict | None] = {}  # routed experts -> QMoE (export/quantize_moe.py)
        for name in contract.GRAPH_NAMES:
            gpath = src / manifest.graphs[name].file
            rewrites_kv = memory_kv != "float" and name != contract.ENCODER
            if name not in scope.graphs and not rewrites_kv:  # copied as is: same files, same hashes
                for ref in (manifest.graphs[name].ref, *manifest.graphs[name].external_data):
                    writer.copy_in(src / ref.file, ref.file)
                continue
            dest = writer.path(f"{name}.onnx")
            if progress:
                progress(name)
            experts_here = name in scope.graphs and scheme != "fp16"
            model = _load(gpath, defer_experts=experts_here)  # read one layer at a time by quantize_experts
            _name_nodes(model)
            try:
                if rewrites_kv:
                    rewrite_form(memory_kv, model, name, dims, manifest.graphs[name].kv_cache)
                if name not in scope.graphs:
                    _save(model, dest)
                elif scheme == "fp16":
                    counts[name] = convert_graph_fp16(model, dest, name)
                else:
                    experts[name] = quantize_experts(model, scheme, gpath.parent)
                    load_deferred(model, gpath.parent)  # experts kept fp32, if any
                    if scope.head and name == contract.DECODER:
                        head_gemm_to_matmul(model, dims.vocab_size)
                    roles = classify_nodes(model, dims.vocab_size, dims.dim)
                    take, leave = _selected(roles, scope)
                    if not take:
                        _save(model, dest)
                        counts[name] = 0
                    elif scheme == "int8-dynamic":
                        counts[name] = quantize_graph_dynamic(model, dest, dyn, take, leave)
                    else:
                        counts[name] = quantize_graph_block(model, dest, block, take, leave, roles["head"])
                _check_graph(dest)
            except QuantizeError:
                raise
            except Exception as e:  # noqa: BLE001 - any quantizer failure is reported with the graph name
                raise QuantizeError(
                    f"quantizing the {name} graph ({scheme}) failed: {type(e).__name__}: {e}"
                ) from e
            # a graph rewritten for the K/V form only keeps its fp32 weights
            precision = scheme if name in scope.graphs else "fp32"
            form, pick = memory_kv if rewrites_kv else "float", writes_next_token(name, fdt)
            data["graphs"][name] = writer.graph_entry(
                name, dims, precision, fdt, manifest.graphs[name].kv_cache, form, next_token=pick
            )

        stm_name = Path(manifest.initial_stm.file).name
        if fdt == "float32":  # unchanged: the same bytes and hash
            writer.copy_in(src / manifest.initial_stm.file, stm_name)
        else:
            stm = np.load(src / manifest.initial_stm.file, allow_pickle=False).astype(fdt)
            np.save(writer.path(stm_name), stm, allow_pickle=False)
        data["initial_stm"] = {**data["initial_stm"], **writer.file_entry(stm_name, size=False)}
        data["initial_stm"].pop("size", None)
        tok_name = Path(manifest.tokenizer.file).name
        writer.copy_in(src / manifest.tokenizer.file, tok_name)
        data["tokenizer"] = {**data["tokenizer"], **writer.file_entry(tok_name, size=False)}
        data["precision"] = scheme
        data["quantization"] = _quantization_record(manifest, scheme, dyn, block, scope, counts)
        data["quantization"].update(experts_record(experts))
        data["quantization"]["memory_kv"] = memory_kv
        new_manifest = writer.commit(data)
    return QuantizeResult(out, new_manifest, scheme, preset, scope, counts)


def _memory_kv_form(asked: str | None, scheme: str, decoder: Path, dims: contract.ModelDims) -> str:
    try:
        return choose_memory_kv(asked, scheme, scheme in CPU_SCHEMES, decoder, dims)
    except MemoryKVError as e:
        raise QuantizeError(str(e)) from None


def default_memory_kv(source: str | os.PathLike[str], scheme: str) -> str:
    """The memory K/V form `quantize_package(source, ..., scheme)` writes when not asked for one."""
    manifest = load_manifest(Path(source))
    decoder = Path(source) / manifest.graphs[contract.DECODER].file
    return _memory_kv_form(None, scheme, decoder, manifest.model)


def _quantization_record(
    manifest: Manifest,
    scheme: str,
    dyn: DynamicPreset | None,
    block: BlockConfig | None,
    scope: Scope,
    counts: dict[str, int],
) -> dict[str, Any]:
    import onnxruntime

    rec: dict[str, Any] = {
        "scheme": scheme,
        "preset": dyn.name if dyn else None,
        "source_fingerprint": manifest.fingerprint(),
        "source_precision": manifest.precision,
        **scope.to_json(),
        "quantized_nodes": dict(counts),
        "tool": f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}",
    }
    if dyn is not None:
        rec.update(
            weight_type=dyn.weight_type,
            activation_type=dyn.activation_type,
            per_channel=dyn.per_channel,
            reduce_range=dyn.reduce_range,
            weight_symmetric=dyn.weight_symmetric,
            activation_symmetric=dyn.activation_symmetric,
        )
    elif block is not None:
        rec.update(block.to_json())
    return rec


def _check_graph(path: Path) -> None:
    """The quantized graph must load in onnxruntime with every optimization on (fusions included)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise QuantizeError(f"{path.name}: onnxruntime cannot load the quantized graph: {e}") from e


def optimum_preset(name: str) -> DynamicPreset | None:
    """The same preset read from optimum-onnx's `AutoQuantizationConfig`, or None where optimum is not installed."""
    try:
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except Exception:  # noqa: BLE001 - not installed, or an incompatible transformers
        return None
    cfg = getattr(AutoQuantizationConfig, name)(is_static=False)
    return DynamicPreset(
        name=name,
        weight_type="int8" if cfg.weights_dtype.name == "QInt8" else "uint8",
        per_channel=bool(cfg.per_channel),
        reduce_range=bool(cfg.reduce_range),
        weight_symmetric=bool(cfg.weights_symmetric),
        activation_symmetric=bool(cfg.activations_symmetric),
        activation_type="int8" if cfg.activations_dtype.name == "QInt8" else "uint8",
    )
