"""A model package on disk: manifest checked, files verified, tokenizer and initial STM loaded.

Hostile files cost nothing: only regular files are opened (a FIFO or device named `manifest.json` or
`initial_stm.npy` never blocks the load), sizes are checked before anything is read, the initial STM's `.npy`
header is checked against the model's STM shape before its data is read, and an unreadable file is a
ManifestError naming it. The tokenizer must not produce ids the model does not have.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import contract
from .graph_check import check_graphs
from .manifest import MANIFEST_FILE, Manifest, ManifestError, load_manifest, resolve_file, verify_files
from .tokenizer import Tokenizer, load_tokenizer

# A manifest is kilobytes; this bound only keeps a hostile one from filling memory.
MAX_MANIFEST_BYTES = 64 << 20


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
        return graph_float_dtype(self.manifest)


def graph_float_dtype(manifest: Manifest) -> np.dtype:
    """The float type of the graphs' I/O: that of the decoder's `past_key.0` (either cache layout)."""
    (spec,) = [s for s in manifest.graphs["decoder"].inputs if s.name == contract.past_key(0)]
    return np.dtype(spec.dtype)


def load_package(directory: str | os.PathLike[str], verify_hashes: bool = True) -> ModelPackage:
    """Load and check a package; `verify_hashes` reads every file once to compare its sha256 (default on).

    The graphs' structure and external-data references are checked either way (see `graph_check`), so
    onnxruntime never opens a file outside the package or one the manifest does not list."""
    directory = Path(directory)
    if directory.is_dir():
        regular_file(directory / MANIFEST_FILE, MANIFEST_FILE, MAX_MANIFEST_BYTES)
    manifest = load_manifest(directory)
    for field, rel in manifest.all_files():
        regular_file(resolve_file(directory, rel, field), field)
    try:
        if verify_hashes:
            verify_files(directory, manifest)
        check_graphs(directory, manifest)
    except OSError as e:  # e.g. PermissionError while hashing
        raise ManifestError(f"cannot read {e.filename or 'a package file'}: {e.strerror or e}") from None
    d = manifest.model
    special = sorted(set(manifest.special_tokens.values()))
    tok_path = resolve_file(directory, manifest.tokenizer.file, "tokenizer.file")
    tokenizer = load_tokenizer(manifest.tokenizer.kind, tok_path, special)
    if tokenizer.vocab_size > d.vocab_size:
        raise ManifestError(
            f"tokenizer: {manifest.tokenizer.file!r} has {tokenizer.vocab_size} tokens, more than the model's "
            f"vocabulary ({d.vocab_size}): text would encode to ids the model cannot read"
        )
    stm_path = resolve_file(directory, manifest.initial_stm.file, "initial_stm.file")
    dtype = graph_float_dtype(manifest)
    stm = _load_initial_stm(stm_path, (d.memory_layers, 1, d.stm_slots, d.dim))
    return ModelPackage(directory, manifest, tokenizer, np.ascontiguousarray(stm.astype(dtype)))


def regular_file(path: Path, field: str, max_bytes: int | None = None) -> int:
    """The size of `path`, or ManifestError if it is not a readable regular file (at most `max_bytes`).

    Checked before opening: opening a FIFO blocks until a writer appears, and a device never ends."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ManifestError(f"{field}: {path.name!r} is missing from the package") from None
    except OSError as e:
        raise ManifestError(f"{field}: cannot read {path.name!r}: {e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ManifestError(f"{field}: {path.name!r} is not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise ManifestError(f"{field}: {path.name!r} is {info.st_size} bytes, more than {max_bytes} allowed")
    if not os.access(path, os.R_OK):
        raise ManifestError(f"{field}: cannot read {path.name!r}: permission denied")
    return info.st_size


def _load_initial_stm(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The `.npy` array, after its header says a float array of exactly `shape` that the file really holds."""
    bad = f"initial_stm: {path.name} is not a readable .npy array"
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ManifestError(f"{bad} (unsupported .npy version {version})")
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            got, fortran, dtype = read_header(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except ManifestError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise ManifestError(f"{bad} ({e})") from None
    if dtype.hasobject:
        raise ManifestError(f"{bad} (it holds Python objects, which only pickle can load; refused)")
    if tuple(got) != shape:
        raise ManifestError(f"initial_stm: shape {tuple(got)} does not match the model's STM {shape}")
    if dtype.kind != "f":
        raise ManifestError(f"initial_stm: dtype {dtype} is not a floating-point type")
    if size < offset + math.prod(shape) * dtype.itemsize:
        raise ManifestError(
            f"initial_stm: {path.name} is truncated ({size} bytes for a {shape} {dtype} array)"
        )
    try:
        stm = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ManifestError(f"{bad} ({e})") from None
    if not np.isfinite(stm).all():
        raise ManifestError(f"initial_stm: {path.name} contains NaN or Inf")
    return stm
