"""The model-package manifest (`manifest.json`): what a package holds, and the checks that make it safe.

The exporter writes it, the runtime reads it. Everything a runtime needs to allocate buffers and bind the
graphs is here (dims, special ids, each graph's resolved I/O from `contract.graph_io`, the ONNX operators the
graphs need), so a runtime in another language can work from the manifest alone.

The structure (every key, required or optional, its type and range) is declared once, in the JSON Schema
`manifest.schema.json` shipped beside this module; the loader validates with that very file
(`_schema`, a dependency-free subset of JSON Schema), so the schema, docs/graph-contract.md and this loader
cannot disagree. What a schema cannot say (ids below `vocab_size`, graph I/O equal to the contract for the
dims, one float dtype, ...) is checked here, after the schema.

Compatibility: a reader accepts every `format_version` up to `FORMAT_VERSION` and refuses newer ones.
Fields are strict (unknown keys are errors, so typos are caught): adding a field means bumping
`FORMAT_VERSION` and the schema. The one open-ended part is `quantization` (the quantizer's extra keys).
Version 2 added `requires` (always written; optional on read, so version-1 packages still load); version 3 the
decoder's `kv_cache` layout (absent: "dynamic", as every earlier package) and the `int32` dtype its `seqlens_k`
input uses; also the optional top-level `system_prompt` (false: the model was not trained with system prompts and
the runtime refuses one; absent: true); version 4 the `memory_kv` form of the graphs that carry the memory
cross-attention K/V (absent: "float"; "int8" with its scales, `contract.MEMORY_KVS`) and the `int8` tensor dtype;
version 5 the "expanded" form (K/V repeated per query head, GPU packages) and `model.cross_query_heads` it needs;
version 6 the decoder's optional `next_token` output (the greedy pick computed in the graph, GPU packages).

Every error is a `ManifestError` whose message starts with the field path, e.g.
`graphs.decoder.inputs[3].shape: expected [...], got [...]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from . import _schema
from ._atomic import atomic_write_bytes
from .contract import ModelDims, TensorSpec, graph_io

FORMAT = "rxt-edge-package"
FORMAT_VERSION = 6


def format_version_needed(manifest: dict[str, Any]) -> int:
    """The lowest `format_version` that can describe `manifest` (JSON form): what writers stamp, so that a package
    using nothing newer stays readable by the runtimes already installed (version 3 covers all but `memory_kv`,
    version 4 all but the "expanded" form and `model.cross_query_heads`, version 5 all but `next_token`)."""
    graphs = manifest.get("graphs", {}).values()
    if any(g.get("next_token") for g in graphs):
        return 6
    forms = {g.get("memory_kv", "float") for g in graphs}
    if "expanded" in forms or manifest.get("model", {}).get("cross_query_heads"):
        return 5
    return 4 if forms - {"float"} else 3


MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "manifest.schema.json"  # package data of `rxt_edge`


class ManifestError(ValueError):
    """The package manifest (or a file it names) is missing, malformed, unsafe or does not match."""


@dataclass(frozen=True)
class FileRef:
    """A file inside the package with its sha256 (and byte size when known, to name truncation)."""

    file: str
    sha256: str
    size: int | None = None
    source: str | None = None  # initial_stm only: "checkpoint" | "zeros" (the schema's enum)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"file": self.file, "sha256": self.sha256}
        if self.size is not None:
            d["size"] = self.size
        if self.source is not None:
            d["source"] = self.source
        return d


@dataclass(frozen=True)
class TokenizerEntry:
    kind: str  # "tokenizers" (tokenizer.json) | "sentencepiece" (.model)
    file: str
    sha256: str | None = None

    @property
    def ref(self) -> FileRef | None:
        return None if self.sha256 is None else FileRef(self.file, self.sha256)

    def to_json(self) -> dict:
        d = {"kind": self.kind, "file": self.file}
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        return d


@dataclass(frozen=True)
class GraphEntry:
    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str  # "fp32" | "fp16" | "int8-dynamic" | ...
    external_data: tuple[FileRef, ...] = ()
    size: int | None = None
    kv_cache: str = "dynamic"  # decoder only: contract.KV_CACHES
    memory_kv: str = "float"  # decoder, memory_update, memory_kv: contract.MEMORY_KVS
    next_token: bool = False  # decoder only: it also outputs the greedy pick (contract.NEXT_TOKEN)

    @property
    def ref(self) -> FileRef:
        return FileRef(self.file, self.sha256, self.size)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"file": self.file, "sha256": self.sha256}
        if self.size is not None:
            d["size"] = self.size
        if self.external_data:
            d["external_data"] = [r.to_json() for r in self.external_data]
        d["inputs"] = [t.to_json() for t in self.inputs]
        d["outputs"] = [t.to_json() for t in self.outputs]
        d["precision"] = self.precision
        if self.kv_cache != "dynamic":
            d["kv_cache"] = self.kv_cache
        if self.memory_kv != "float":
            d["memory_kv"] = self.memory_kv
        if self.next_token:
            d["next_token"] = True
        return d


@dataclass(frozen=True)
class SourceEntry:
    """The checkpoint the package was exported from."""

    format: str  # "rxlm" | "native" | ...
    fingerprint: str  # sha256 hex of the source weights
    path: str  # informational only: never opened by the runtime

    def to_json(self) -> dict:
        return {"format": self.format, "fingerprint": self.fingerprint, "path": self.path}


@dataclass(frozen=True)
class Requirements:
    """What the graphs need from an ONNX runtime: operator types per domain, opset version per domain.

    Union over the four graphs; domain "" is the default ONNX domain (ai.onnx). Computed from the graph files
    when a package is written (`graph_check.package_requirements`), so a runtime can refuse a package it
    cannot run before loading any graph."""

    ops: dict[str, tuple[str, ...]]
    opset: dict[str, int]

    def to_json(self) -> dict:  # as read (writers sort): the fingerprint is that of the file's JSON
        return {"ops": {d: list(o) for d, o in self.ops.items()}, "opset": dict(self.opset)}


def _created_by() -> str:
    try:
        from importlib.metadata import version

        return f"rxt-edge {version('rxt-edge')}"
    except Exception:  # not installed as a distribution (e.g. vendored)
        return "rxt-edge"


@dataclass(frozen=True)
class Manifest:
    model: ModelDims
    special_tokens: dict[str, int]
    tokenizer: TokenizerEntry
    initial_stm: FileRef
    graphs: dict[str, GraphEntry]
    precision: str
    opset: int
    source: SourceEntry
    quantization: dict[str, Any] | None = None
    requires: Requirements | None = None  # None only for format_version 1 packages
    system_prompt: bool = True  # False: never trained with one; `Conversation.set_system_prompt` refuses it
    created_by: str = field(default_factory=_created_by)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        d = {
            "format": FORMAT,
            "format_version": self.format_version,
            "created_by": self.created_by,
            "model": self.model.to_json(),
            "special_tokens": dict(self.special_tokens),
            "tokenizer": self.tokenizer.to_json(),
            "initial_stm": self.initial_stm.to_json(),
            "graphs": {name: g.to_json() for name, g in self.graphs.items()},
            "precision": self.precision,
            "opset": self.opset,
            "quantization": None if self.quantization is None else dict(self.quantization),
            "source": self.source.to_json(),
        }
        if self.requires is not None:  # absent, not null, in version-1 manifests: their fingerprint stays
            d["requires"] = self.requires.to_json()
        if not self.system_prompt:  # written only when false: earlier packages keep their fingerprint
            d["system_prompt"] = False
        return d

    @staticmethod
    def from_json(d: Any) -> Manifest:
        """Validate and parse; raises ManifestError (never anything else) on any malformed input."""
        return _parse_manifest(d)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no spaces, ASCII): identifies the model for snapshots."""
        canon = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canon.encode("ascii")).hexdigest()

    def file_refs(self) -> list[tuple[str, FileRef]]:
        """(field path, FileRef) of every hashed file in the package."""
        refs = [("initial_stm", self.initial_stm)]
        if self.tokenizer.ref is not None:
            refs.append(("tokenizer", self.tokenizer.ref))
        for name, g in self.graphs.items():
            refs.append((f"graphs.{name}", g.ref))
            refs += [(f"graphs.{name}.external_data[{i}]", r) for i, r in enumerate(g.external_data)]
        return refs

    def all_files(self) -> list[tuple[str, str]]:
        """(field path, relative path) of every file the manifest names, hashed or not."""
        files = [(p, r.file) for p, r in self.file_refs()]
        if self.tokenizer.ref is None:
            files.append(("tokenizer.file", self.tokenizer.file))
        return files


