"""Check a package's ONNX graph files before onnxruntime opens them: valid ONNX protobuf, and every file a graph
reads is one the manifest names, inside the package.

Why: an ONNX tensor can keep its bytes in an external file named by a `location` string; onnxruntime opens
whatever that string names (recent versions refuse absolute and escaping paths, older ones did not, and the
`*/_ORT_MEM_ADDR_/*` location reads process memory). So every TensorProto marked external (initializers,
sparse initializers, node attribute tensors, subgraphs and functions, recursively) must name a file that
stays in the package (`manifest.resolve_file`: no absolute path, no `..`, no symlink out) and is listed in
that graph's `external_data` (so hashes cover it), with offset/length inside the file. `EPContext` nodes, which
make a provider load a precompiled blob from a path, are refused too.

The graph is read through mmap with the small wire-format reader in `_protobuf` (no `onnx` dependency): only
message headers are touched, so a graph with gigabytes of inline weights costs little. Every problem is a
`ManifestError` naming the graph; nothing else escapes.

The same scan lists the operators each graph uses (domain, op type) and the opsets it imports: a package's
manifest records them (`requires`, computed by `package_requirements` when the package is written) and
`check_graphs` refuses a manifest whose `requires` does not cover its graphs, so a runtime can trust the
manifest to decide early whether it can run the package.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ._protobuf import LEN, VARINT, Buffer, ProtobufError, fields
from .manifest import GraphEntry, Manifest, ManifestError, Requirements, resolve_file

# ONNX field numbers (onnx.proto): only the ones that can lead to a TensorProto or name a file.
_MODEL_IR_VERSION, _MODEL_GRAPH, _MODEL_OPSET_IMPORT, _MODEL_TRAINING_INFO, _MODEL_FUNCTIONS = 1, 7, 8, 20, 25
_TRAINING_GRAPHS = (1, 2)  # initialization, algorithm
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_FUNCTION_NAME, _FUNCTION_NODE, _FUNCTION_OPSET_IMPORT = 1, 7, 9
_FUNCTION_DOMAIN, _FUNCTION_ATTRIBUTE_PROTO = 10, 11
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2  # OperatorSetIdProto
_OPSET_FIELD = {"model": _MODEL_OPSET_IMPORT, "function": _FUNCTION_OPSET_IMPORT}
DEFAULT_DOMAIN_ALIASES = ("", "ai.onnx")  # both name the default ONNX domain; the manifest writes ""
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

MEMORY_ADDRESS_TAG = "*/_ORT_MEM_ADDR_/*"  # onnxruntime: "offset" is a pointer into process memory
MAX_DEPTH = 100  # protobuf's own default recursion limit

# Which fields of each message hold sub-messages, and of which kind.
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {_MODEL_GRAPH: "graph", _MODEL_TRAINING_INFO: "training", _MODEL_FUNCTIONS: "function"},
    "training": dict.fromkeys(_TRAINING_GRAPHS, "graph"),
    "graph": {
        _GRAPH_NODE: "node",
        _GRAPH_INITIALIZER: "tensor",
        _GRAPH_SPARSE_INITIALIZER: "sparse",
    },
    "function": {_FUNCTION_NODE: "node", _FUNCTION_ATTRIBUTE_PROTO: "attribute"},
    "node": {_NODE_ATTRIBUTE: "attribute"},
    "attribute": {
        _ATTR_T: "tensor",
        _ATTR_TENSORS: "tensor",
        _ATTR_G: "graph",
        _ATTR_GRAPHS: "graph",
        _ATTR_SPARSE: "sparse",
        _ATTR_SPARSES: "sparse",
    },
    "sparse": {_SPARSE_VALUES: "tensor", _SPARSE_INDICES: "tensor"},
}


class _Invalid(Exception):
    """Internal: the graph is not valid ONNX (message says why)."""


@dataclass
class ExternalRef:
    """One TensorProto that keeps its bytes outside the graph file."""

    tensor: str
    entries: dict[str, str] = field(default_factory=dict)  # location, offset, length, checksum, ...


@dataclass
class GraphScan:
    external: list[ExternalRef] = field(default_factory=list)
    op_types: set[str] = field(default_factory=set)
    ops: set[tuple[str, str]] = field(default_factory=set)  # (domain, op type) of every node, nested included
    opset: dict[str, int] = field(default_factory=dict)  # domain -> highest imported version
    functions: set[tuple[str, str]] = field(default_factory=set)  # (domain, name) of model-local functions

    def requirements(self) -> Requirements:
        """What a runtime must provide: the nodes' operators, less calls to the model's own functions."""
        ops: dict[str, set[str]] = {}
        for domain, op in self.ops - self.functions:
            ops.setdefault(domain, set()).add(op)
        return Requirements({d: tuple(sorted(ops[d])) for d in sorted(ops)}, dict(sorted(self.opset.items())))


def _text(v: Buffer, what: str) -> str:
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid(f"{what} is not valid UTF-8") from None


def _walk(buf: Buffer, kind: str, depth: int, scan: GraphScan) -> None:
    if depth > MAX_DEPTH:
        raise _Invalid(f"messages nested more than {MAX_DEPTH} deep")
    children = _CHILDREN.get(kind, {})
    ext: ExternalRef | None = ExternalRef("") if kind == "tensor" else None
    external = False
    names = {  # the strings naming a node's operator or a local function
        "node": {_NODE_OP_TYPE: "", _NODE_DOMAIN: ""},
        "function": {_FUNCTION_NAME: "", _FUNCTION_DOMAIN: ""},
    }.get(kind, {})
    for number, wire, val in fields(buf):
        child = children.get(number)
        if child is not None:
            if wire != LEN:
                raise _Invalid(f"{kind} field {number} should hold a {child} message (wire type {wire})")
            _walk(val, child, depth + 1, scan)  # type: ignore[arg-type]
        elif number in names and wire == LEN:
            names[number] = _text(val, f"{kind} name")  # type: ignore[arg-type]
        elif kind in _OPSET_FIELD and number == _OPSET_FIELD[kind] and wire == LEN:
            domain, version = _opset_id(val)  # type: ignore[arg-type]
            scan.opset[domain] = max(version, scan.opset.get(domain, version))
        elif ext is not None:
            if number == _TENSOR_NAME and wire == LEN:
                ext.tensor = _text(val, "tensor name")  # type: ignore[arg-type]
            elif number == _TENSOR_DATA_LOCATION and wire == VARINT:
                external = external or val == _EXTERNAL
            elif number == _TENSOR_EXTERNAL_DATA:
                if wire != LEN:
                    raise _Invalid(f"tensor external_data has wire type {wire}")
                key, value = _entry(val)  # type: ignore[arg-type]
                ext.entries[key] = value
    if ext is not None and (external or ext.entries):
        scan.external.append(ext)
    if kind == "node" and names[_NODE_OP_TYPE]:
        scan.op_types.add(names[_NODE_OP_TYPE])
        scan.ops.add((_domain(names[_NODE_DOMAIN]), names[_NODE_OP_TYPE]))
    elif kind == "function":
        scan.functions.add((_domain(names[_FUNCTION_DOMAIN]), names[_FUNCTION_NAME]))


def _domain(name: str) -> str:
    return "" if name in DEFAULT_DOMAIN_ALIASES else name


def _opset_id(buf: Buffer) -> tuple[str, int]:
    domain, version = "", 0
    for number, wire, val in fields(buf):
        if number == _OPSET_DOMAIN and wire == LEN:
            domain = _text(val, "opset_import domain")  # type: ignore[arg-type]
        elif number == _OPSET_VERSION and wire == VARINT:
            version = int(val)  # type: ignore[arg-type]
    return _domain(domain), version


def _entry(buf: Buffer) -> tuple[str, str]:
    key = value = ""
    for number, wire, val in fields(buf):
        if number in (_ENTRY_KEY, _ENTRY_VALUE) and wire == LEN:
            s = _text(val, "external_data entry")  # type: ignore[arg-type]
            key, value = (s, value) if number == _ENTRY_KEY else (key, s)
    return key, value


def scan_model(buf: Buffer) -> GraphScan:
    """What an ONNX ModelProto references; `_Invalid`/`ProtobufError` if it is not a well-formed model."""
    scan = GraphScan()
    seen = set()
    for number, wire, _ in fields(buf):
        seen.add((number, wire))
    if (_MODEL_IR_VERSION, VARINT) not in seen:
        raise _Invalid("no ir_version (field 1)")
    if (_MODEL_GRAPH, LEN) not in seen:
        raise _Invalid("no graph (field 7)")
    _walk(buf, "model", 0, scan)
    return scan


def _scan_file(path: Path) -> GraphScan:
    """Scan a graph file through mmap (read-only, unmapped before returning)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise _Invalid("the file is empty")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    problem = None
    try:
        scan = scan_model(view)
    except (_Invalid, ProtobufError) as e:
        problem = str(e)  # keep only the text: the traceback would keep slices of the map alive
    try:
        view.release()
        mm.close()
    except BufferError:  # a slice is still referenced somewhere: the GC unmaps it later
        pass
    if problem is not None:
        raise _Invalid(problem)
    return scan


