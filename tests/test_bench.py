"""`rxt-edge bench` end to end on the tiny preset: the report's structure and sanity, never its timings."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from rxt_edge.apps.cli import app
from rxt_edge.bench.options import BenchError, BenchOptions
from rxt_edge.bench.report import plot_available
from rxt_edge.bench.run import run_bench
from rxt_edge.bench.stats import curve_summary
from typer.testing import CliRunner

from rxt_edge.manifest import load_manifest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # one tiny export + bench (about a minute), shared by the module

TURNS, QUERY, ANSWER = 3, 6, 5
DELAYS = (0.0, 0.02)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny bench through the CLI: (report, workdir, output dir)."""
    out = tmp_path_factory.mktemp("bench")
    args = [
        "bench", "--config", "tiny", "--turns", str(TURNS), "--query-tokens", str(QUERY),
        "--answer-tokens", str(ANSWER), "--typing-delays", ",".join(map(str, DELAYS)), "--speed-turns", "2",
        "--update-turns", "3", "--baseline", "both", "--threads", "1", "--workdir", str(out / "work"),
        "--quantize", "int8-dynamic,int4-block", "--per-tensor",
        "--json-out", str(out / "report.json"), "--markdown", str(out / "report.md"),
    ]  # fmt: skip
    if plot_available():
        args += ["--plot", str(out / "latency.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((out / "report.json").read_text()), out / "work", out


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_latency_curves_have_one_point_per_turn_and_fixed_answers(bench_run):
    report, _, _ = bench_run
    lat = report["latency"]
    assert set(lat) == {"rxt", "baseline", "baseline_cached"}
    for curve in lat.values():
        assert len(curve["ttft_s"]) == len(curve["total_s"]) == TURNS
        assert all(_positive(t) for t in curve["total_s"] + curve["ttft_s"])
        assert all(f <= t for f, t in zip(curve["ttft_s"], curve["total_s"], strict=True))
        assert curve["answer_tokens"] == [ANSWER] * TURNS  # [EOS] never cut an answer short
        for key in ("ratio_total", "ratio_ttft", "ratio_total_window", "ratio_ttft_window"):
            assert _positive(curve[key]), key
        assert curve["torch_imported"] is False  # onnxruntime runs happen in torch-free processes
        assert _positive(curve["peak_rss_mb"])


def test_baseline_rereads_the_whole_conversation(bench_run):
    report, _, _ = bench_run
    per_turn = QUERY + 3 + ANSWER + 1  # [BOS][Q] query [A] answer [EOS]
    expected = [t * per_turn + QUERY + 3 for t in range(TURNS)]
    assert report["latency"]["baseline"]["context_tokens"] == expected
    assert report["latency"]["baseline_cached"]["context_tokens"] == expected
    assert 0 < report["latency"]["baseline"]["params"]


def test_speed_rows_and_reference(bench_run):
    report, _, _ = bench_run
    speed = report["speed"]
    assert speed["threads"] == 1 and speed["decode_tokens"] == ANSWER
    rows = {r["package"]: r for r in speed["runtime"]}
    assert "fp32" in rows
    for row in rows.values():
        for key in ("prompt_ms", "decode_ms_per_token", "memory_update_ms", "peak_rss_mb"):
            assert _positive(row[key]), key
        assert row["package_bytes"] > 0
        assert row["decoder_weight_bytes_per_token"] > 0
        assert _positive(row["bandwidth_floor_ms"]) and _positive(row["floor_ratio"])
        assert _positive(row["speedup_vs_torch"]["decode"])
    engines = [r["engine"] for r in speed["reference"]]
    assert any("rxt-edge model" in e for e in engines)
    for ref in speed["reference"]:
        assert _positive(ref["decode_ms_per_token"]) and _positive(ref["memory_update_ms"])
    try:
        import rxlm  # noqa: F401
    except ImportError:
        return
    (rx,) = [r for r in speed["reference"] if "rxlm" in r["engine"]]
    # the rxlm twin really holds our weights: the first prompt's logits agree
    assert rx["same_weights_first_logits_max_diff"] < 1e-3


def test_quantized_rows_read_fewer_weight_bytes(bench_run):
    """One row per --quantize scheme, in order, each from its own package (--per-tensor: the int8-dynamic one)."""
    report, _, _ = bench_run
    rows = report["speed"]["runtime"]
    assert [r["package"].split(" ")[0] for r in rows] == ["fp32", "int8-dynamic", "int4-block"]
    assert len({r["package"] for r in rows}) == 3
    assert rows[1]["package"].endswith(" per-tensor") and report["settings"]["quant_per_tensor"] is True
    assert "per-tensor" not in rows[2]["package"]  # int8-dynamic rows only
    fp32, int8, int4 = (r["decoder_weight_bytes_per_token"] for r in rows)
    assert int4 < int8 < fp32


def test_memory_update_section_per_typing_delay(bench_run):
    report, _, _ = bench_run
    upd = report["memory_update"]
    assert [u["typing_delay_s"] for u in upd] == list(DELAYS)
    for u in upd:
        assert 0.0 <= u["turns_waited_share"] <= 1.0
        assert _positive(u["memory_update_ms"]) and u["mean_wait_ms"] >= 0


def test_machine_targets_and_plot(bench_run):
    report, _, out = bench_run
    assert report["schema"] == "rxt-edge-bench/1"
    assert report["machine"]["logical_cpus"] >= 1 and report["machine"]["onnxruntime"]
    assert report["machine"]["rxt_edge_kernels"].startswith(
        ("on:", "off", "not built", "not available", "unusable")
    )
    assert _positive(report["bandwidth"]["gb_per_s"])
    assert report["targets"] and all(t["met"] in (True, False, None) for t in report["targets"])
    if plot_available():
        assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    for row in ("| RxT (rxt-edge) |", "| stateless baseline (re-reads) |", "| fp32 |"):
        assert row in md


def test_package_bench_runs_without_torch(bench_run, tmp_path):
    """A package is benchmarked in a process where torch cannot be imported: the torch rows are skipped."""
    _, work, _ = bench_run
    out = tmp_path / "r.json"
    argv = [
        "rxt-edge", "bench", str(work / "tiny" / "package-fp32"), "--turns", "2", "--query-tokens", "4",
        "--answer-tokens", "3", "--typing-delays", "0", "--speed-turns", "1", "--update-turns", "2",
        "--quantize", "none", "--threads", "1", "--workdir", str(tmp_path / "w"), "--json-out", str(out),
    ]  # fmt: skip
    code = f"import sys; sys.modules['torch'] = None; sys.argv = {argv!r}; from rxt_edge.apps.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["latency"]) == {"rxt"}
    assert report["speed"]["reference"] == []
    assert any("torch is not installed" in n for n in report["notes"])
    assert _positive(report["speed"]["runtime"][0]["decode_ms_per_token"])


def test_baseline_graph_matches_torch_and_cache_reuse_changes_nothing(bench_run):
    import torch
    from rxt_edge.bench.baseline import META_FILE, StatelessChat, baseline_dims, baseline_module
    from rxt_edge.export.checkpoints import load_checkpoint

    _, work, _ = bench_run
    model, _ = load_checkpoint(str(work / "tiny" / "checkpoint"))
    bdir = work / "tiny" / "baseline"
    assert (bdir / META_FILE).is_file()
    prompt = [1, 3, *range(20, 31), 4]
    chats = [StatelessChat(bdir, 200, threads=1, reuse_cache=r, prefill_chunk=5) for r in (False, True)]
    answers = [[c.turn(prompt, 6).answer for _ in range(3)] for c in chats]
    assert answers[0] == answers[1]  # the kept cache holds exactly what re-reading recomputes
    # the graph's first answer token is torch's greedy choice on the same context ([EOS] excluded)
    d = baseline_dims(model)
    empty = torch.zeros(0, 1, d.self_kv_heads, d.head_dim)
    context = chats[0].history[: -(6 + 1)]
    with torch.no_grad():
        logits = baseline_module(model)(torch.tensor([context]), *([empty] * (2 * d.decoder_layers)))[0][0]
    logits[model.cfg.special_tokens["eos"]] = -math.inf
    assert int(logits.argmax()) == answers[0][-1][0]
    assert not np.isnan(logits.numpy()).any()


def test_options_are_checked():
    with pytest.raises(BenchError, match="either a MODEL_DIR or --config"):
        run_bench(BenchOptions())
    with pytest.raises(BenchError, match="baseline"):
        run_bench(BenchOptions(config="tiny", baseline="sometimes"))
    with pytest.raises(BenchError, match="answer_tokens"):
        run_bench(BenchOptions(config="tiny", answer_tokens=1))
    with pytest.raises(BenchError, match=r"unknown scheme\(s\) \['int3'\]"):
        run_bench(BenchOptions(config="tiny", quantize="int8-dynamic,int3"))


def test_speed_targets_are_judged_per_package_with_the_floor_ceiling():
    from rxt_edge.bench.targets import evaluate_targets

    def row(package, ms, floor):
        return {"package": package, "decode_ms_per_token": ms, "bandwidth_floor_ms": floor,
                "speedup_vs_torch": {"decode": 10.0 / ms}}  # fmt: skip

    report = {
        "speed": {
            "runtime": [row("fp32", 4.0, 3.0), row("int8-dynamic avx2", 1.9, 1.0)],
            "reference": [{"engine": "PyTorch eager (rxt-edge model, cpu)", "decode_ms_per_token": 10.0}],
        }
    }
    targets = evaluate_targets(report, BenchOptions(config="alpha-micro"))
    speed = {t["name"]: t for t in targets if "PyTorch eager" in t["name"]}
    fp32 = speed["decode >= 5x faster than PyTorch eager (alpha-micro, fp32 package, CPU)"]
    int8 = speed["decode >= 5x faster than PyTorch eager (alpha-micro, int8-dynamic avx2 package, CPU)"]
    assert fp32["met"] is False and "2.50x" in fp32["measured"] and "3.33x" in fp32["measured"]
    assert int8["met"] is True and int8["measured"].startswith("5.26x")


def test_robust_ratio_ignores_one_slow_turn():
    flat = [0.1] * 10
    spiked = flat[:-1] + [0.5]  # a single preempted last turn
    s = curve_summary(flat, spiked, window=3)
    assert s["ratio_total"] > 4  # the raw ratio sees the spike
    assert s["ratio_total_window"] == pytest.approx(1.0)  # the median window does not
    growing = [0.1 * (i + 1) for i in range(10)]
    assert curve_summary(growing, growing, window=3)["ratio_total_window"] > 3


def test_turn_counts_scale_to_a_short_request(monkeypatch):
    """`bench --turns 4` shortens the speed and memory-update runs too; explicit counts are kept."""
    from rxt_edge.bench import run

    short, default = BenchOptions(config="tiny", turns=4), BenchOptions(config="tiny")
    assert (short.update_turns, short.speed_turns) == (4, 4)
    assert (default.update_turns, default.speed_turns) == (16, 8)
    assert BenchOptions(config="tiny", turns=4, update_turns=9, speed_turns=3).update_turns == 9
    seen = []

    def fake_run_bench(opts, console=None):
        seen.append(opts)
        raise BenchError("stop here")

    monkeypatch.setattr(run, "run_bench", fake_run_bench)
    result = CliRunner().invoke(app, ["bench", "--config", "tiny", "--turns", "4"])
    assert result.exit_code != 0  # the fake stopped it after the options were built
    assert (seen[0].turns, seen[0].update_turns, seen[0].speed_turns) == (4, 4, 4)


def _latency(turns: int, rxt_ratio: float, base_ratio: float) -> dict:
    curve = {"ratio_total": rxt_ratio, "ratio_total_window": rxt_ratio, "window": 2, "total_s": [0.1] * turns}
    base = {"ratio_total_window": base_ratio, "total_s": [0.1] * turns}
    return {"latency": {"rxt": curve, "baseline": base}}


def test_growth_target_is_not_judged_on_too_few_turns():
    from rxt_edge.bench.targets import MIN_GROWTH_TURNS, evaluate_targets

    (few,) = evaluate_targets(_latency(4, 1.5, 1.05), BenchOptions(config="tiny", turns=4))
    assert few["met"] is None and "too few" in few["measured"]
    n = MIN_GROWTH_TURNS
    (flat,) = evaluate_targets(_latency(n, 1.0, 3.0), BenchOptions(config="tiny", turns=n))
    (grows,) = evaluate_targets(_latency(n, 1.5, 3.0), BenchOptions(config="tiny", turns=n))
    assert flat["met"] is True and grows["met"] is False and "too few" not in flat["measured"]


def test_load_above_the_core_count_is_warned_once(monkeypatch):
    import io

    from rich.console import Console
    from rxt_edge.bench import run
    from rxt_edge.bench.machine import load_warning

    assert load_warning([1.5, 1.0, 1.0], cores=2) is None and load_warning(None, cores=2) is None
    assert "load average 3.50 > 2 cores" in load_warning([3.5, 1.0, 1.0], cores=2)
    monkeypatch.setattr(run, "run_child", lambda job, progress: {"load_average_after": [999.0, 1.0, 1.0]})
    out = io.StringIO()
    report = {"notes": []}
    with run._Bars(Console(file=out, width=200)) as bars:
        for _ in range(2):
            run._timed(report, bars, {}, lambda d, t: None)
    assert len(report["notes"]) == 1 and "load average 999.00" in report["notes"][0]
    assert out.getvalue().count("warning:") == 1


def test_log_lines_carry_no_source_file_links():
    import io

    from rich.console import Console
    from rxt_edge.bench.run import _Bars

    out = io.StringIO()
    with _Bars(Console(file=out, width=200, force_terminal=False)) as bars:
        bars.step("exporting the decoder graph")
    text = out.getvalue()
    assert "exporting the decoder graph" in text
    assert ".py:" not in text


def test_package_from_rxlm_gets_its_rxlm_row(exported, tmp_path):
    """A package exported from an rxlm checkpoint whose architecture the preset mapping cannot express: its
    rxlm twin is built from the source checkpoint (manifest source.format "rxlm"), holding the same weights."""
    pytest.importorskip("rxlm")
    from rxt_edge.bench.eager import rxlm_eager_speed
    from rxt_edge.bench.prepare import prepare
    from rxt_edge.export.checkpoints.rxlm_twin import rxlm_config, rxlm_twin

    case = exported("rxlm_beta_like")
    opts = BenchOptions(model_dir=case.package, quantize=None, baseline="none", threads=1, turns=2)
    opts.answer_tokens, opts.query_tokens, opts.speed_turns = 3, 4, 1
    prep = prepare(opts, tmp_path, lambda msg: None)
    assert prep.rxlm_source.resolve() == case.checkpoint.resolve() and prep.model is not None
    assert rxlm_config(prep.model.cfg) is None  # the preset mapping alone would skip the row
    rx, why = rxlm_twin(prep.model, prep.rxlm_source)
    assert rx is not None, why
    row = rxlm_eager_speed(prep.model, rx, opts)
    assert row["same_weights_first_logits_max_diff"] < 1e-4


def test_baseline_export_keeps_exporter_warnings_quiet(bench_run, tmp_path, caplog, monkeypatch):
    """`bench PKG` exports only the baseline in its process: onnx_ir's internal warnings must not leak (and the
    loggers' levels are restored afterwards)."""
    import logging

    from rxt_edge.bench.baseline import export_baseline
    from rxt_edge.export.checkpoints import load_checkpoint

    _, work, _ = bench_run
    model, _ = load_checkpoint(str(work / "tiny" / "checkpoint"))
    onnx_ir = logging.getLogger("onnx_ir")
    monkeypatch.setattr(onnx_ir, "level", logging.NOTSET)  # as in a process that has exported nothing else
    with caplog.at_level(logging.WARNING):
        export_baseline(model, tmp_path / "baseline")
    assert [r.getMessage() for r in caplog.records if r.name.startswith(("onnx_ir", "torch.onnx"))] == []
    assert onnx_ir.level == logging.NOTSET


def test_a_rebuild_for_another_seed_deletes_only_what_the_bench_wrote(tmp_path):
    """`--workdir` is the user's: a preset's cached build is removed for another seed only when it holds nothing
    else (issue 20: nothing lost)."""
    from rxt_edge.bench.options import BenchError
    from rxt_edge.bench.prepare import _remove_own_build

    root = tmp_path / "tiny"
    for d in ("checkpoint", "package-fp32", "package-int8-dynamic-avx2", "baseline", ".package-fp32.x1y2"):
        (root / d).mkdir(parents=True)
    (root / "preset.json").write_text("{}")
    (root / "my-notes.txt").write_text("mine")
    with pytest.raises(BenchError, match=r"did not write \(my-notes.txt\)"):
        _remove_own_build(root)
    assert (root / "my-notes.txt").read_text() == "mine" and (root / "checkpoint").is_dir()
    (root / "my-notes.txt").unlink()
    _remove_own_build(root)
    assert not root.exists()


# --- the onnxruntime-genai peer (bench/peer.py), on the bench run's tiny peers -----------------------------


def test_peer_rows_follow_the_packages(bench_run):
    """One peer row per genai precision the packages map to, timed like ours; each of our rows is compared with
    its own precision's peer, and the target is judged from the two."""
    pytest.importorskip("onnxruntime_genai")
    report, _, out = bench_run
    section = report["speed"]["peer"]
    rows = section["rows"]
    assert [r["precision"] for r in rows] == [
        "fp32",
        "int8",
        "int4",
    ]  # int8-dynamic -> int8, int4-block -> int4
    assert section["versions"]["onnxruntime_genai"] and section["versions"]["transformers"]
    assert section["settings"]["session_options"] == {"intra_op_num_threads": 1}
    for r in rows:
        assert r["answer_tokens"] == [ANSWER] * 2 and r["torch_imported"] is False
        assert _positive(r["decode_ms_per_token"]) and _positive(r["prompt_ms"])
        assert ("MatMulNBits" in r["graph"]["op_types"]) == (r["precision"] != "fp32")
    for ours in report["speed"]["runtime"]:
        sp = ours["speedup_vs_peer"]
        assert sp["precision"] == ours["package"].split("-")[0]  # fp32 / int8 / int4
        assert sp["decode"] == pytest.approx(sp["peer_decode_ms_per_token"] / ours["decode_ms_per_token"])
    assert sum("onnxruntime-genai's same-dims Llama" in t["name"] for t in report["targets"]) == 3
    assert "| onnxruntime-genai " in (out / "report.md").read_text()


def _onnx_dims(path) -> dict:
    """The dims a built peer's graph really has: attention heads from GroupQueryAttention, widths from weights."""
    import onnx

    model = onnx.load(str(path / "model.onnx"), load_external_data=False)
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gqa[0].attribute}
    (gate,) = [n for n in model.graph.node if n.name == "/model/layers.0/mlp/gate_proj/MatMul"]
    (head,) = [n for n in model.graph.node if n.name == "/lm_head/MatMul"]
    return {
        "layers": len(gqa),
        "q_heads": attrs["num_heads"],
        "kv_heads": attrs["kv_num_heads"],
        "intermediate": inits[gate.input[1]][1],
        "vocab": inits[head.input[1]][1],
        "hidden": inits["model.embed_tokens.weight"][1],
    }


def test_the_peer_has_our_decoder_dims(bench_run):
    """Read back from what genai's builder wrote (genai_config.json and the fp32 graph), not from our request."""
    pytest.importorskip("onnxruntime_genai")
    from rxt_edge.bench.peer import peer_dims
    from rxt_edge.export.presets import preset_config

    _, work, _ = bench_run
    want, _ = peer_dims(preset_config("tiny"))
    (fp32,) = work.glob("peers/*/fp32-cpu")
    config = json.loads((fp32 / "genai_config.json").read_text())["model"]
    d = config["decoder"]
    assert (d["hidden_size"], d["num_hidden_layers"], d["num_attention_heads"], d["num_key_value_heads"]) == (
        want.hidden, want.layers, want.q_heads, want.kv_heads,
    )  # fmt: skip
    assert (d["head_size"], config["vocab_size"], config["context_length"]) == (
        want.head_dim, want.vocab, want.max_seq_len,
    )  # fmt: skip
    got = _onnx_dims(fp32)
    assert got == {k: getattr(want, k) for k in got}


def test_peer_answers_have_n_tokens_even_when_eos_is_its_greedy_choice(bench_run, tmp_path):
    """The peer's answers have a fixed length: with [EOS] set to the token it picks first, it picks another."""
    pytest.importorskip("onnxruntime_genai")
    import shutil

    from rxt_edge.bench.child import run_child
    from rxt_edge.bench.peer import genai_job
    from rxt_edge.export.presets import SPECIAL

    _, work, _ = bench_run
    (fp32,) = work.glob("peers/*/fp32-cpu")
    copy = shutil.copytree(fp32, tmp_path / "peer")

    def first_tokens() -> list[int]:
        job = genai_job(copy, provider="cpu", threads=1, turns=2, query_tokens=QUERY, answer_tokens=ANSWER,
                        special=SPECIAL, warmup=0)  # fmt: skip
        turns = run_child(job)["turns"]
        assert [t["answer_tokens"] for t in turns] == [ANSWER, ANSWER]
        return [t["first_token"] for t in turns]

    free = first_tokens()
    config = json.loads((copy / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = free[0]
    (copy / "genai_config.json").write_text(json.dumps(config))
    assert first_tokens()[0] != free[0]


def test_no_peer_row_where_genai_is_not_importable(bench_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)
    _, work, _ = bench_run
    opts = BenchOptions(
        config="tiny", workdir=work, turns=2, speed_turns=1, update_turns=2, typing_delays=(0.0,),
        baseline="none", reference=False, quantize=None, threads=1, bandwidth_mib=8, query_tokens=QUERY,
        answer_tokens=ANSWER,
    )  # fmt: skip
    report = run_bench(opts)
    assert "peer" not in report["speed"]
    assert any("onnxruntime_genai is not importable" in n for n in report["notes"])
    assert "speedup_vs_peer" not in report["speed"]["runtime"][0]


def test_decode_compare_table_on_tiny(bench_run, tmp_path, capsys):
    """`python -m rxt_edge.bench.decode_compare` end to end on the bench run's package and peers."""
    pytest.importorskip("onnxruntime_genai")
    from rxt_edge.bench import decode_compare

    _, work, _ = bench_run
    out = tmp_path / "dc.json"
    argv = ["--configs", "tiny", "--precisions", "fp32,int4", "--rounds", "1", "--turns", "2",
            "--workdir", str(work), "--json-out", str(out)]  # fmt: skip
    assert decode_compare.main(argv) == 0
    table = capsys.readouterr().out
    assert "| tiny | fp32 |" in table and "| tiny | int4 |" in table
    report = json.loads(out.read_text())
    assert f"rxt-edge's CPU kernels: {report['machine']['rxt_edge_kernels']}." in table  # part of the figures
    assert report["settings"]["threads"] == 1 and report["versions"]["onnxruntime_genai"]
    for cell in report["cells"]:
        (rnd,) = cell["rounds"]
        assert set(rnd) == {"rxt-edge", "genai"}
        for engine in rnd.values():
            assert engine["answer_tokens"] == [decode_compare.ANSWER_TOKENS] * 2
            assert _positive(engine["decode_ms_per_token"])
        s = cell["summary"]
        ratio = s["rxt-edge"]["decode_ms_per_token"] / s["genai"]["decode_ms_per_token"]
        assert s["rxt_over_genai"] == pytest.approx(ratio)
        assert f"{ratio:.2f}" in table
        (paired,) = s["paired_ratio"]["rounds"]  # one round: its own ratio
        assert paired == pytest.approx(
            rnd["rxt-edge"]["decode_ms_per_token"] / rnd["genai"]["decode_ms_per_token"]
        )
        assert s["paired_ratio"]["median"] == pytest.approx(paired) and f"| {paired:.2f} |" in table
        # bytes per token: the STM K/V from the package's dims (float32 K and V per memory layer), the Llama none
        b = cell["bytes_per_token"]
        d = load_manifest(cell["rxt_package"]).model
        stm_kv = d.memory_layers * 2 * d.cross_kv_heads * d.stm_slots * d.head_dim * 4
        assert b["rxt-edge"]["stm_kv"] == stm_kv and b["genai"]["stm_kv"] == 0
        assert b["rxt-edge"]["total"] == b["rxt-edge"]["weights"] + stm_kv
        assert s["bytes_ratio"] == pytest.approx(b["rxt-edge"]["total"] / b["genai"]["total"])
        assert s["per_byte_ratio"] == pytest.approx(ratio / s["bytes_ratio"])
        assert f"{b['genai']['total'] / 1e6:.2f}" in table
    weights = {c["precision"]: c["bytes_per_token"] for c in report["cells"]}
    for engine in (
        "rxt-edge",
        "genai",
    ):  # int4 reads well under a third of fp32's weight bytes, in both engines
        assert weights["int4"][engine]["weights"] < weights["fp32"][engine]["weights"] / 3