# ---------------------------------------------------------------- files


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def resolve_file(package_dir: str | os.PathLike[str], relpath: str, field: str = "file") -> Path:
    """The absolute path of a package file, refusing any path that leaves the package (symlinks included)."""
    _check_relpath(relpath, field)
    try:
        root = Path(package_dir).resolve()
        target = (root / relpath).resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop (Python < 3.13)
        raise ManifestError(f"{field}: cannot resolve {relpath!r}: {e}") from e
    if target == root or not target.is_relative_to(root):
        raise ManifestError(f"{field}: {relpath!r} resolves outside the package directory ({target})")
    return target


def verify_file(package_dir: str | os.PathLike[str], ref: FileRef, field: str | None = None) -> Path:
    """Resolve `ref` inside the package and check its size and sha256; returns the path."""
    field = field or ref.file
    path = resolve_file(package_dir, ref.file, field)
    if not path.exists():
        raise ManifestError(f"{field}: {ref.file!r} is missing from the package {Path(package_dir)}")
    if not path.is_file():
        raise ManifestError(f"{field}: {ref.file!r} is not a regular file")
    size = path.stat().st_size
    if ref.size is not None and size != ref.size:
        how = "truncated" if size < ref.size else "altered (too long)"
        raise ManifestError(
            f"{field}: {ref.file!r} is {how}: {size} bytes, expected {ref.size}; re-export or re-download the package"
        )
    digest = sha256_file(path)
    if digest != ref.sha256:
        raise ManifestError(
            f"{field}: {ref.file!r} does not match its sha256 (file altered or truncated; re-export or "
            f"re-download the package): expected {ref.sha256}, got {digest}"
        )
    return path


