"""The manifest's JSON Schema (rxt_edge/manifest.schema.json): valid draft 2020-12, the shipped manifests pass it
under the `jsonschema` package, the schema and the loader give the same verdict on accepted/refused examples (the
loader adds only the cross-field rules), the docs name every key; and `requires`, what the graphs need from an ONNX
runtime, computed from the graphs, checked against them and enforced by the runtime before loading any graph."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import jsonschema
import pytest
from test_manifest import ROOT, SCHEMA_VALIDATOR, SHIPPED, _mutated, make_manifest

from rxt_edge.contract import GRAPH_NAMES, KV_CACHES, MEMORY_KVS, TENSOR_DTYPES, ModelDims, graph_io
from rxt_edge.graph_check import check_graphs, package_requirements
from rxt_edge.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    Requirements,
    format_version_needed,
    load_manifest,
    manifest_schema,
    verify_files,
)

# ---------------------------------------------------------------- the JSON Schema


def _schema_ok(j) -> bool:
    return SCHEMA_VALIDATOR.is_valid(j)


def _loader_ok(j) -> bool:
    try:
        Manifest.from_json(j)
    except ManifestError:
        return False
    return True


def test_schema_is_valid_draft_2020_12_and_matches_the_code():
    schema = manifest_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    props, defs = schema["properties"], schema["$defs"]
    assert props["format_version"]["maximum"] == FORMAT_VERSION
    fields = ModelDims.__dataclass_fields__
    required = {k for k, f in fields.items() if f.default is dataclasses.MISSING}
    assert set(props["model"]["required"]) == required and set(props["model"]["properties"]) == set(fields)
    assert required < set(fields)  # cross_query_heads: optional, written where a memory K/V form needs it
    assert list(props["graphs"]["properties"]) == list(GRAPH_NAMES)
    assert {"pad", "bos", "eos", "query", "answer"} == set(props["special_tokens"]["required"])
    assert {"unk", "internal"} <= set(props["special_tokens"]["properties"])
    from rxt_edge.tokenizer import TOKENIZER_KINDS

    assert props["tokenizer"]["properties"]["kind"]["enum"] == list(TOKENIZER_KINDS)
    assert defs["tensor"]["properties"]["dtype"]["enum"] == list(TENSOR_DTYPES)
    assert defs["graph"]["properties"]["kv_cache"]["enum"] == list(KV_CACHES)
    assert defs["graph"]["properties"]["memory_kv"]["enum"] == list(MEMORY_KVS)


@pytest.mark.parametrize("package", SHIPPED, ids=lambda p: p.name)
def test_shipped_manifests_validate_and_carry_requires(package):
    raw = json.loads((package / MANIFEST_FILE).read_text())
    SCHEMA_VALIDATOR.validate(raw)
    m = load_manifest(package)
    assert m.format_version == format_version_needed(raw)
    assert m.special_tokens["unk"] == raw["special_tokens"]["unk"]  # the demo's unk is legal
    assert m.requires == package_requirements(package, [g.file for g in m.graphs.values()])
    assert "RotaryEmbedding" in m.requires.ops["com.microsoft"]
    verify_files(package, m)  # only the manifest was regenerated: every other file's hash still holds
    check_graphs(package, m)


def test_int8_demo_records_the_fp32_demo_it_was_quantized_from():
    fp32, int8 = (load_manifest(p) for p in SHIPPED)
    assert int8.quantization["source_fingerprint"] == fp32.fingerprint()


# Examples on which the schema (as the `jsonschema` package reads it) and the loader must give the same verdict.
AGREE = [
    (lambda j: None, True),
    (lambda j: j["special_tokens"].__setitem__("unk", 6), True),
    (lambda j: j["special_tokens"].__setitem__("internal", 7), True),
    (lambda j: j.pop("requires"), True),  # optional on read: version-1 packages have none
    (lambda j: j.pop("quantization"), True),
    (lambda j: j["initial_stm"].__setitem__("source", "checkpoint"), True),
    (lambda j: j["initial_stm"].pop("source"), True),
    (lambda j: j["tokenizer"].pop("sha256"), True),
    (lambda j: j["graphs"]["decoder"].pop("size"), True),
    (
        lambda j: j["graphs"]["decoder"].__setitem__(
            "external_data", [{"file": "d/x.data", "sha256": "a" * 64}]
        ),
        True,
    ),
    (lambda j: j.__setitem__("opset", 23.0), True),  # JSON has one number type: 23.0 is the integer 23
    (
        lambda j: j.__setitem__(
            "quantization", {"scheme": "s", "source_fingerprint": "f", "x": [1, {"y": None}]}
        ),
        True,
    ),
    (
        lambda j: (
            j["requires"]["ops"].__setitem__("ai.onnx.ml", ["X"]),
            j["requires"]["opset"].__setitem__("ai.onnx.ml", 3),
        ),
        True,
    ),
    (lambda j: j["special_tokens"].__setitem__("mask", 7), False),
    (lambda j: j["special_tokens"].__setitem__("unk", -1), False),
    (lambda j: j["special_tokens"].pop("pad"), False),
    (lambda j: j.__setitem__("extra", 1), False),
    (lambda j: j.__setitem__("system_prompt", False), True),  # v3: a model trained without system prompts
    (lambda j: j.__setitem__("system_prompt", "no"), False),
    (lambda j: j["model"].__setitem__("heads", 2), False),
    (lambda j: j["model"].__setitem__("dim", True), False),
    (lambda j: j["model"].__setitem__("dim", 0), False),
    (lambda j: j["model"].__setitem__("decoder_layers", 1025), False),
    (lambda j: j["initial_stm"].__setitem__("source", "random"), False),
    (lambda j: j["initial_stm"].__setitem__("size", -1), False),
    (lambda j: j["tokenizer"].__setitem__("sha256", None), False),
    (lambda j: j["tokenizer"].__setitem__("kind", "tiktoken"), False),
    (
        lambda j: j["graphs"]["decoder"].__setitem__(
            "external_data", [{"file": "x", "sha256": "a" * 64, "source": "s"}]
        ),
        False,
    ),
    (lambda j: j["graphs"]["decoder"]["inputs"][0].__setitem__("dtype", "bfloat16"), False),
    (lambda j: j["graphs"]["decoder"].__setitem__("kv_cache", "paged"), False),
    (lambda j: j["graphs"]["decoder"].__setitem__("kv_cache", "dynamic"), True),
    (lambda j: j["graphs"]["decoder"].__setitem__("kv_cache", "static") or _static_io(j), True),
    (lambda j: j["graphs"]["decoder"]["inputs"][0].__setitem__("shape", ["batch", ""]), False),
    (lambda j: j["graphs"]["decoder"]["inputs"][0].__setitem__("shape", ["batch", -1]), False),
    (lambda j: j["graphs"]["encoder"].__setitem__("precision", ""), False),
    (lambda j: j["source"].__setitem__("fingerprint", "AB" * 32), False),
    (lambda j: j.__setitem__("quantization", {"scheme": "s"}), False),
    (lambda j: j.__setitem__("quantization", []), False),
    (lambda j: j.__setitem__("created_by", ""), False),
    (lambda j: j.__setitem__("format", "onnx"), False),
    (lambda j: j.__setitem__("format_version", 0), False),
    (lambda j: j.__setitem__("format_version", FORMAT_VERSION + 1), False),
    (lambda j: j["requires"]["ops"].__setitem__("bad domain", ["X"]), False),
    (lambda j: j["requires"]["ops"][""].append(""), False),
    (lambda j: j["requires"]["opset"].__setitem__("", 0), False),
    (lambda j: j["requires"].pop("opset"), False),
] + [
    (lambda j, path=path: j["graphs"]["decoder"].__setitem__("file", path), ok)
    for path, ok in [
        ("decoder.onnx", True),
        ("sub/dir/decoder.onnx", True),
        ("..decoder.onnx", True),
        ("a/..b/c", True),
        ("ab:c.onnx", True),
        ("/etc/passwd", False),
        ("../x.onnx", False),
        ("a/../../x", False),
        ("a/..", False),
        ("C:/x.onnx", False),
        ("C:x", False),
        ("a\\b.onnx", False),
        ("", False),
        ("a\0b", False),
    ]
]


def _static_io(j: dict) -> None:
    """The decoder entry's I/O as the static-cache contract declares it for the manifest's dims."""
    ins, outs = graph_io(ModelDims.from_json(j["model"]), "decoder", kv_cache="static")
    j["graphs"]["decoder"]["inputs"] = [t.to_json() for t in ins]
    j["graphs"]["decoder"]["outputs"] = [t.to_json() for t in outs]


@pytest.mark.parametrize("mutate, ok", AGREE)
def test_schema_and_loader_agree(mutate, ok):
    j = _mutated(mutate)
    assert (_schema_ok(j), _loader_ok(j)) == (ok, ok)


# What JSON Schema cannot express: the schema accepts these, the loader's cross-field checks refuse them.
CROSS_FIELD = [
    (
        lambda j: j["special_tokens"].__setitem__("eos", 300),
        r"special_tokens\.eos: expected an integer in \[0, 299\]",
    ),
    (lambda j: j["model"].__setitem__("memory_layers", 9), r"model\.memory_layers: cannot exceed"),
    (lambda j: j["graphs"]["decoder"]["inputs"].pop(), r"graphs\.decoder\.inputs: expected \d+ tensors"),
    (
        lambda j: j["graphs"]["decoder"]["outputs"][0].__setitem__("dtype", "float16"),
        r"decoder\.outputs\[0\]\.dtype",
    ),
    (
        lambda j: j["requires"]["ops"].__setitem__("ai.onnx.ml", ["X"]),
        r"requires\.opset\.ai\.onnx\.ml: missing",
    ),
    (
        lambda j: j["graphs"]["encoder"].__setitem__("kv_cache", "static"),
        r"graphs\.encoder\.kv_cache: only the decoder",
    ),
    (  # a static-cache decoder declaring the dynamic I/O (or the reverse) is not what it claims
        lambda j: j["graphs"]["decoder"].__setitem__("kv_cache", "static"),
        r"graphs\.decoder\.inputs\[1\]\.name: expected 'seqlens_k'",
    ),
    (
        lambda j: _static_io(j),
        r"graphs\.decoder\.inputs\[1\]\.name: expected 'past_key\.0'",
    ),
    (
        lambda j: j.__setitem__(
            "quantization", {"scheme": "s", "source_fingerprint": "f", "x": float("nan")}
        ),
        "plain JSON",
    ),
]


@pytest.mark.parametrize("mutate, where", CROSS_FIELD)
def test_cross_field_rules_are_the_loaders(mutate, where):
    j = _mutated(mutate)
    assert _schema_ok(j)
    with pytest.raises(ManifestError, match=where):
        Manifest.from_json(j)


def test_integral_numbers_are_integers():
    m = Manifest.from_json(_mutated(lambda j: j.__setitem__("opset", 23.0)))
    assert m.opset == 23 and type(m.opset) is int
    assert m.fingerprint() == make_manifest().fingerprint()


def _canonical_sha(j: dict) -> str:
    canon = json.dumps(j, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode("ascii")).hexdigest()


def test_version_1_without_requires_loads_and_keeps_its_fingerprint():
    j = _mutated(lambda j: (j.pop("requires"), j.__setitem__("format_version", 1)))
    m = Manifest.from_json(j)
    assert m.requires is None and m.format_version == 1
    assert "requires" not in m.to_json()  # absent, not null: the fingerprint of an old package is unchanged
    assert m.fingerprint() == _canonical_sha(j)


def test_fingerprint_is_the_canonical_json_of_the_file_as_written():
    """What the doc tells another runtime to compute: the manifest's own JSON, nothing normalized away."""
    j = _mutated(
        lambda j: j["requires"]["ops"].__setitem__("", ["MatMul", "Add"])
    )  # unsorted: kept as written
    assert Manifest.from_json(j).fingerprint() == _canonical_sha(j)
    for package in SHIPPED:
        raw = json.loads((package / MANIFEST_FILE).read_text())
        assert load_manifest(package).fingerprint() == _canonical_sha(raw)