def _int_entry(ref: ExternalRef, key: str, where: str) -> int | None:
    raw = ref.entries.get(key)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise ManifestError(f"{where}: external data {key} {raw!r} is not a non-negative integer")
    return int(raw)


def check_external_ref(package_dir: Path, name: str, entry: GraphEntry, ref: ExternalRef) -> Path:
    """The package file `ref` reads, after checking it is confined, listed and large enough."""
    where = f"graphs.{name}: tensor {ref.tensor!r} in {entry.file!r}"
    location = ref.entries.get("location")
    if not location:
        raise ManifestError(f"{where}: external data without a location")
    if location == MEMORY_ADDRESS_TAG:
        raise ManifestError(f"{where}: external data location {location!r} reads process memory; refused")
    joined = PurePosixPath(entry.file).parent / location if "\\" not in location else location
    path = resolve_file(package_dir, str(joined), f"{where}: external data location")
    listed = {str(PurePosixPath(r.file)) for r in entry.external_data}
    if str(PurePosixPath(joined)) not in listed:
        raise ManifestError(
            f"{where}: external data file {location!r} is not listed in graphs.{name}.external_data "
            f"(listed: {sorted(listed)}); only hashed package files may be read"
        )
    if not path.is_file():
        raise ManifestError(f"{where}: external data file {location!r} is missing or not a regular file")
    offset = _int_entry(ref, "offset", where) or 0
    length = _int_entry(ref, "length", where)
    size = path.stat().st_size
    if offset > size or (length is not None and offset + length > size):
        raise ManifestError(
            f"{where}: external data [{offset}, {offset + (length or 0)}) lies outside {location!r} "
            f"({size} bytes)"
        )
    return path


