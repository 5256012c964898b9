"""The model-package manifest (`manifest.json`): what a package holds, and the checks that make it safe.

The exporter writes it, the runtime reads it. Everything a runtime needs to allocate buffers and bind the
graphs is here (dims, special ids, each graph's resolved I/O from `contract.graph_io`), so a runtime in
another language can work from the manifest alone.

Compatibility: a reader accepts every `format_version` up to `FORMAT_VERSION` and refuses newer ones.
Fields are strict (unknown keys are errors, so typos are caught): adding a field means bumping
`FORMAT_VERSION`. The open-ended parts are `special_tokens` (extra names), `quantization` (extra keys).

Every error is a `ManifestError` whose message starts with the field path, e.g.
`graphs.decoder.inputs[3].shape: expected [...], got [...]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ._atomic import atomic_write_bytes
from .contract import GRAPH_NAMES, ModelDims, TensorSpec, graph_io
from .tokenizer import TOKENIZER_KINDS

FORMAT = "rxt-edge-package"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
REQUIRED_SPECIAL_TOKENS = ("bos", "eos", "query", "answer", "pad")
REQUIRED_GRAPHS = GRAPH_NAMES
TENSOR_DTYPES = ("float32", "float16", "int64")
MAX_LAYERS = 1024  # sanity bound: keeps a hostile manifest from making graph_io build huge lists
MAX_DIM = 2**31 - 1  # other runtimes may hold dims in int32

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """The package manifest (or a file it names) is missing, malformed, unsafe or does not match."""


@dataclass(frozen=True)
class FileRef:
    """A file inside the package with its sha256 (and byte size when known, to name truncation)."""

    file: str
    sha256: str
    size: int | None = None
    source: str | None = None  # where the content came from; initial_stm: "checkpoint" | "zeros" | ...

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
        return d


@dataclass(frozen=True)
class SourceEntry:
    """The checkpoint the package was exported from."""

    format: str  # "rxlm" | "native" | ...
    fingerprint: str  # sha256 hex of the source weights
    path: str  # informational only: never opened by the runtime

    def to_json(self) -> dict:
        return {"format": self.format, "fingerprint": self.fingerprint, "path": self.path}


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
    created_by: str = field(default_factory=_created_by)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return {
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


def load_manifest(package_dir: str | os.PathLike[str]) -> Manifest:
    """Read and validate `manifest.json`, and confine every file it names to the package directory."""
    root = Path(package_dir)
    mpath = root / MANIFEST_FILE
    if not root.is_dir():
        raise ManifestError(f"{root}: not a directory (expected an rxt-edge package directory)")
    try:
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


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _err(path: str, msg: str) -> ManifestError:
    return ManifestError(f"{path}: {msg}" if path else msg)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _obj(v: Any, path: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
    if not isinstance(v, dict):
        raise _err(path, f"expected an object, got {_kind(v)}")
    required = tuple(required)
    for k in required:
        if k not in v:
            raise _err(_at(path, k), "missing")
    allowed = set(required) | set(optional)
    for k in v:
        if k not in allowed:
            raise _err(
                _at(path, str(k)), f"unknown field (format_version {FORMAT_VERSION} does not define it)"
            )
    return v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise _err(path, f"expected a non-empty string, got {_kind(v)}")
    return v


def _int(v: Any, path: str, lo: int = 0, hi: int = MAX_DIM) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _err(path, f"expected an integer, got {_kind(v)}")
    if not lo <= v <= hi:
        raise _err(path, f"expected an integer in [{lo}, {hi}], got {v}")
    return v


def _sha(v: Any, path: str) -> str:
    if not isinstance(v, str) or not _SHA256.fullmatch(v):
        raise _err(path, "expected a sha256 as 64 lowercase hex digits")
    return v


def _check_relpath(v: Any, path: str) -> str:
    """A portable relative path: '/' separators, no absolute or drive paths, no '..'."""
    if not isinstance(v, str) or not v:
        raise _err(path, f"expected a relative file path, got {_kind(v)}")
    if "\0" in v or "\\" in v:
        raise _err(path, f"{v!r}: use '/' as the separator (no backslashes or NUL)")
    if PurePosixPath(v).is_absolute() or PureWindowsPath(v).drive or PureWindowsPath(v).root:
        raise _err(path, f"{v!r}: absolute paths are not allowed; paths are relative to the package")
    if ".." in PurePosixPath(v).parts:
        raise _err(path, f"{v!r}: '..' is not allowed; files must stay inside the package")
    return v


def _file_ref(v: Any, path: str) -> FileRef:
    d = _obj(v, path, ("file", "sha256"), ("size", "source"))
    return FileRef(
        file=_check_relpath(d["file"], _at(path, "file")),
        sha256=_sha(d["sha256"], _at(path, "sha256")),
        size=None if d.get("size") is None else _int(d["size"], _at(path, "size"), 0, 2**63 - 1),
        source=None if d.get("source") is None else _str(d["source"], _at(path, "source")),
    )


def _tensor(v: Any, path: str) -> TensorSpec:
    d = _obj(v, path, ("name", "dtype", "shape"))
    name = _str(d["name"], _at(path, "name"))
    dtype = d["dtype"]
    if dtype not in TENSOR_DTYPES:
        raise _err(_at(path, "dtype"), f"expected one of {list(TENSOR_DTYPES)}, got {dtype!r}")
    shape = d["shape"]
    if not isinstance(shape, list):
        raise _err(_at(path, "shape"), f"expected an array, got {_kind(shape)}")
    for i, s in enumerate(shape):
        if isinstance(s, str):
            _str(s, _at(_at(path, "shape"), i))
        else:
            _int(s, _at(_at(path, "shape"), i))
    return TensorSpec(name, dtype, tuple(shape))


def _tensors(v: Any, path: str) -> tuple[TensorSpec, ...]:
    if not isinstance(v, list):
        raise _err(path, f"expected an array, got {_kind(v)}")
    return tuple(_tensor(t, _at(path, i)) for i, t in enumerate(v))


def _model(v: Any, path: str) -> ModelDims:
    names = tuple(ModelDims.__dataclass_fields__)
    d = _obj(v, path, names)
    layers = ("decoder_layers", "memory_layers")
    vals = {k: _int(d[k], _at(path, k), 1, MAX_LAYERS if k in layers else MAX_DIM) for k in names}
    if vals["memory_layers"] > vals["decoder_layers"]:
        raise _err(
            _at(path, "memory_layers"), "cannot exceed decoder_layers (memory layers are decoder layers)"
        )
    return ModelDims(**vals)


def _special_tokens(v: Any, path: str, vocab_size: int) -> dict[str, int]:
    if not isinstance(v, dict):
        raise _err(path, f"expected an object, got {_kind(v)}")
    for k in REQUIRED_SPECIAL_TOKENS:
        if k not in v:
            raise _err(_at(path, k), "missing")
    out = {}
    for k, tid in v.items():
        if not isinstance(k, str) or not k:
            raise _err(path, "token names must be non-empty strings")
        out[k] = _int(tid, _at(path, k), 0, vocab_size - 1)
    return out


def _graph(v: Any, path: str, name: str, dims: ModelDims) -> GraphEntry:
    d = _obj(v, path, ("file", "sha256", "inputs", "outputs", "precision"), ("external_data", "size"))
    ext = d.get("external_data", [])
    if not isinstance(ext, list):
        raise _err(_at(path, "external_data"), f"expected an array, got {_kind(ext)}")
    entry = GraphEntry(
        file=_check_relpath(d["file"], _at(path, "file")),
        sha256=_sha(d["sha256"], _at(path, "sha256")),
        inputs=_tensors(d["inputs"], _at(path, "inputs")),
        outputs=_tensors(d["outputs"], _at(path, "outputs")),
        precision=_str(d["precision"], _at(path, "precision")),
        external_data=tuple(_file_ref(r, _at(_at(path, "external_data"), i)) for i, r in enumerate(ext)),
        size=None if d.get("size") is None else _int(d["size"], _at(path, "size"), 0, 2**63 - 1),
    )
    # The I/O float dtype is what the graph declares (fp16 graphs take fp16 I/O; int8 ones usually fp32).
    floats = [t.dtype for t in entry.inputs + entry.outputs if t.dtype != "int64"]
    expected_in, expected_out = graph_io(dims, name, floats[0] if floats else "float32")
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


def _quantization(v: Any, path: str) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _err(path, f"expected null or an object, got {_kind(v)}")
    for k in ("scheme", "source_fingerprint"):
        if k not in v:
            raise _err(_at(path, k), "missing")
    d = v
    _str(d["scheme"], _at(path, "scheme"))
    _str(d["source_fingerprint"], _at(path, "source_fingerprint"))
    try:  # extras are free-form but must be plain JSON, so the fingerprint is well defined
        return json.loads(json.dumps(d, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError, RecursionError) as e:
        raise _err(path, f"must be plain JSON ({e})") from None


def _parse_manifest(v: Any) -> Manifest:
    if not isinstance(v, dict):
        raise _err("", f"manifest: expected a JSON object, got {_kind(v)}")
    if v.get("format") != FORMAT:
        raise _err(
            "format", f"expected {FORMAT!r}, got {v.get('format')!r}: not an rxt-edge package manifest"
        )
    if "format_version" not in v:
        raise _err("format_version", "missing")
    version = _int(v["format_version"], "format_version", 1, 2**31)
    if version > FORMAT_VERSION:
        raise _err(
            "format_version",
            f"{version} is newer than this runtime supports ({FORMAT_VERSION}): the package was made by a newer "
            "rxt-edge; upgrade (pip install -U rxt-edge)",
        )
    required = (
        "format",
        "format_version",
        "created_by",
        "model",
        "special_tokens",
        "tokenizer",
        "initial_stm",
    )
    required += ("graphs", "precision", "opset", "source")
    d = _obj(v, "", required, ("quantization",))
    dims = _model(d["model"], "model")

    tk = _obj(d["tokenizer"], "tokenizer", ("kind", "file"), ("sha256",))
    if tk["kind"] not in TOKENIZER_KINDS:
        raise _err("tokenizer.kind", f"expected one of {list(TOKENIZER_KINDS)}, got {tk['kind']!r}")
    tokenizer = TokenizerEntry(
        kind=tk["kind"],
        file=_check_relpath(tk["file"], "tokenizer.file"),
        sha256=None if tk.get("sha256") is None else _sha(tk["sha256"], "tokenizer.sha256"),
    )

    graphs_raw = d["graphs"]
    if not isinstance(graphs_raw, dict):
        raise _err("graphs", f"expected an object, got {_kind(graphs_raw)}")
    for name in graphs_raw:
        if name not in GRAPH_NAMES:
            raise _err(_at("graphs", str(name)), f"unknown graph; expected one of {list(GRAPH_NAMES)}")
    for name in REQUIRED_GRAPHS:
        if name not in graphs_raw:
            raise _err(_at("graphs", name), "missing")
    graphs = {name: _graph(g, _at("graphs", name), name, dims) for name, g in graphs_raw.items()}

    src = _obj(d["source"], "source", ("format", "fingerprint", "path"))
    return Manifest(
        model=dims,
        special_tokens=_special_tokens(d["special_tokens"], "special_tokens", dims.vocab_size),
        tokenizer=tokenizer,
        initial_stm=_file_ref(d["initial_stm"], "initial_stm"),
        graphs=graphs,
        precision=_str(d["precision"], "precision"),
        opset=_int(d["opset"], "opset", 1, 1000),
        source=SourceEntry(
            format=_str(src["format"], "source.format"),
            fingerprint=_sha(src["fingerprint"], "source.fingerprint"),
            path=_str(src["path"], "source.path"),
        ),
        quantization=_quantization(d.get("quantization"), "quantization"),
        created_by=_str(d["created_by"], "created_by"),
        format_version=version,
    )