def test_validator_refuses_a_schema_keyword_it_does_not_implement():
    from rxt_edge import _schema

    with pytest.raises(_schema.UnsupportedSchemaError, match="oneOf"):
        _schema.Validator({"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}]}}})


def _schema_keys(schema, out=None) -> set[str]:
    out = set() if out is None else out
    if isinstance(schema, dict):
        out |= set(schema.get("properties", {}))
        for v in schema.values():
            _schema_keys(v, out)
    return out


def test_graph_contract_doc_names_every_manifest_key():
    doc = (ROOT / "docs" / "graph-contract.md").read_text()
    missing = sorted(
        k for k in _schema_keys(manifest_schema()) if f"`{k}`" not in doc and f'"{k}"' not in doc
    )
    assert not missing, f"docs/graph-contract.md does not describe {missing}"
    for value in manifest_schema()["properties"]["initial_stm"]["properties"]["source"]["enum"]:
        assert f'`"{value}"`' in doc or f"`{value}`" in doc


# ---------------------------------------------------------------- requires


def test_check_graphs_refuses_requires_that_do_not_cover_the_graphs():
    package = SHIPPED[0]
    m = load_manifest(package)
    ops = {d: tuple(o for o in names if o != "RotaryEmbedding") for d, names in m.requires.ops.items()}
    with pytest.raises(
        ManifestError, match=r"requires\.ops: graphs\.decoder .*com\.microsoft\.RotaryEmbedding"
    ):
        check_graphs(package, dataclasses.replace(m, requires=Requirements(ops, m.requires.opset)))
    low = Requirements(m.requires.ops, {**m.requires.opset, "": 17})
    with pytest.raises(ManifestError, match=r"requires\.opset: .*'ai\.onnx' version 18"):
        check_graphs(package, dataclasses.replace(m, requires=low))


def test_runtime_refuses_an_operator_domain_onnxruntime_lacks():
    from rxt_edge.runtimes.operators import OperatorUnavailableError, missing_operators

    from rxt_edge import RxTSession
    from rxt_edge.package import load_package

    assert missing_operators({"": ["MatMul"], "com.microsoft": ["RotaryEmbedding"]}) == {}
    assert missing_operators({"com.example": ["Foo"], "": ["NoSuchOp"]}) == {
        "com.example": ["Foo"],
        "": ["NoSuchOp"],
    }
    package = load_package(SHIPPED[1], verify_hashes=False)
    need = {**package.manifest.requires.ops, "com.example.rxt": ("FlashDecode",)}
    requires = Requirements(need, {**package.manifest.requires.opset, "com.example.rxt": 1})
    package.manifest = dataclasses.replace(package.manifest, requires=requires)
    with pytest.raises(
        OperatorUnavailableError, match=r"operator domain 'com\.example\.rxt' \(needed for FlashDecode\)"
    ):
        RxTSession(package)