def check_graph(package_dir: str | os.PathLike[str], name: str, entry: GraphEntry) -> GraphScan:
    """ManifestError unless graph `name` is valid ONNX whose external data stays in the package; its scan."""
    package_dir = Path(package_dir)
    path = resolve_file(package_dir, entry.file, f"graphs.{name}.file")
    if not path.is_file():
        raise ManifestError(f"graphs.{name}.file: {entry.file!r} is missing or not a regular file")
    try:
        scan = _scan_file(path)
    except (_Invalid, ProtobufError) as e:
        raise ManifestError(f"graphs.{name}: {entry.file!r} is not a valid ONNX model ({e})") from None
    except OSError as e:
        raise ManifestError(f"graphs.{name}: cannot read {entry.file!r}: {e}") from None
    if "EPContext" in scan.op_types:
        raise ManifestError(
            f"graphs.{name}: {entry.file!r} has EPContext nodes (precompiled provider code loaded from "
            "paths); they are not allowed in a package"
        )
    for ref in scan.external:
        check_external_ref(package_dir, name, entry, ref)
    return scan


def check_graphs(package_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Check every graph of the package (see `check_graph`) and that `requires` covers what they use."""
    for name, entry in manifest.graphs.items():
        scan = check_graph(package_dir, name, entry)
        if manifest.requires is not None:
            _check_covered(name, entry.file, scan.requirements(), manifest.requires)


def _check_covered(name: str, file: str, used: Requirements, declared: Requirements) -> None:
    """ManifestError unless the manifest's `requires` lists every operator and opset the graph uses."""
    for domain, ops in sorted(used.ops.items()):
        missing = sorted(set(ops) - set(declared.ops.get(domain, ())))
        if missing:
            raise ManifestError(
                f"requires.ops: graphs.{name} ({file!r}) uses {_names(domain, missing)}, which the manifest does "
                "not list; the manifest does not describe these graphs (re-export or re-quantize the package)"
            )
    for domain, version in sorted(used.opset.items()):
        if version > declared.opset.get(domain, 0):
            raise ManifestError(
                f"requires.opset: graphs.{name} ({file!r}) imports {domain or 'ai.onnx'!r} version {version}, "
                f"the manifest declares {declared.opset.get(domain)}"
            )


def _names(domain: str, ops: Iterable[str]) -> str:
    return ", ".join(f"{domain}.{op}" if domain else op for op in ops)


def package_requirements(package_dir: str | os.PathLike[str], graph_files: Iterable[str]) -> Requirements:
    """`requires` for a manifest: the union of what the graph files (paths relative to the package) use.

    Package writers call this on the staged graphs, after every graph file is final."""
    ops: dict[str, set[str]] = {}
    opset: dict[str, int] = {}
    for file in graph_files:
        path = resolve_file(package_dir, file, "graph file")
        try:
            req = _scan_file(path).requirements()
        except (_Invalid, ProtobufError) as e:
            raise ManifestError(f"{file!r} is not a valid ONNX model ({e})") from None
        for domain, names in req.ops.items():
            ops.setdefault(domain, set()).update(names)
        for domain, version in req.opset.items():
            opset[domain] = max(version, opset.get(domain, version))
    return Requirements({d: tuple(sorted(ops[d])) for d in sorted(ops)}, dict(sorted(opset.items())))