def verify_files(package_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Check every hashed file of the package (reads them all: seconds for a large model)."""
    for path, ref in manifest.file_refs():
        verify_file(package_dir, ref, path)


MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def load_manifest(package_dir: str | os.PathLike[str]) -> Manifest:
    """Read and validate `manifest.json`, and confine every file it names to the package directory."""
    root = Path(package_dir)
    mpath = root / MANIFEST_FILE
    if not root.is_dir():
        raise ManifestError(f"{root}: not a directory (expected an rxt-edge package directory)")
    try:
        info = os.stat(mpath)
        # never open a FIFO or device (opening blocks, reading never ends); a manifest is a few KB
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{mpath}: {MANIFEST_FILE!r} is not a regular file")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"{mpath}: {info.st_size} bytes, more than a manifest may be ({MAX_MANIFEST_BYTES})"
            )
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{mpath}: missing; {root} is not an rxt-edge package") from None
    except OSError as e:
        raise ManifestError(f"{mpath}: cannot read: {e}") from e
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ManifestError(f"{mpath}: not valid JSON ({e})") from e
    try:
        manifest = Manifest.from_json(data)
        for fpath, rel in manifest.all_files():
            resolve_file(root, rel, fpath)
    except ManifestError as e:
        raise ManifestError(f"{mpath}: {e}") from e
    return manifest


def write_manifest(package_dir: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Validate, then write `manifest.json` atomically (temp file + os.replace); returns its path."""
    data = manifest.to_json()
    Manifest.from_json(data)  # the writer never produces what the reader would refuse
    path = Path(package_dir) / MANIFEST_FILE
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    return path


# ---------------------------------------------------------------- validation


@cache
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of `manifest.json` (format_version `FORMAT_VERSION`), read from the package data."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator() -> _schema.Validator:
    return _schema.Validator(manifest_schema(), {"rxt-relpath": _relpath_format})


def _err(path: str, msg: str) -> ManifestError:
    return ManifestError(f"{path}: {msg}" if path else msg)


_at = _schema.at


def _check_relpath(v: Any, path: str) -> str:
    """A portable relative path: '/' separators, no absolute or drive paths, no '..'."""
    if not isinstance(v, str) or not v:
        raise _err(path, f"expected a relative file path, got {_schema.kind(v)}")
    if "\0" in v or "\\" in v:
        raise _err(path, f"{v!r}: use '/' as the separator (no backslashes or NUL)")
    if PurePosixPath(v).is_absolute() or PureWindowsPath(v).drive or PureWindowsPath(v).root:
        raise _err(path, f"{v!r}: absolute paths are not allowed; paths are relative to the package")
    if ".." in PurePosixPath(v).parts:
        raise _err(path, f"{v!r}: '..' is not allowed; files must stay inside the package")
    return v


def _relpath_format(v: str, path: str) -> None:
    _check_relpath(v, path)  # the schema's pattern says the same; this names the exact problem


def _file_ref(d: dict) -> FileRef:
    size = d.get("size")
    return FileRef(d["file"], d["sha256"], None if size is None else int(size), d.get("source"))


def _tensor(d: dict) -> TensorSpec:
    shape = tuple(s if isinstance(s, str) else int(s) for s in d["shape"])
    return TensorSpec(d["name"], d["dtype"], shape)


def _model(d: dict) -> ModelDims:
    dims = ModelDims.from_json(d)
    if dims.memory_layers > dims.decoder_layers:
        raise _err("model.memory_layers", "cannot exceed decoder_layers (memory layers are decoder layers)")
    return dims


def _special_tokens(d: dict, vocab_size: int) -> dict[str, int]:
    out = {k: int(v) for k, v in d.items()}
    for k, tid in out.items():
        if tid >= vocab_size:
            raise _err(_at("special_tokens", k), f"expected an integer in [0, {vocab_size - 1}], got {tid}")
    return out


def _graph(d: dict, path: str, name: str, dims: ModelDims) -> GraphEntry:
    size = d.get("size")
    entry = GraphEntry(
        file=d["file"],
        sha256=d["sha256"],
        inputs=tuple(_tensor(t) for t in d["inputs"]),
        outputs=tuple(_tensor(t) for t in d["outputs"]),
        precision=d["precision"],
        external_data=tuple(_file_ref(r) for r in d.get("external_data", [])),
        size=None if size is None else int(size),
        kv_cache=d.get("kv_cache", "dynamic"),
        memory_kv=d.get("memory_kv", "float"),
        next_token=d.get("next_token", False),
    )
    if entry.next_token and name != "decoder":
        raise _err(_at(path, "next_token"), "only the decoder outputs the greedy pick")
    if entry.kv_cache != "dynamic" and name != "decoder":
        raise _err(_at(path, "kv_cache"), "only the decoder has a self-attention cache")
    if entry.memory_kv != "float" and name == "encoder":
        raise _err(_at(path, "memory_kv"), "the encoder does not carry the memory K/V")
    heads, kv = dims.cross_query_heads, dims.cross_kv_heads
    if entry.memory_kv == "expanded" and (heads < kv or heads % kv):
        raise _err(
            "model.cross_query_heads",
            f"the memory_kv form 'expanded' needs the query heads, a multiple of cross_kv_heads ({kv}); got {heads}",
        )
    # The I/O float dtype is what the graph declares (fp16 graphs take fp16 I/O; int8 ones usually fp32).
    floats = [t.dtype for t in entry.inputs + entry.outputs if t.dtype.startswith("float")]
    expected_in, expected_out = graph_io(
        dims, name, floats[0] if floats else "float32", entry.kv_cache, entry.memory_kv, entry.next_token
    )
    _compare_io(entry.inputs, expected_in, _at(path, "inputs"))
    _compare_io(entry.outputs, expected_out, _at(path, "outputs"))
    return entry


def _compare_io(got: tuple[TensorSpec, ...], expected: list[TensorSpec], path: str) -> None:
    for i, (g, e) in enumerate(zip(got, expected, strict=False)):
        for attr in ("name", "dtype", "shape"):
            gv, ev = getattr(g, attr), getattr(e, attr)
            if gv != ev:
                show = (lambda x: json.dumps(list(x))) if attr == "shape" else repr
                raise _err(
                    _at(_at(path, i), attr),
                    f"expected {show(ev)}, got {show(gv)} (the graph contract for the model dims)",
                )
    if len(got) != len(expected):
        first = expected[len(got)].name if len(got) < len(expected) else got[len(expected)].name
        what = "missing" if len(got) < len(expected) else "unexpected"
        raise _err(path, f"expected {len(expected)} tensors, got {len(got)} (first {what}: {first!r})")


def _quantization(v: dict | None) -> dict[str, Any] | None:
    if v is None:
        return None
    try:  # extras are free-form but must be plain JSON, so the fingerprint is well defined
        return json.loads(json.dumps(v, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError, RecursionError) as e:
        raise _err("quantization", f"must be plain JSON ({e})") from None


def _requirements(d: dict | None) -> Requirements | None:
    if d is None:
        return None
    for domain in d["ops"]:
        if domain not in d["opset"]:
            raise _err(
                _at("requires.opset", domain), "missing (every domain in requires.ops needs a version)"
            )
    return Requirements(
        ops={k: tuple(v) for k, v in d["ops"].items()}, opset={k: int(v) for k, v in d["opset"].items()}
    )


def _version(v: dict) -> int:
    """format_version, checked before the schema: a newer package may have keys this schema does not know."""
    if v.get("format") != FORMAT:
        raise _err(
            "format", f"expected {FORMAT!r}, got {v.get('format')!r}: not an rxt-edge package manifest"
        )
    if "format_version" not in v:
        raise _err("format_version", "missing")
    version = v["format_version"]
    if not _schema.is_integer(version) or version < 1:
        raise _err("format_version", f"expected an integer >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise _err(
            "format_version",
            f"{version} is newer than this runtime supports ({FORMAT_VERSION}): the package was made by a newer "
            "rxt-edge; upgrade (pip install -U rxt-edge)",
        )
    return int(version)


def _parse_manifest(v: Any) -> Manifest:
    if not isinstance(v, dict):
        raise _err("", f"manifest: expected a JSON object, got {_schema.kind(v)}")
    version = _version(v)
    try:
        _validator().validate(v)
    except _schema.SchemaViolation as e:
        raise ManifestError(str(e)) from None
    except RecursionError:
        raise ManifestError("manifest: nested too deeply") from None
    dims = _model(v["model"])
    tk = v["tokenizer"]
    graphs = {name: _graph(g, _at("graphs", name), name, dims) for name, g in v["graphs"].items()}
    forms = {g.memory_kv for name, g in graphs.items() if name != "encoder"}
    if len(forms) > 1:  # the memory graphs write what the decoder reads
        raise _err(
            "graphs", f"the graphs disagree on memory_kv ({', '.join(sorted(forms))}): one form for all"
        )
    return Manifest(
        model=dims,
        special_tokens=_special_tokens(v["special_tokens"], dims.vocab_size),
        tokenizer=TokenizerEntry(tk["kind"], tk["file"], tk.get("sha256")),
        initial_stm=_file_ref(v["initial_stm"]),
        graphs=graphs,
        precision=v["precision"],
        opset=int(v["opset"]),
        source=SourceEntry(**v["source"]),
        quantization=_quantization(v.get("quantization")),
        requires=_requirements(v.get("requires")),
        system_prompt=v.get("system_prompt", True),
        created_by=v["created_by"],
        format_version=version,
    )
