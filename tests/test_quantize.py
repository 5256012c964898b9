"""`rxt-edge quantize`: quantized packages keep the graph contract, load in the runtime, and stay close to the source.

The quality thresholds are set far from what the random-weight tiny package measures (docs/quantization.md)
and far from what a broken graph gives: `test_thresholds_catch_a_broken_graph` scrambles the quantized weights
and checks that the same thresholds fail. Chance level for greedy/top-1 agreement is 1/300 here. Free-running
greedy agreement is the loosest check: on a random model one early flip changes the rest of the answer.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from rxt_edge.bench.quant_report import compare_packages, kl_divergence, positional_agreement
from rxt_edge.export.quantize import (
    BLOCK_SCHEMES,
    DYNAMIC_PRESETS,
    QuantizeError,
    Scope,
    head_gemm_to_matmul,
    optimum_preset,
    quantize_package,
)

from rxt_edge import contract
from rxt_edge.manifest import load_manifest, sha256_file, write_manifest
from rxt_edge.session import RxTSession

# scheme -> (min teacher-forced top-1 agreement, max mean KL in nats, min greedy token agreement)
THRESHOLDS = {
    "int8": (0.85, 1e-3, 0.1),
    "int4": (0.7, 2e-2, 0.03),
    "int8-dynamic": (0.85, 1e-3, 0.1),
    "fp16": (0.95, 1e-4, 0.5),
}
QUANT_OPS = {
    "int8": {"MatMulNBits"},
    "int4": {"MatMulInt4", "MatMulInt4Bias"},  # MatMulNBits inside rxt_edge function calls (matmul_kernel)
    "int8-dynamic": {"MatMulInteger", "DynamicQuantizeMatMul"},
}
# The CPU schemes with their own code path; int8-block / int4-block are int8 / int4 with block 32
# (tests/test_quantize_schemes.py checks their settings).
CPU_SCHEMES = tuple(QUANT_OPS)


def _report(source: Path, quantized: Path, **kw):
    return compare_packages(source, quantized, max_new_tokens=16, threads=1, **kw)


def _check_quality(report, scheme: str) -> list[str]:
    top1, kl, greedy = THRESHOLDS[scheme]
    fails = []
    if report.teacher_forced_top1_agreement < top1:
        fails.append(f"top-1 {report.teacher_forced_top1_agreement:.3f} < {top1}")
    if not report.mean_kl <= kl:
        fails.append(f"KL {report.mean_kl:.2e} > {kl}")
    if report.greedy_token_agreement < greedy:
        fails.append(f"greedy {report.greedy_token_agreement:.3f} < {greedy}")
    return fails


@pytest.fixture(scope="module")
def quantized(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory):
    """scheme -> quantized package directory (default scope), built once per module."""
    root = tmp_path_factory.mktemp("quantized")
    done: dict[str, Path] = {}

    def get(scheme: str) -> Path:
        if scheme not in done:
            done[scheme] = quantize_package(tiny_package, root / scheme, scheme).output
        return done[scheme]

    return get


@pytest.mark.parametrize("scheme", CPU_SCHEMES)
def test_cpu_scheme_manifest_and_graphs(tiny_package: Path, quantized, scheme: str) -> None:
    out = quantized(scheme)
    src, man = load_manifest(tiny_package), load_manifest(out)
    q = man.quantization
    assert man.precision == scheme and q["scheme"] == scheme
    assert q["source_fingerprint"] == src.fingerprint()
    assert q["graphs"] == [contract.DECODER] and q["head"] is True
    assert q["preset"] == ("avx2" if scheme == "int8-dynamic" else None)
    if scheme != "int8-dynamic":
        cfg = BLOCK_SCHEMES[scheme]
        assert (q["bits"], q["block_size"], q["accuracy_level"]) == (int(scheme[3]), cfg.block_size, 4)
    assert man.graphs[contract.DECODER].precision == scheme
    for name in (contract.ENCODER, contract.MEMORY_UPDATE, contract.MEMORY_KV):  # untouched, same bytes
        assert man.graphs[name].precision == "fp32"
        assert man.graphs[name].sha256 == src.graphs[name].sha256
    for name in contract.GRAPH_NAMES:  # the I/O contract is unchanged
        assert man.graphs[name].inputs == src.graphs[name].inputs
        assert man.graphs[name].outputs == src.graphs[name].outputs
    assert man.initial_stm.sha256 == src.initial_stm.sha256
    assert man.tokenizer.sha256 == src.tokenizer.sha256

    graph = onnx.load(str(out / "decoder.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert ops & QUANT_OPS[scheme]
    assert "Gemm" not in ops  # the head was rewritten to MatMul and quantized
    inits = {t.name for t in graph.graph.initializer}
    float_weights = [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert float_weights == []  # every linear layer, head included, is quantized
    # 2 layers x 6 matrix products (self q/k/v merged, out; cross q, out; FFN in, out) + head
    assert q["quantized_nodes"]["decoder"] >= 2 * 6 + 1
    # everything but the weight products is left alone: attention (GroupQueryAttention and its in-place KV
    # cache in the static-cache decoder), norms, rotary embedding, the embedding lookup
    before = Counter(n.op_type for n in onnx.load(str(tiny_package / "decoder.onnx")).graph.node)
    after = Counter(n.op_type for n in graph.graph.node)
    for op in ("GroupQueryAttention", "RotaryEmbedding", "Gather", "Softmax"):
        assert after[op] == before[op], op
    for node in (n for n in graph.graph.node if n.op_type == "MatMulNBits"):  # int8 / int4: as configured
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        cfg = BLOCK_SCHEMES[scheme]
        block = min(cfg.block_size, 1 << (attrs["K"].bit_length() - 1))  # no block longer than K
        assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (cfg.bits, block, 4)
        assert len(node.input) < 4 or not node.input[3]  # symmetric: no zero points
    # int4: calls of rxt_edge.MatMulInt4 (A, B, scales and maybe the bias: no zero points), the body as configured
    calls = [n for n in graph.graph.node if n.op_type in ("MatMulInt4", "MatMulInt4Bias")]
    for function in (f for f in graph.functions if f.name in ("MatMulInt4", "MatMulInt4Bias")):
        body = function.node[0]  # (then the bias Add, in MatMulInt4Bias)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in body.attribute if not a.ref_attr_name}
        cfg = BLOCK_SCHEMES[scheme]
        assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (cfg.bits, cfg.block_size, 4)
    assert bool(calls) == (scheme == "int4")
    assert all(len(n.input) == (4 if n.op_type == "MatMulInt4Bias" else 3) for n in calls)
    assert any(n.op_type == "MatMulInt4Bias" for n in calls) == (scheme == "int4")  # the FF's bias taken in
    sess = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [t.name for t in src.graphs["decoder"].inputs]


@pytest.mark.parametrize("scheme", CPU_SCHEMES)
def test_cpu_scheme_report_within_thresholds(tiny_package: Path, quantized, scheme: str) -> None:
    out = quantized(scheme)
    report = _report(tiny_package, out)
    assert _check_quality(report, scheme) == []
    assert report.stm_drift == [0.0] * report.turns  # memory graphs untouched: bit-identical STM
    assert report.sizes["quantized"]["decoder"] < report.sizes["source"]["decoder"]
    assert report.size_ratio < 1.0
    for side in ("source", "quantized"):
        t = report.timing[side]
        assert t.decode_ms_per_token > 0 and t.prompt_ms > 0 and t.memory_update_ms > 0
    data = json.loads(json.dumps(report.to_json()))
    assert data["scheme"] == scheme and data["final_stm_drift"] == 0.0
    assert data["recall"] is None  # no demo recipe beside a temporary package


@pytest.mark.parametrize("scheme", CPU_SCHEMES)
def test_runtime_runs_quantized_package(quantized, scheme: str) -> None:
    with RxTSession.load(quantized(scheme), threads=1) as session:
        conv = session.conversation()
        first = conv.interact_ids([10, 11, 12], max_new_tokens=8)
        conv.interact_ids([13, 14], max_new_tokens=8)
        stm = conv.stm()
    assert 1 <= len(first) <= 8
    assert np.isfinite(stm).all() and stm.shape == session.package.stm_shape


def _scramble(package: Path, dest: Path) -> Path:
    """A copy whose quantized decoder weights are permuted: same shapes and ops, wrong numbers."""
    shutil.copytree(package, dest)
    model = onnx.load(str(dest / "decoder.onnx"))
    rng = np.random.default_rng(0)
    for i, t in enumerate(model.graph.initializer):
        if t.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8) and len(t.dims) >= 2:
            a = numpy_helper.to_array(t).copy()
            flat = a.reshape(-1)
            rng.shuffle(flat)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(flat.reshape(a.shape), t.name))
    onnx.save(model, str(dest / "decoder.onnx"))
    man = load_manifest(dest)
    data = man.to_json()
    data["graphs"]["decoder"]["sha256"] = sha256_file(dest / "decoder.onnx")
    data["graphs"]["decoder"]["size"] = (dest / "decoder.onnx").stat().st_size
    write_manifest(dest, type(man).from_json(data))
    return dest


@pytest.mark.parametrize("scheme", ["int8-dynamic", "int4"])
def test_thresholds_catch_a_broken_graph(tiny_package: Path, quantized, tmp_path: Path, scheme: str) -> None:
    broken = _scramble(quantized(scheme), tmp_path / "broken")
    report = _report(tiny_package, broken, speed=False)
    fails = _check_quality(report, scheme)
    assert any(f.startswith("top-1") for f in fails), fails
    assert any(f.startswith("KL") for f in fails), fails


def test_memory_graphs_in_int8_drift_but_stay_bounded(tiny_package: Path, tmp_path: Path) -> None:
    scope = Scope(graphs=contract.GRAPH_NAMES, head=True, embedding=False)
    out = quantize_package(tiny_package, tmp_path / "all", "int8-dynamic", scope=scope).output
    man = load_manifest(out)
    assert {g.precision for g in man.graphs.values()} == {"int8-dynamic"}
    assert man.quantization["graphs"] == list(contract.GRAPH_NAMES)
    report = _report(tiny_package, out, speed=False)
    assert _check_quality(report, "int8-dynamic") == []
    assert 0.0 < report.final_stm_drift < 0.05  # measured ~0.01 after 6 turns
    assert all(d < 0.05 for d in report.stm_drift)


def test_fp16_package_is_float16_throughout(tiny_package: Path, tmp_path: Path) -> None:
    out = quantize_package(tiny_package, tmp_path / "fp16", "fp16").output
    man = load_manifest(out)
    assert man.precision == "fp16" and man.quantization["graphs"] == list(contract.GRAPH_NAMES)
    for g in man.graphs.values():
        assert g.precision == "fp16"
        assert {t.dtype for t in g.inputs + g.outputs} <= {"float16", "int32", "int64"}  # int32: seqlens_k
    assert np.load(out / "initial_stm.npy").dtype == np.float16
    report = _report(tiny_package, out, speed=False)
    assert _check_quality(report, "fp16") == []
    assert report.final_stm_drift < 0.01
    with RxTSession.load(
        out, threads=1
    ) as session:  # the runtime allocates float16 buffers from the manifest
        conv = session.conversation()
        assert conv.interact_ids([10, 11], max_new_tokens=4)
        assert conv.stm().dtype == np.float16


@pytest.mark.parametrize("preset", sorted(DYNAMIC_PRESETS))
def test_dynamic_presets_set_weight_type(tiny_package: Path, tmp_path: Path, preset: str) -> None:
    out = quantize_package(tiny_package, tmp_path / preset, "int8-dynamic", preset=preset).output
    q = load_manifest(out).quantization
    expected = DYNAMIC_PRESETS[preset]
    assert q["preset"] == preset and q["weight_type"] == expected.weight_type
    assert q["per_channel"] is True
    model = onnx.load(str(out / "decoder.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    types = {
        inits[n.input[1]].data_type
        for n in model.graph.node
        if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") and n.input[1] in inits
    }
    want = onnx.TensorProto.UINT8 if expected.weight_type == "uint8" else onnx.TensorProto.INT8
    assert types == {want}


@pytest.mark.parametrize("preset", sorted(DYNAMIC_PRESETS))
def test_presets_match_optimum_where_installed(preset: str) -> None:
    theirs = optimum_preset(preset)
    if theirs is None:
        pytest.skip("optimum-onnx is not installed")
    assert theirs == DYNAMIC_PRESETS[preset]


def test_head_rewrite_keeps_the_logits(tiny_package: Path) -> None:
    model = onnx.load(str(tiny_package / "decoder.onnx"))
    dims = load_manifest(tiny_package).model
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert head_gemm_to_matmul(rewritten, dims.vocab_size) == 1
    assert "Gemm" not in {n.op_type for n in rewritten.graph.node}
    rng = np.random.default_rng(1)
    feeds: dict[str, np.ndarray] = {}
    # from the graph's own inputs, so that every decoder variant is fed: 3 new tokens after 2 cached ones
    for spec in ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).get_inputs():
        shape = [{"batch": 1, "past_seq": 2}.get(d, 1) if isinstance(d, str) else d for d in spec.shape]
        if spec.name == "input_ids":
            feeds[spec.name] = rng.integers(5, 300, (1, 3), dtype=np.int64)
        elif spec.name == contract.SEQLENS:
            feeds[spec.name] = np.full(shape, 2 + 3 - 1, dtype=np.int32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)

    def logits(m: onnx.ModelProto) -> np.ndarray:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(["logits"], feeds)[0]

    np.testing.assert_allclose(logits(rewritten), logits(model), rtol=1e-5, atol=1e-5)


def test_per_tensor_weights_have_one_scale_per_matrix(tiny_package: Path, tmp_path: Path) -> None:
    """`--per-tensor` (per_channel=False): every quantized weight gets a single scale, the manifest says so, and
    the quality stays within the int8-dynamic thresholds; the CLI flag reaches the same setting."""
    from rxt_edge.apps.cli import app
    from typer.testing import CliRunner

    def weight_scale_sizes(package: Path) -> set[int]:
        model = onnx.load(str(package / "decoder.onnx"))
        inits = {t.name: t for t in model.graph.initializer}
        return {
            int(np.prod(inits[n.input[3]].dims))  # MatMulInteger b_zero_point: the shape of the weight scale
            for n in model.graph.node
            if n.op_type == "MatMulInteger" and len(n.input) > 3 and n.input[3] in inits
        }

    per_tensor = quantize_package(tiny_package, tmp_path / "pt", "int8-dynamic", per_channel=False).output
    per_channel = quantize_package(tiny_package, tmp_path / "pc", "int8-dynamic").output
    assert weight_scale_sizes(per_tensor) == {1} and max(weight_scale_sizes(per_channel)) > 1
    assert load_manifest(per_tensor).quantization["per_channel"] is False
    assert _check_quality(_report(tiny_package, per_tensor), "int8-dynamic") == []
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "quantize",
            str(tiny_package),
            "-o",
            str(out),
            "--scheme",
            "int8-dynamic",
            "--per-tensor",
            "--no-report",
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_manifest(out).quantization["per_channel"] is False
    with pytest.raises(QuantizeError, match="int8-dynamic only"):
        quantize_package(tiny_package, tmp_path / "b", "int4-block", per_channel=False)
    assert not (tmp_path / "b").exists()


def test_bad_requests_are_refused_and_leave_nothing(tiny_package: Path, quantized, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="^scheme: 'int3'"):
        quantize_package(tiny_package, tmp_path / "a", "int3")
    with pytest.raises(QuantizeError, match="^preset: .*int8-dynamic only"):
        quantize_package(tiny_package, tmp_path / "a", "int4-block", preset="avx2")
    with pytest.raises(QuantizeError, match="^preset: 'sse2'"):
        quantize_package(tiny_package, tmp_path / "a", "int8-dynamic", preset="sse2")
    with pytest.raises(QuantizeError, match="^graphs: unknown"):
        quantize_package(tiny_package, tmp_path / "a", "int8-dynamic", scope=Scope(graphs=("head",)))
    with pytest.raises(QuantizeError, match="^embedding: int8-block"):
        quantize_package(
            tiny_package, tmp_path / "a", "int8-block", scope=Scope((contract.DECODER,), embedding=True)
        )
    with pytest.raises(QuantizeError, match="precision is 'int8-dynamic'"):
        quantize_package(quantized("int8-dynamic"), tmp_path / "a", "int4-block")
    assert list(tmp_path.iterdir()) == []  # nothing created, no staging left behind

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(QuantizeError, match="already exists"):
        quantize_package(tiny_package, existing, "int8-dynamic")
    assert (existing / "keep.txt").read_text() == "mine"


def test_failure_midway_leaves_no_package(tiny_package: Path, tmp_path: Path, monkeypatch) -> None:
    from rxt_edge.export import quantize as q

    def boom(*a, **k):
        raise RuntimeError("quantizer exploded")

    monkeypatch.setattr(q, "quantize_graph_block", boom)
    with pytest.raises(QuantizeError, match="decoder graph .*quantizer exploded"):
        quantize_package(tiny_package, tmp_path / "out", "int4-block")
    assert list(tmp_path.iterdir()) == []


def test_output_gets_ordinary_permissions_and_overwrite_failure_keeps_the_old(
    tiny_package: Path, tmp_path: Path, monkeypatch
) -> None:
    """Staging comes from mkdtemp (0700) and the manifest from mkstemp (0600): the finished package must be as
    readable as a plain mkdir; a failed --overwrite must leave the previous package whole."""
    import os

    from rxt_edge.export import quantize as q

    out = tmp_path / "int8"
    umask = os.umask(0o022)
    try:
        quantize_package(tiny_package, out, "int8-dynamic")
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o755
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {f.name: 0o644 for f in out.iterdir()}
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def boom(*a, **k):
        raise RuntimeError("quantizer exploded")

    monkeypatch.setattr(q, "quantize_graph_block", boom)
    with pytest.raises(QuantizeError, match="quantizer exploded"):
        quantize_package(tiny_package, out, "int4-block", overwrite=True)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


def test_cli_quantize_json(tiny_package: Path, tmp_path: Path) -> None:
    from rxt_edge.apps.cli import app
    from typer.testing import CliRunner

    out = tmp_path / "cli"
    args = [
        "quantize",
        str(tiny_package),
        "-o",
        str(out),
        "--block-size",
        "32",
        "--threads",
        "1",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["quantization"]["scheme"] == "int8"  # the default scheme, with the block size asked for
    assert data["quantization"]["block_size"] == 32
    assert data["report"]["teacher_forced_top1_agreement"] >= THRESHOLDS["int8"][0]
    assert data["report"]["timing"]["quantized"]["decode_ms_per_token"] > 0
    assert load_manifest(out).precision == "int8"
    again = CliRunner().invoke(app, args)  # refuses to overwrite, exit code 2 with the reason
    assert again.exit_code == 2 and "already exists" in " ".join(again.output.split())  # rich wraps lines


def _contents(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _cli_quantize(source: Path, output: Path) -> tuple[int, str]:
    from rxt_edge.apps.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        app, ["quantize", str(source), "-o", str(output), "--overwrite", "--no-report"]
    )
    return result.exit_code, " ".join(result.output.split())  # rich wraps lines


@pytest.mark.parametrize("target", ["models", "models/pkg", "models/pkg/q8"])
def test_overwrite_never_deletes_the_source_or_its_siblings(
    tiny_package: Path, tmp_path: Path, target
) -> None:
    """Issue 20: `rxt-edge quantize models/pkg -o models --overwrite --no-report` deleted the source package and
    everything beside it."""
    models = tmp_path / "models"
    shutil.copytree(tiny_package, models / "pkg")
    shutil.copytree(tiny_package, models / "other")
    (models / "notes.txt").write_text("mine")
    before = _contents(tmp_path)
    code, out = _cli_quantize(models / "pkg", tmp_path / target)
    assert code == 2, out
    assert "the source" in out and "separate new directory" in out
    assert _contents(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_overwrite_never_replaces_a_user_directory(tiny_package: Path, tmp_path: Path) -> None:
    """Issue 20: `quantize ... -o ~/somedir --overwrite` deleted the user's files."""
    somedir = tmp_path / "home" / "somedir"
    (somedir / "photos").mkdir(parents=True)
    (somedir / "photos" / "cat.jpg").write_bytes(b"meow")
    before = _contents(somedir)
    code, out = _cli_quantize(tiny_package, somedir)
    assert code == 2, out
    assert "has no manifest.json" in out and "--overwrite replaces only a model package" in out
    assert _contents(somedir) == before and sorted(p.name for p in somedir.parent.iterdir()) == ["somedir"]


