"""Canonical model -> model package: four ONNX graphs, manifest, tokenizer and initial STM.

The package is built by `rxt_edge.package_writer` (staged beside the destination, renamed into place whole)
and committed only when every graph has passed `onnx.checker` (full check) and loaded in onnxruntime with all
optimizations on, so a failure never leaves a half-written package behind.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from onnx_ir.passes.common import RemoveUnusedNodesPass

from rxt_edge import contract
from rxt_edge.manifest import Manifest, ManifestError
from rxt_edge.package_writer import PackageWriteError, PackageWriter

from . import cached_attention, memory_attention, rotary, turn_attention
from .checkpoints import SourceInfo
from .graph_fusions import (
    fold_memory_head_groups,
    fuse_rope,
    fuse_shared_input_matmuls,
    fuse_silu,
    fuse_skip_rms_norm,
    pack_attention_qkv,
)
from .graphs import example_inputs, model_dims, wrapper
from .greedy_pick import add_next_token_file, writes_next_token
from .memory_fusions import TURN_GRAPHS, fuse_turn_graph
from .model import RxTModel
from .moe import contrib_export
from .moe_onnx import fold_expert_layouts

DEFAULT_OPSET = 18
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with headroom
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
NP_DTYPES = {"fp32": "float32", "fp16": "float16"}


class ExportError(RuntimeError):
    """Export failed; the message says which graph and why. Nothing was written at the destination."""


def _dynamic_shapes(specs: list[contract.TensorSpec]):
    from torch.export import Dim

    dims = {
        "batch": Dim("batch", max=1024),
        "seq": Dim("seq", max=65536),
        "past_seq": Dim("past_seq", max=65536),
    }
    return [{i: dims[s] for i, s in enumerate(spec.shape) if isinstance(s, str)} or None for spec in specs]


def export_graph(
    model: RxTModel,
    graph: str,
    path: Path,
    precision: str,
    opset: int,
    fuse: bool = True,
    kv_cache: str = "dynamic",
) -> None:
    dims = model_dims(model)
    ins, outs = contract.graph_io(dims, graph, NP_DTYPES[precision], kv_cache)
    module = wrapper(model, graph, kv_cache).eval()
    args = example_inputs(dims, graph, PRECISIONS[precision], kv_cache)
    shapes = _dynamic_shapes(ins)
    if graph == contract.DECODER:  # forward(input_ids, [seqlens_k,] *state): the varargs form one tuple
        fixed = 2 if kv_cache == "static" else 1
        shapes = [*shapes[:fixed], tuple(shapes[fixed:])]
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with (
        warnings.catch_warnings(),
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
        contrib_export(fuse) as moe_table,  # routed experts -> com.microsoft.MoE
        turn_attention.fused_export(fuse),  # per-turn attentions -> com.microsoft.MultiHeadAttention
    ):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
        logging.getLogger("onnx_ir").setLevel(logging.ERROR)  # "Attribute type is ambiguous" (empty INTS)
        program = torch.onnx.export(
            module,
            args,
            dynamic_shapes=tuple(shapes),
            input_names=[s.name for s in ins],
            output_names=[s.name for s in outs],
            opset_version=opset,
            custom_translation_table={
                **(moe_table or {}),
                **cached_attention.translation_table(),
                **memory_attention.translation_table(),
                **rotary.translation_table(),
                **turn_attention.translation_table(),
            },
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    if fuse:
        fold_expert_layouts(program.model)
        fuse_rope(program.model, float16=graph in TURN_GRAPHS)
        fold_memory_head_groups(program.model)
        fuse_shared_input_matmuls(program.model)
        pack_attention_qkv(program.model)
        fuse_skip_rms_norm(program.model)
        fuse_silu(program.model)
        fuse_turn_graph(program.model, graph)  # per-turn graphs: shared subexpressions, constants
        # what the fusions left unread (onnxruntime would warn about every such initializer at each load)
        RemoveUnusedNodesPass()(program.model)
    program.save(str(path), external_data=n_bytes > EXTERNAL_DATA_BYTES)


def _release(model: RxTModel) -> None:
    """Free every weight of `model` (left with empty tensors: unusable) so that the memory goes back."""
    import gc

    gc.collect()  # the exporters' cycles may still reach the parameters
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.data = torch.empty(0, dtype=t.dtype)
    gc.collect()


def check_graph(path: Path) -> None:
    """Full ONNX check, then a load in onnxruntime with every graph optimization on."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=True)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def resolve_kv_cache(model: RxTModel, kv_cache: str, fuse: bool = True) -> str:
    """The decoder cache layout to export: `kv_cache` checked against what the model and `fuse` allow."""
    if kv_cache == "auto":
        return "static" if fuse and model.decoder.static_cache_supported else "dynamic"
    if kv_cache not in contract.KV_CACHES:
        raise ExportError(f"kv_cache {kv_cache!r}: choose one of auto, {', '.join(contract.KV_CACHES)}")
    if kv_cache == "static" and not fuse:
        raise ExportError("the static KV cache uses the GroupQueryAttention contrib op: it needs fusing on")
    if kv_cache == "static" and not model.decoder.static_cache_supported:
        raise ExportError(
            "the static KV cache needs query heads a multiple of K/V heads and a head dim that is a "
            "multiple of 16 in every decoder layer (GroupQueryAttention); export this model with "
            "kv_cache='dynamic'"
        )
    return kv_cache


