"""What one bench run measures, made ready: the fp32 package (a preset's, exported with torch, or the one given),
its quantized copies, the stateless baseline graph and the torch model with the same weights; cached in `workdir`.

Where torch or the source checkpoint is missing, the rows that need them are skipped with a note.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import BenchError, BenchOptions, quant_preset, quant_schemes, quantize_module


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@dataclass
class Prepared:
    label: str
    package: Path
    quantized: list[Path] = field(default_factory=list)
    baseline_dir: Path | None = None
    model: Any = None  # the torch model (same weights as the package), when torch is available
    params: int | None = None
    notes: list[str] = field(default_factory=list)
    rxlm_source: Path | None = None  # the rxlm checkpoint the package was exported from, if it was


def _add_quantized(prep: Prepared, opts: BenchOptions, root: Path, step: Callable[[str], None]) -> None:
    """The quantized rows: `rxt_edge.export.quantize.quantize_package(src, dst, scheme, preset)` per scheme."""
    from rxt_edge.manifest import load_manifest

    schemes = quant_schemes(opts)
    if not schemes:
        return
    if load_manifest(prep.package).precision != "fp32":
        prep.notes.append("the package is not fp32: no quantized row is derived from it")
        return
    q = quantize_module()
    if q is None:
        prep.notes.append("rxt_edge.export.quantize is not available: no quantized row")
        return
    for scheme in schemes:
        preset = quant_preset(opts, scheme)
        per_tensor = opts.quant_per_tensor and scheme == "int8-dynamic"
        form = opts.quant_memory_kv or q.default_memory_kv(prep.package, scheme)
        kv8 = "memory-kv-int8" if form == "int8" else None  # float keeps the name caches had before int8
        name = "-".join(
            x for x in ("package", scheme, preset, "per-tensor" if per_tensor else None, kv8) if x
        )
        dest = root / name
        if not (dest / "manifest.json").is_file():
            step(
                f"quantizing ({scheme}{'' if preset is None else ', ' + preset}{', per-tensor' if per_tensor else ''})"
            )
            try:
                q.quantize_package(
                    prep.package,
                    dest,
                    scheme,
                    preset=preset,
                    overwrite=True,
                    per_channel=False if per_tensor else None,
                    memory_kv=form,
                )
            except Exception as e:  # noqa: BLE001 - reported, the rest of the bench still runs
                prep.notes.append(f"quantization ({scheme}) failed: {type(e).__name__}: {e}")
                continue
        prep.quantized.append(dest)


# what prepare() writes in a preset's folder (a leading dot: a package writer's staging, left by a kill)
_OWN_ENTRY = re.compile(r"preset\.json|checkpoint|\.?baseline(\.[\w.-]+)?|\.?package-[\w.-]+")


def _remove_own_build(root: Path) -> None:
    """Delete a preset's cached build, but only if it holds nothing the bench did not write (`--workdir` is the
    user's: their files are never deleted)."""
    strangers = sorted(p.name for p in root.iterdir() if not _OWN_ENTRY.fullmatch(p.name))
    if strangers:
        raise BenchError(
            f"{root} holds a build of another seed and files the bench did not write ({', '.join(strangers[:5])}); "
            "move them or choose another --workdir"
        )
    shutil.rmtree(root)


def prepare(opts: BenchOptions, workdir: Path, step: Callable[[str], None]) -> Prepared:
    """Packages (fp32, quantized), the baseline graph and the torch model for the run; cached in `workdir`."""
    torch = _torch()
    if opts.config is not None:
        if torch is None:
            raise BenchError(
                "--config builds a random-weight model and needs torch (pip install 'rxt-edge[export]'); "
                "to benchmark without torch, pass an exported MODEL_DIR"
            )
        from rxt_edge.export.presets import PRESETS, param_count

        from .fixtures import export_checkpoint, preset_checkpoint

        if opts.config not in PRESETS:
            raise BenchError(f"unknown --config {opts.config!r}; known: {', '.join(PRESETS)}")
        root = workdir / opts.config
        stamp = {"config": opts.config, "seed": opts.seed}
        if (root / "preset.json").is_file() and json.loads((root / "preset.json").read_text()) != stamp:
            _remove_own_build(root)  # another seed's build
        ckpt = root / "checkpoint"
        if not (ckpt / "config.json").is_file():
            step(f"building {opts.config} (random weights, seed {opts.seed})")
            preset_checkpoint(opts.config, ckpt, seed=opts.seed)
            (root / "preset.json").write_text(json.dumps(stamp))
        pkg, model = export_checkpoint(ckpt, root / "package-fp32", progress=step)
        prep = Prepared(f"preset {opts.config}", pkg, model=model, params=param_count(model))
    else:
        from rxt_edge.manifest import ManifestError, load_manifest

        pkg = Path(opts.model_dir)
        try:
            manifest = load_manifest(pkg)
        except ManifestError as e:
            raise BenchError(str(e)) from None
        root = workdir / f"pkg-{manifest.fingerprint()[:12]}"
        prep = Prepared(str(pkg), pkg)
        if torch is None:
            prep.notes.append("torch is not installed: baseline and PyTorch eager rows skipped")
        else:
            prep.model = _source_model(manifest, prep.notes)
            if prep.model is not None:
                # the reader records "rxlm" or "rxlm-components": its twin is built from that checkpoint
                if manifest.source.format.startswith("rxlm"):
                    prep.rxlm_source = Path(manifest.source.path)
                from rxt_edge.export.presets import param_count

                prep.params = param_count(prep.model)
    if opts.quantize:
        _add_quantized(prep, opts, root, step)
    if opts.baseline != "none" and prep.model is not None:
        from .baseline import META_FILE, export_baseline

        bdir = root / "baseline"
        if not (bdir / META_FILE).is_file():
            step("exporting the stateless baseline")
            export_baseline(prep.model, bdir)
        prep.baseline_dir = bdir
    elif opts.baseline != "none":
        prep.notes.append("no torch model for this package: the stateless baseline was not built")
    return prep


def _source_model(manifest, notes: list[str]):
    """The checkpoint a package was exported from (manifest source.path), if it is still there and unchanged."""
    from rxt_edge.export.checkpoints import CheckpointError, load_checkpoint

    path = Path(manifest.source.path)
    if not path.is_dir():
        notes.append(
            f"the package's source checkpoint {path} is not available: baseline and PyTorch rows skipped"
        )
        return None
    try:
        model, source = load_checkpoint(str(path))
    except CheckpointError as e:
        notes.append(f"the source checkpoint could not be read ({e}): baseline and PyTorch rows skipped")
        return None
    if source.fingerprint != manifest.source.fingerprint:
        notes.append(
            f"{path} changed since the export (fingerprint differs): baseline and PyTorch rows skipped"
        )
        return None
    return model