def test_kl_and_agreement_metrics() -> None:
    rng = np.random.default_rng(0)
    p = rng.standard_normal((4, 50))
    assert np.allclose(kl_divergence(p, p), 0.0, atol=1e-12)
    assert np.allclose(kl_divergence(p, p + 3.0), 0.0, atol=1e-12)  # logits are shift-invariant
    q = rng.standard_normal((4, 50))
    kl = kl_divergence(p, q)
    ps = np.exp(p) / np.exp(p).sum(-1, keepdims=True)
    qs = np.exp(q) / np.exp(q).sum(-1, keepdims=True)
    np.testing.assert_allclose(kl, (ps * np.log(ps / qs)).sum(-1), rtol=1e-10)
    assert (kl > 0).all()
    assert positional_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.75
    assert positional_agreement([1, 2], [1, 2, 3, 4]) == 0.5  # a shorter answer counts as misses
    assert positional_agreement([], []) == 1.0


def test_recall_is_measured_on_given_probes(tiny_package: Path, quantized, monkeypatch) -> None:
    """Recall probes passed in (the demo recipe's, as bench/demo_quant_table.py passes them) give recall per
    delay for both packages; without probes there is no recall section."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "models" / "demo" / "recipe"))
    import demo_dialogues

    probes = demo_dialogues.recall_probes(2, 0, delays=(1, 2, 4, 8))
    report = compare_packages(
        tiny_package,
        quantized("int8-dynamic"),
        max_new_tokens=4,
        speed=False,
        recall_probes=probes,
        threads=1,
    )
    assert set(report.recall) == {"source", "quantized"}
    for side in report.recall.values():
        assert list(side) == ["1", "2", "4", "8"]
        assert all(0.0 <= v <= 1.0 for v in side.values())
    no_recall = compare_packages(tiny_package, quantized("int8-dynamic"), max_new_tokens=4, speed=False)
    assert no_recall.recall is None


def test_recall_hit_is_a_whole_word_match() -> None:
    from rxt_edge.bench.quant_report import contains_value

    assert contains_value("You live in Paris.", "paris")
    assert not contains_value("You live in Parisville.", "Paris")
    assert contains_value("It is New York, I think", "New York")


def test_fp16_conversion_folds_rope_tables() -> None:
    """Sin/Cos of a constant become initializers before the fp16 conversion (onnxruntime cannot fold float16
    Sin/Cos at load: on CUDA they ran every step); an angle table something else still reads stays."""
    from onnx import TensorProto, helper, numpy_helper
    from rxt_edge.export.constant_tables import fold_trig_tables

    angles = np.linspace(0, 50, 64, dtype=np.float32).reshape(16, 4)
    nodes = [
        helper.make_node("Cos", ["angles"], ["cos"]),
        helper.make_node("Sin", ["angles"], ["sin"]),
        helper.make_node("Sin", ["x"], ["sx"]),  # not a constant: stays
        helper.make_node("Add", ["sx", "cos"], ["a"]),
        helper.make_node("Add", ["a", "sin"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 4])
    init = [numpy_helper.from_array(angles, "angles")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], init))
    assert fold_trig_tables(model) == 2
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert set(inits) == {"cos", "sin"} and [n.op_type for n in model.graph.node] == ["Sin", "Add", "Add"]
    np.testing.assert_allclose(inits["cos"], np.cos(angles.astype(np.float64)), rtol=0, atol=6e-8)
    np.testing.assert_allclose(inits["sin"], np.sin(angles.astype(np.float64)), rtol=0, atol=6e-8)
    shared = helper.make_model(
        helper.make_graph([nodes[0], helper.make_node("Add", ["angles", "cos"], ["y"])], "g", [], [y], init)
    )
    assert fold_trig_tables(shared) == 1 and {t.name for t in shared.graph.initializer} == {"angles", "cos"}
