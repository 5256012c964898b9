"""A model package on disk: manifest checked, files verified, tokenizer and initial STM loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .graph_check import check_graphs
from .manifest import Manifest, ManifestError, load_manifest, resolve_file, verify_files
from .tokenizer import Tokenizer, load_tokenizer


@dataclass
class ModelPackage:
    directory: Path
    manifest: Manifest
    tokenizer: Tokenizer
    initial_stm: np.ndarray  # [L, 1, S, D]

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint()

    def graph_path(self, name: str) -> Path:
        return resolve_file(self.directory, self.manifest.graphs[name].file, f"graphs.{name}.file")

    @property
    def stm_shape(self) -> tuple[int, int, int, int]:
        d = self.manifest.model
        return (d.memory_layers, 1, d.stm_slots, d.dim)

    @property
    def float_dtype(self) -> np.dtype:
        return np.dtype(self.manifest.graphs["decoder"].inputs[1].dtype)  # past_key.0


def load_package(directory: str | Path, verify_hashes: bool = True) -> ModelPackage:
    """Load and check a package; `verify_hashes` reads every file once to compare its sha256 (default on).

    The graphs' structure and external-data references are checked either way (see `graph_check`), so
    onnxruntime never opens a file outside the package or one the manifest does not list."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    if verify_hashes:
        verify_files(directory, manifest)
    check_graphs(directory, manifest)
    special = sorted(set(manifest.special_tokens.values()))
    tok_path = resolve_file(directory, manifest.tokenizer.file, "tokenizer.file")
    tokenizer = load_tokenizer(manifest.tokenizer.kind, tok_path, special)
    stm_path = resolve_file(directory, manifest.initial_stm.file, "initial_stm.file")
    try:
        stm = np.load(stm_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ManifestError(f"initial_stm: {stm_path.name} is not a readable .npy array ({e})") from None
    d = manifest.model
    expected = (d.memory_layers, 1, d.stm_slots, d.dim)
    if stm.shape != expected:
        raise ManifestError(f"initial_stm: shape {stm.shape} does not match the model's STM {expected}")
    if stm.dtype.kind != "f":
        raise ManifestError(f"initial_stm: dtype {stm.dtype} is not a floating-point type")
    if not np.isfinite(stm).all():
        raise ManifestError(f"initial_stm: {stm_path.name} contains NaN or Inf")
    pkg = ModelPackage(directory, manifest, tokenizer, stm)
    return ModelPackage(directory, manifest, tokenizer, np.ascontiguousarray(stm.astype(pkg.float_dtype)))
