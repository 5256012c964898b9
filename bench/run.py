"""`rxt-edge bench`: the measurements behind RxT's promise, on random-weight presets or on any model package.

1. Per-turn user-facing latency (time to first token, full answer time) over turns 1..N of the RxT runtime,
   against a stateless decoder-only baseline of the same shape that re-reads the whole conversation every turn
   (`baseline`), both through onnxruntime with IOBinding and an in-place KV cache.
2. Speed against PyTorch eager on the same weights and thread count (`eager`): our canonical torch model, and
   rxlm's cached decode path where rxlm is installed.
3. The memory update off the user's path: its duration, and how often the next turn had to wait for it after
   a scripted user typing delay.
4. Peak RSS (and device memory on CUDA), package size, fp32 against a quantized package, and the
   memory-bandwidth floor of decoding (weight bytes read per token over a measured copy bandwidth).

Every onnxruntime measurement runs in a fresh torch-free child process (`child`). This module imports torch only
through the functions that need it, so benchmarking a package works without torch (the torch parts are then
skipped with a note). The JSON layout is documented in docs/benchmarks.md.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.markup import escape

from rxt_edge import contract

from .child import run_child
from .machine import (
    decoder_bytes_per_token,
    dir_bytes,
    load_average,
    load_warning,
    machine_info,
    measure_bandwidth,
)
from .options import SCHEMA, BenchError, BenchOptions, quant_preset
from .prepare import Prepared, prepare
from .stats import curve_summary, median, ratio, speed_from_turns
from .targets import evaluate_targets


class _Bars:
    """rich progress bars when a console is given; silent otherwise."""

    def __init__(self, console=None):
        self.console = console
        self._progress = None
        self.load_warned = False

    def __enter__(self) -> _Bars:
        if self.console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: int | None = None) -> Callable[[int, int], None]:
        if self._progress is None:
            return lambda done, total: None
        tid = self._progress.add_task(description, total=total)

        def update(done: int, total: int) -> None:
            self._progress.update(tid, completed=done, total=total)

        return update

    def warn(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"[yellow]warning:[/] {escape(message)}")

    def step(self, description: str) -> None:
        if self._progress is not None:
            # a time stamp, like console.log, without its source-file link (noise for a CLI user)
            self._progress.console.print(f"[dim][{time.strftime('%H:%M:%S')}][/] {escape(description)}")


def rxt_job(
    package: Path, opts: BenchOptions, turns: int, answer: int, delay: float | None
) -> dict[str, Any]:
    """The child job (`child.rxt_turns`) of `turns` turns on a package (decode_compare times with it too)."""
    return {
        "kind": "rxt_turns",
        "package": str(package),
        "provider": opts.provider,
        "threads": opts.thread_count,
        "turns": turns,
        "query_tokens": opts.query_tokens,
        "answer_tokens": answer,
        "typing_delay": delay,
        "seed": opts.seed,
        "warmup": 1,
    }


def run_bench(opts: BenchOptions, console=None) -> dict[str, Any]:
    """Run every measurement and return the report (the JSON document)."""
    from rxt_edge.runtimes import providers

    opts.check()
    try:  # before anything is built: a missing provider is the user's to fix
        providers.resolve_provider(opts.provider)
    except (ValueError, providers.ProviderUnavailableError) as e:
        raise BenchError(str(e)) from None
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "load_average_start": load_average(),
        "settings": {
            "model": str(opts.model_dir) if opts.model_dir else None,
            "config": opts.config,
            "provider": opts.provider,
            "threads": opts.thread_count,
            "turns": opts.turns,
            "query_tokens": opts.query_tokens,
            "answer_tokens": opts.answer_tokens,
            "typing_delays_s": list(opts.typing_delays),
            "update_turns": opts.update_turns,
            "speed_turns": opts.speed_turns,
            "baseline": opts.baseline,
            "peer": opts.peer,
            "quantize": opts.quantize,
            "quant_preset": quant_preset(opts),
            "quant_per_tensor": opts.quant_per_tensor,
            "seed": opts.seed,
        },
        "notes": [],
    }
    tmp = None
    if opts.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rxt-edge-bench-")
        workdir = Path(tmp.name)
    else:
        workdir = Path(opts.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        with _Bars(console) as bars:
            prep = prepare(opts, workdir, bars.step)
            report["notes"] += prep.notes
            _measure(report, prep, opts, bars, workdir)
    finally:
        if tmp is not None:
            tmp.cleanup()
    report["load_average_end"] = load_average()
    report["targets"] = evaluate_targets(report, opts)
    return report


def _timed(
    report: dict[str, Any], bars: _Bars, job: dict[str, Any], progress: Callable[[int, int], None]
) -> dict[str, Any]:
    """One child measurement; a machine loaded beyond its cores while it ran is warned about (once per run)."""
    result = run_child(job, progress)
    warning = load_warning(result["load_average_after"])
    if warning and not bars.load_warned:
        bars.load_warned = True
        bars.warn(warning)
        report["notes"].append(warning)
    return result


def _measure(report: dict[str, Any], prep: Prepared, opts: BenchOptions, bars: _Bars, workdir: Path) -> None:
    from rxt_edge.manifest import load_manifest

    manifest = load_manifest(prep.package)
    d = manifest.model
    report["model"] = {
        "label": prep.label,
        "params": prep.params,
        "dims": d.to_json(),
        "precision": manifest.precision,
        "package_bytes": dir_bytes(prep.package),
    }
    # 1. per-turn latency ---------------------------------------------------------------------------------
    lat: dict[str, Any] = {}
    r = _timed(
        report,
        bars,
        rxt_job(prep.package, opts, opts.turns, opts.answer_tokens, None),
        bars.task("RxT turns"),
    )
    lat["rxt"] = _curve(r, opts)
    modes = {"reread": [False], "cached": [True], "both": [False, True], "none": []}[opts.baseline]
    if prep.baseline_dir is not None:
        for reuse in modes:
            name = "baseline_cached" if reuse else "baseline"
            job = {
                "kind": "baseline_turns",
                "baseline_dir": str(prep.baseline_dir),
                "provider": opts.provider,
                "threads": opts.thread_count,
                "turns": opts.turns,
                "query_tokens": opts.query_tokens,
                "answer_tokens": opts.answer_tokens,
                "reuse_cache": reuse,
                "prefill_chunk": opts.prefill_chunk,
                "special": dict(manifest.special_tokens),
                "seed": opts.seed,
                "warmup": 1,
            }
            b = _timed(
                report,
                bars,
                job,
                bars.task("stateless baseline" + (" (KV cache kept)" if reuse else " (re-reads)")),
            )
            lat[name] = _curve(b, opts)
            lat[name]["mode"] = "kv-cache kept across turns" if reuse else "re-reads the whole conversation"
            lat[name]["params"] = b["params"]
            lat[name]["context_tokens"] = [t["context_tokens"] for t in b["turns"]]
    report["latency"] = lat

    # 2. + 4. speed and resources per package -------------------------------------------------------------
    rows = []
    packages = [(_package_label(manifest), prep.package)]
    packages += [(_package_label(load_manifest(q)), q) for q in prep.quantized]
    bw = None
    if opts.provider == "cpu":
        bars.step("measuring memory bandwidth")
        bw = measure_bandwidth(opts.thread_count, opts.bandwidth_mib)
        report["bandwidth"] = bw
    for precision, path in packages:
        res = _timed(
            report,
            bars,
            rxt_job(path, opts, opts.speed_turns, opts.answer_tokens, None),
            bars.task(f"speed, {precision}"),
        )
        row: dict[str, Any] = {
            "engine": f"rxt-edge (onnxruntime {opts.provider}, {precision})",
            "package": precision,
            **speed_from_turns(res["turns"]),
            "package_bytes": dir_bytes(path),
            "peak_rss_mb": res["peak_rss_mb"],
            "rss_after_load_mb": res["rss_after_load_mb"],
            "device_memory": res["device_memory"],
            "torch_imported": res["torch_imported"],
            "load_average_after": res["load_average_after"],
        }
        try:
            per_tok = decoder_bytes_per_token(path)
        except ImportError:
            per_tok = None
            report["notes"].append("onnx is not installed: no bytes-per-token figures")
        if per_tok is not None:
            row["decoder_weight_bytes_per_token"] = per_tok["weights"]
            row["stm_kv_bytes_per_token"] = per_tok["stm_kv"]
            if bw is not None:
                floor = per_tok["weights"] / (bw["gb_per_s"] * 1e9) * 1e3
                row["bandwidth_floor_ms"] = floor
                row["floor_ratio"] = ratio(row["decode_ms_per_token"], floor)
                with_state = (per_tok["weights"] + per_tok["stm_kv"]) / (bw["gb_per_s"] * 1e9) * 1e3
                row["bandwidth_floor_with_stm_kv_ms"] = with_state
        rows.append(row)
    peer = _peer(report, prep, opts, bars, workdir, rows, [load_manifest(p).precision for _, p in packages])
    ref_rows = []
    if opts.reference and prep.model is not None:
        from rxt_edge.export.checkpoints.rxlm_twin import rxlm_twin

        from .eager import rxlm_eager_speed, torch_eager_speed

        t = bars.task("PyTorch eager", 2)
        ref_rows.append(torch_eager_speed(prep.model, opts))
        t(1, 2)
        rx, why = rxlm_twin(prep.model, prep.rxlm_source)
        if rx is None:
            report["notes"].append(f"rxlm row skipped: {why}")
        else:
            ref_rows.append(rxlm_eager_speed(prep.model, rx, opts))
            del rx
        t(2, 2)
    elif opts.reference:
        report["notes"].append("no torch model: PyTorch eager rows skipped")
    for row in rows:
        for ref in ref_rows:
            key = "speedup_vs_rxlm" if "rxlm" in ref["engine"] else "speedup_vs_torch"
            row[key] = {
                "decode": ratio(ref["decode_ms_per_token"], row["decode_ms_per_token"]),
                "prompt": ratio(ref["prompt_ms"], row["prompt_ms"]),
                "memory_update": ratio(ref["memory_update_ms"], row["memory_update_ms"]),
                "decode_best": ratio(ref["decode_ms_per_token_best"], row["decode_ms_per_token_best"]),
            }
    report["speed"] = {
        "threads": opts.thread_count,
        "prompt_tokens": opts.query_tokens + contract.PROMPT_OVERHEAD,
        "decode_tokens": opts.answer_tokens,
        "runtime": rows,
        "reference": ref_rows,
    }
    if peer is not None:
        report["speed"]["peer"] = peer

    # 3. memory update off the path -----------------------------------------------------------------------
    upd = []
    for delay in opts.typing_delays:
        res = _timed(
            report,
            bars,
            rxt_job(prep.package, opts, opts.update_turns, opts.answer_tokens, delay),
            bars.task(f"memory update, typing delay {delay * 1e3:g} ms"),
        )
        turns = res["turns"]
        later = turns[1:]  # the first turn has no previous update
        upd.append(
            {
                "typing_delay_s": delay,
                "memory_update_ms": 1e3 * median([t["update_s"] for t in turns if t["update_s"] is not None]),
                "turns_waited_share": (sum(t["update_was_running"] for t in later) / len(later))
                if later
                else 0.0,
                "mean_wait_ms": 1e3 * (sum(t["update_wait_s"] for t in later) / len(later)) if later else 0.0,
                "median_ttft_ms": 1e3 * median([t["ttft_s"] for t in turns]),
                "median_total_ms": 1e3 * median([t["total_s"] for t in turns]),
                "load_average_after": res["load_average_after"],
            }
        )
    report["memory_update"] = upd


def _peer(
    report: dict[str, Any],
    prep: Prepared,
    opts: BenchOptions,
    bars: _Bars,
    workdir: Path,
    rows: list[dict[str, Any]],
    precisions: list[str],
) -> dict[str, Any] | None:
    """onnxruntime-genai on a same-dims Llama at each row's nearest genai precision (`peer`); each of our rows
    gets `speedup_vs_peer` (> 1: rxt-edge is faster). Anything missing or failing is a note, never an error."""
    if not opts.peer:
        return None
    if opts.config is None or prep.model is None:
        report["notes"].append("no onnxruntime-genai peer row: peers are built for --config presets")
        return None
    from . import peer

    cfg = prep.model.cfg
    dims, mapping, notes = peer.peer_plan(cfg, precisions, opts.provider)
    report["notes"] += notes
    if dims is None or not mapping:
        return None
    wanted = list(dict.fromkeys(mapping.values()))
    try:
        built = peer.build_peers(
            dims, wanted, opts.provider, workdir / "peers", cfg.special_tokens, bars.step
        )
    except BenchError as e:
        report["notes"].append(f"no onnxruntime-genai peer row: {e}")
        return None
    peer_rows = {}
    for g in wanted:
        job = peer.genai_job(
            built[g], provider=opts.provider, threads=opts.thread_count, turns=opts.speed_turns,
            query_tokens=opts.query_tokens, answer_tokens=opts.answer_tokens, special=cfg.special_tokens,
            seed=opts.seed,
        )  # fmt: skip
        try:
            res = _timed(report, bars, job, bars.task(f"speed, onnxruntime-genai peer {g}"))
        except BenchError as e:
            report["notes"].append(f"the onnxruntime-genai peer ({g}) failed: {e}")
            continue
        peer_rows[g] = peer.peer_row(res, built[g])
    for row, precision in zip(rows, precisions, strict=True):
        p = peer_rows.get(mapping.get(precision, ""))
        if p is not None:
            row["speedup_vs_peer"] = {
                "precision": p["precision"],
                "peer_decode_ms_per_token": p["decode_ms_per_token"],
                "decode": ratio(p["decode_ms_per_token"], row["decode_ms_per_token"]),
                "prompt": ratio(p["prompt_ms"], row["prompt_ms"]),
                "decode_best": ratio(p["decode_ms_per_token_best"], row["decode_ms_per_token_best"]),
            }
    return {
        "dims": asdict(dims),
        "versions": peer.versions(),
        "settings": peer.peer_settings(opts.thread_count, opts.provider),
        "rows": list(peer_rows.values()),
    }


def _package_label(manifest) -> str:
    """ "fp32", or the quantization scheme with its preset ("int8-dynamic avx512_vnni", "... per-tensor")."""
    q = manifest.quantization or {}
    label = manifest.precision if not q.get("preset") else f"{manifest.precision} {q['preset']}"
    return label + (" per-tensor" if q.get("per_channel") is False else "")


def _curve(result: dict[str, Any], opts: BenchOptions) -> dict[str, Any]:
    turns = result["turns"]
    ttft = [t["ttft_s"] for t in turns]
    total = [t["total_s"] for t in turns]
    return {
        "ttft_s": ttft,
        "total_s": total,
        "answer_tokens": [t["answer_tokens"] for t in turns],
        **curve_summary(ttft, total, opts.window),
        "peak_rss_mb": result["peak_rss_mb"],
        "device_memory": result["device_memory"],
        "torch_imported": result["torch_imported"],
        "load_average_after": result["load_average_after"],
    }