def _cache_of(graph: str, kv_cache: str) -> str:
    return kv_cache if graph == contract.DECODER else "dynamic"


def _tokenizer_kind(path: Path) -> str:
    if path.suffix == ".json":
        return "tokenizers"
    if path.suffix == ".model":
        return "sentencepiece"
    raise ExportError(
        f"{path}: unknown tokenizer file type (expected tokenizer.json or a sentencepiece .model)"
    )


def export_package(
    model: RxTModel,
    source: SourceInfo,
    output: str | Path,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    tokenizer: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    fuse: bool = True,
    kv_cache: str = "auto",
    release_weights: bool = False,
) -> Manifest:
    """Write a complete model package to `output` (atomically) and return its manifest.

    `fuse`: rewrite RoPE into onnxruntime's RotaryEmbedding contrib op and merge projections of one input
    into one MatMul (export/graph_fusions.py). `kv_cache`: the decoder's cache layout (`contract.KV_CACHES`;
    "auto": static, with GroupQueryAttention, wherever the model's attention and `fuse` allow it).
    `progress`: called with each step as a phrase ("exporting the decoder graph").
    `release_weights`: the caller gives `model` up: its weights are freed once every graph is written, and
    the onnxruntime loads that check the graphs run after that (a Beta-sized fp32 decoder does not fit in
    onnxruntime beside the torch model on a 24 GB machine; docs/benchmarks.md)."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision {precision!r} is not supported; choose one of {sorted(PRECISIONS)}")
    kv_cache = resolve_kv_cache(model, kv_cache, fuse)
    output = Path(output)
    tok_file = Path(tokenizer) if tokenizer else source.tokenizer_file
    if tok_file is None or not tok_file.is_file():
        raise ExportError(
            f"no tokenizer found for {source.path}: put tokenizer.json or tokenizer.model in the checkpoint "
            "directory or pass --tokenizer"
        )
    tok_kind = _tokenizer_kind(tok_file)
    try:  # before any work: a destination that may not be written or replaced is refused here
        writer = PackageWriter(output, overwrite=overwrite, sources=[source.path, tok_file])
    except PackageWriteError as e:
        raise ExportError(str(e)) from None
    with writer:
        dims = model_dims(model)
        if PRECISIONS[precision] != torch.float32 and not release_weights:
            model = copy.deepcopy(model)  # Module.to() is in place: never change the caller's model
        model = model.to(PRECISIONS[precision]).eval()
        graphs = {}
        for name in contract.GRAPH_NAMES:
            if progress:
                progress(f"exporting the {name} graph")
            path = writer.path(f"{name}.onnx")
            try:
                with torch.no_grad():
                    export_graph(model, name, path, precision, opset, fuse, _cache_of(name, kv_cache))
                if writes_next_token(name, NP_DTYPES[precision]):
                    add_next_token_file(path)
                if not release_weights:
                    check_graph(path)
            except Exception as e:  # noqa: BLE001 - any exporter failure is reported with the graph name
                raise ExportError(f"exporting the {name} graph failed: {type(e).__name__}: {e}") from e
        stm = model.initial_stm.detach().float().cpu().numpy().astype(NP_DTYPES[precision])
        np.save(writer.path("initial_stm.npy"), stm, allow_pickle=False)
        if release_weights:
            del stm
            _release(model)
            for name in contract.GRAPH_NAMES:
                if progress:
                    progress(f"checking the {name} graph in onnxruntime")
                try:
                    check_graph(writer.path(f"{name}.onnx"))
                except Exception as e:  # noqa: BLE001 - reported with the graph name, nothing committed
                    raise ExportError(f"checking the {name} graph failed: {type(e).__name__}: {e}") from e
        for name in contract.GRAPH_NAMES:
            fdt = NP_DTYPES[precision]
            graphs[name] = writer.graph_entry(
                name, dims, precision, fdt, _cache_of(name, kv_cache), next_token=writes_next_token(name, fdt)
            )
        tok_name = "tokenizer.json" if tok_kind == "tokenizers" else "tokenizer.model"
        writer.copy_in(tok_file, tok_name)
        manifest_json = {
            "format": "rxt-edge-package",
            "format_version": 1,
            "model": dims.to_json(),
            "special_tokens": dict(model.cfg.special_tokens),
            "tokenizer": {"kind": tok_kind, **writer.file_entry(tok_name, size=False)},
            "initial_stm": {**writer.file_entry("initial_stm.npy", size=False), "source": "checkpoint"},
            "graphs": graphs,
            "precision": precision,
            "opset": opset,
            "quantization": None,
            "source": {"format": source.format, "fingerprint": source.fingerprint, "path": source.path},
        }
        try:
            return writer.commit(manifest_json)
        except ManifestError as e:  # e.g. special token ids outside the vocabulary
            raise ExportError(f"the checkpoint does not make a valid package: {e}") from None
