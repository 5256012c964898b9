"""The package manifest: round trip, validation messages, path confinement, file verification, fuzzing; the
JSON Schema the loader validates with (agreement with the `jsonschema` package and the docs), `requires`."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxt_edge.contract import GRAPH_NAMES, ModelDims, graph_io
from rxt_edge.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    FileRef,
    GraphEntry,
    Manifest,
    ManifestError,
    Requirements,
    SourceEntry,
    TokenizerEntry,
    load_manifest,
    manifest_schema,
    resolve_file,
    sha256_file,
    verify_file,
    verify_files,
    write_manifest,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "models" / "demo" / "package", ROOT / "models" / "demo" / "package-int8"]
REQUIRES = Requirements(
    {"": ("Add", "MatMul"), "com.microsoft": ("RotaryEmbedding",)}, {"": 18, "com.microsoft": 1}
)
DIMS = ModelDims(
    vocab_size=300,
    dim=32,
    decoder_layers=3,
    memory_layers=2,
    stm_slots=8,
    head_dim=8,
    self_kv_heads=2,
    cross_kv_heads=2,
    max_seq_len=64,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_manifest(files: dict[str, bytes] | None = None, dtype: str = "float32") -> Manifest:
    """A valid manifest; `files` (relpath -> content) supplies real hashes where given."""
    files = files or {}

    def ref(name: str, **kw) -> FileRef:
        data = files.get(name, name.encode())
        return FileRef(name, _sha(data), size=len(data), **kw)

    graphs = {}
    for g in GRAPH_NAMES:
        ins, outs = graph_io(DIMS, g, dtype)
        r = ref(f"{g}.onnx")
        graphs[g] = GraphEntry(r.file, r.sha256, tuple(ins), tuple(outs), "fp32", size=r.size)
    return Manifest(
        model=DIMS,
        special_tokens={"bos": 1, "eos": 2, "query": 3, "answer": 4, "pad": 0, "think": 5},
        tokenizer=TokenizerEntry("tokenizers", "tokenizer.json", ref("tokenizer.json").sha256),
        initial_stm=ref("initial_stm.npy", source="zeros"),
        graphs=graphs,
        precision="fp32",
        opset=23,
        source=SourceEntry("native", "ab" * 32, "/checkpoints/model.safetensors"),
        quantization=None,
        requires=REQUIRES,
    )


def make_package(tmp_path: Path) -> tuple[Path, Manifest]:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    names = ["tokenizer.json", "initial_stm.npy"] + [f"{g}.onnx" for g in GRAPH_NAMES]
    files = {n: os.urandom(100) + n.encode() for n in names}
    for n, data in files.items():
        (pkg / n).write_bytes(data)
    m = make_manifest(files)
    write_manifest(pkg, m)
    return pkg, m


def test_round_trip_and_fingerprint_stable():
    m = make_manifest()
    j = m.to_json()
    assert j["format"] == "rxt-edge-package" and j["format_version"] == FORMAT_VERSION
    m2 = Manifest.from_json(json.loads(json.dumps(j)))
    assert m2 == m
    assert m2.fingerprint() == m.fingerprint()
    assert len(m.fingerprint()) == 64


def test_fingerprint_changes_with_content():
    m = make_manifest()
    j = m.to_json()
    j["graphs"]["decoder"]["sha256"] = "cd" * 32
    assert Manifest.from_json(j).fingerprint() != m.fingerprint()


def test_fp16_graph_io_accepted_and_mixed_dtype_rejected():
    m = make_manifest(dtype="float16")
    assert Manifest.from_json(m.to_json()).graphs["decoder"].inputs[1].dtype == "float16"
    j = m.to_json()
    j["graphs"]["decoder"]["outputs"][0]["dtype"] = "float32"
    with pytest.raises(ManifestError, match=r"graphs\.decoder\.outputs\[0\]\.dtype"):
        Manifest.from_json(j)


def test_write_and_load(tmp_path):
    pkg, m = make_package(tmp_path)
    assert load_manifest(pkg) == m
    verify_files(pkg, m)
    assert not [p for p in pkg.iterdir() if p.name.endswith(".tmp")]


def _mutated(mutate) -> dict:
    j = make_manifest().to_json()
    mutate(j)
    return j


@pytest.mark.parametrize(
    "mutate, where",
    [
        (
            lambda j: j["graphs"]["decoder"]["inputs"][3].__setitem__("shape", [1, 2]),
            r"graphs\.decoder\.inputs\[3\]\.shape",
        ),
        (lambda j: j["graphs"]["decoder"]["inputs"].pop(), r"graphs\.decoder\.inputs: expected \d+ tensors"),
        (
            lambda j: j["graphs"]["encoder"]["inputs"][0].__setitem__("name", "ids"),
            r"graphs\.encoder\.inputs\[0\]\.name",
        ),
        (
            lambda j: j["graphs"]["memory_kv"]["outputs"][0].__setitem__("dtype", "bfloat16"),
            r"graphs\.memory_kv\.outputs\[0\]\.dtype",
        ),
        (
            lambda j: j["graphs"].__setitem__("vision", j["graphs"]["decoder"]),
            r"graphs\.vision: unknown field \(the schema defines: decoder, encoder, memory_update, memory_kv\)",
        ),
        (lambda j: j["graphs"].pop("memory_update"), r"graphs\.memory_update: missing"),
        (lambda j: j["model"].pop("stm_slots"), r"model\.stm_slots: missing"),
        (lambda j: j["model"].__setitem__("dim", "32"), r"model\.dim: expected an integer"),
        (lambda j: j["model"].__setitem__("dim", True), r"model\.dim: expected an integer"),
        (lambda j: j["model"].__setitem__("memory_layers", 9), r"model\.memory_layers"),
        (lambda j: j["special_tokens"].pop("answer"), r"special_tokens\.answer: missing"),
        (
            lambda j: j["special_tokens"].__setitem__("eos", 300),
            r"special_tokens\.eos: expected an integer in \[0, 299\]",
        ),
        (lambda j: j["tokenizer"].__setitem__("kind", "tiktoken"), r"tokenizer\.kind"),
        (lambda j: j.__setitem__("precison", "fp32"), r"precison: unknown field"),
        (lambda j: j.__setitem__("format", "onnx"), r"format: .*not an rxt-edge package"),
        (lambda j: j["initial_stm"].__setitem__("sha256", "xyz"), r"initial_stm\.sha256: expected a sha256"),
        (lambda j: j["source"].__setitem__("fingerprint", "AB" * 32), r"source\.fingerprint"),
        (lambda j: j.__setitem__("opset", 23.5), r"opset: expected an integer"),
        (lambda j: j["special_tokens"].__setitem__("mask", 7), r"special_tokens\.mask: unknown field"),
        (lambda j: j["initial_stm"].__setitem__("source", "random"), r"initial_stm\.source: expected one of"),
        (
            lambda j: j["graphs"]["decoder"].__setitem__("size", None),
            r"graphs\.decoder\.size: expected an integer",
        ),
        (lambda j: j["requires"]["opset"].pop("com.microsoft"), r"requires\.opset\.com\.microsoft: missing"),
        (lambda j: j["requires"]["ops"][""].append("Add"), r'requires\.ops\[""\]\[2\]: duplicate item'),
        (lambda j: j["requires"].__setitem__("providers", []), r"requires\.providers: unknown field"),
        (
            lambda j: j.__setitem__("quantization", {"scheme": "int8"}),
            r"quantization\.source_fingerprint: missing",
        ),
        (
            lambda j: j["graphs"]["decoder"].__setitem__("external_data", {}),
            r"graphs\.decoder\.external_data: expected an array",
        ),
    ],
)
def test_validation_names_the_field(mutate, where):
    with pytest.raises(ManifestError, match=where):
        Manifest.from_json(_mutated(mutate))


def test_newer_format_version_says_upgrade():
    j = _mutated(lambda j: j.__setitem__("format_version", FORMAT_VERSION + 1))
    with pytest.raises(ManifestError, match="newer rxt-edge; upgrade"):
        Manifest.from_json(j)


def test_quantization_extras_kept():
    q = {
        "scheme": "int8-dynamic",
        "source_fingerprint": "f" * 64,
        "per_channel": True,
        "excluded": ["lm_head"],
    }
    m = Manifest.from_json(_mutated(lambda j: j.__setitem__("quantization", q)))
    assert m.quantization == q
    assert m.fingerprint() != make_manifest().fingerprint()


@pytest.mark.parametrize(
    "bad", ["/etc/passwd", "../x.onnx", "a/../../x", "C:/x.onnx", "C:x", "a\\b.onnx", "", "a\0b"]
)
def test_unsafe_paths_rejected_at_parse(bad):
    j = _mutated(lambda j: j["graphs"]["decoder"].__setitem__("file", bad))
    with pytest.raises(ManifestError, match=r"graphs\.decoder\.file"):
        Manifest.from_json(j)


def test_resolve_file_confines_symlinks(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    (pkg / "link.onnx").symlink_to(secret)
    (pkg / "sub" / "dirlink").symlink_to(tmp_path)
    assert resolve_file(pkg, "sub/ok.onnx") == (pkg / "sub" / "ok.onnx").resolve()
    for rel in ("link.onnx", "sub/dirlink/secret.txt"):
        with pytest.raises(ManifestError, match="outside the package"):
            resolve_file(pkg, rel, "graphs.decoder.file")
    with pytest.raises(ManifestError, match="outside the package"):
        resolve_file(pkg, ".")


def test_load_manifest_rejects_symlink_escape(tmp_path):
    pkg, m = make_package(tmp_path)
    outside = tmp_path / "evil.onnx"
    outside.write_bytes(b"evil")
    (pkg / "decoder.onnx").unlink()
    (pkg / "decoder.onnx").symlink_to(outside)
    with pytest.raises(ManifestError, match=r"manifest\.json: graphs\.decoder: .*outside the package"):
        load_manifest(pkg)


def test_verify_file_missing_truncated_altered(tmp_path):
    pkg, m = make_package(tmp_path)
    ref = m.graphs["decoder"].ref
    verify_file(pkg, ref)
    path = pkg / ref.file
    data = path.read_bytes()

    path.write_bytes(data[:-10])
    with pytest.raises(ManifestError, match="truncated"):
        verify_file(pkg, ref, "graphs.decoder")
    with pytest.raises(ManifestError, match="sha256"):  # without a recorded size the hash catches it
        verify_file(pkg, FileRef(ref.file, ref.sha256))

    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(ManifestError, match=r"graphs\.decoder: .*does not match its sha256"):
        verify_file(pkg, ref, "graphs.decoder")

    path.unlink()
    with pytest.raises(ManifestError, match="missing from the package"):
        verify_file(pkg, ref)
    assert sha256_file(pkg / "encoder.onnx") == m.graphs["encoder"].sha256


def test_load_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not a directory"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(ManifestError, match="not an rxt-edge package"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_bytes(b"{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_bytes(b"\xff\xfe")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_write_manifest_refuses_invalid_and_keeps_old(tmp_path, monkeypatch):
    pkg, m = make_package(tmp_path)
    before = (pkg / MANIFEST_FILE).read_bytes()
    bad = Manifest(**{**m.__dict__, "opset": 0})
    with pytest.raises(ManifestError, match="opset"):
        write_manifest(pkg, bad)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(pkg, Manifest(**{**m.__dict__, "opset": 24}))
    monkeypatch.undo()
    assert (pkg / MANIFEST_FILE).read_bytes() == before
    assert sorted(p.name for p in pkg.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    """Every (container path) in a JSON tree, so a mutation can hit any depth."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


VALID = make_manifest().to_json()
ALL_PATHS = [p for p in _paths(VALID) if p]


SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(manifest_schema())


def _parse(j):
    """The loader never raises anything but ManifestError, and accepts nothing the JSON Schema refuses."""
    try:
        Manifest.from_json(j)
    except ManifestError:
        return
    errors = [e.message for e in SCHEMA_VALIDATOR.iter_errors(j)]
    assert not errors, f"the loader accepted what the schema refuses: {errors}"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_arbitrary_json(value):
    _parse(value)
    _parse({**VALID, "model": value})


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_PATHS), json_values, st.sampled_from(["replace", "delete"]))
def test_fuzz_mutated_manifest(path, value, op):
    j = copy.deepcopy(VALID)
    parent = j
    for k in path[:-1]:
        parent = parent[k]
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _parse(j)
