"""`rxt-edge info`: what a model package is, read from its manifest (no graph is loaded, nothing is run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rxt_edge.contract import max_query_tokens
from rxt_edge.manifest import load_manifest


def package_info(directory: Path) -> dict[str, Any]:
    """Dims, files and sizes, quantization, tokenizer and provenance of a package; raises ManifestError."""
    manifest = load_manifest(directory)
    sizes = {}
    for _, rel in manifest.all_files():
        try:
            sizes[rel] = os.path.getsize(directory / rel)
        except OSError:
            sizes[rel] = None  # named but missing: `rxt-edge chat` would refuse the package
    model = manifest.model.to_json()
    return {
        "package": str(directory),
        "created_by": manifest.created_by,
        "format_version": manifest.format_version,
        "fingerprint": manifest.fingerprint(),
        "precision": manifest.precision,
        "opset": manifest.opset,
        "model": {**model, "max_query_tokens": max_query_tokens(manifest.model.max_seq_len)},
        "files": sizes,
        "total_bytes": sum(n for n in sizes.values() if n is not None),
        "graphs": {name: g.precision for name, g in manifest.graphs.items()},
        "greedy_pick_in_graph": manifest.graphs["decoder"].next_token,
        "quantization": manifest.quantization,
        "tokenizer": {"kind": manifest.tokenizer.kind, "file": manifest.tokenizer.file},
        "special_tokens": dict(manifest.special_tokens),
        "initial_stm": manifest.initial_stm.source or "unknown",
        "source": manifest.source.to_json(),
    }


def info_lines(info: dict[str, Any]) -> list[str]:
    """The human-readable form: one fact per line, short enough for an 80-column terminal."""
    m = info["model"]
    heads = f"K/V heads {m['self_kv_heads']} (self), {m['cross_kv_heads']} (memory), head dim {m['head_dim']}"
    if m.get("cross_query_heads"):
        heads += f"; {m['cross_query_heads']} memory query heads"
    lines = [
        f"package      {info['package']}",
        f"precision    {info['precision']} (opset {info['opset']}, {info['created_by']})",
        f"model        dim {m['dim']}, {m['decoder_layers']} decoder layers, {m['memory_layers']} memory layers",
        f"             {heads}",
        f"memory       {m['memory_layers']} layers x {m['stm_slots']} slots x {m['dim']} "
        f"(initial STM: {info['initial_stm']})",
        f"turn         {m['max_seq_len']} tokens: messages up to {m['max_query_tokens']} tokens",
        *(
            ["decoding     greedy picks in the decoder graph (one id to the host a step)"]
            if info.get("greedy_pick_in_graph")
            else []
        ),
        f"tokenizer    {info['tokenizer']['kind']} ({info['tokenizer']['file']}), vocab {m['vocab_size']}",
    ]
    q = info["quantization"]
    if q:
        detail = [f"preset {q['preset']}"] if q.get("preset") else []
        if "per_channel" in q:
            detail.append("per-channel" if q["per_channel"] else "per-tensor")
        detail.append("graphs: " + ", ".join(q.get("graphs", [])))
        if q.get("memory_kv", "float") != "float":
            detail.append(f"memory K/V {q['memory_kv']}")
        lines.append(f"quantization {q.get('scheme', '?')} ({'; '.join(detail)})")
    else:
        lines.append("quantization none")
    lines.append(f"size         {_mb(info['total_bytes'])} in {len(info['files'])} files")
    for rel, size in info["files"].items():
        lines.append(f"  {rel:<22} {'missing' if size is None else _mb(size)}")
    src = info["source"]
    lines.append(f"source       {src['format']} checkpoint {src['path']}")
    lines.append(f"             weights sha256 {src['fingerprint'][:16]}...")
    lines.append(f"fingerprint  {info['fingerprint'][:16]}... (snapshots are tied to it)")
    return lines


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
