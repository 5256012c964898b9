"""The bench report's outputs: rich tables for the terminal, Markdown (what docs/benchmarks.md quotes), a PNG of
the latency curves (matplotlib, optional) and strict JSON (the layout is documented in docs/benchmarks.md)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .options import BenchError


def _fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:{spec}}{suffix}"


def print_report(report: dict[str, Any], console) -> None:
    """The tables at the end of `rxt-edge bench`."""
    from rich.table import Table

    m = report.get("model", {})
    params = m.get("params")
    console.print(
        f"[bold]{m.get('label')}[/]  params {_fmt(params / 1e6 if params else None, '.1f', 'M')}"
        f"  |  {report['machine']['cpu']}, {report['settings']['threads']} thread(s), {report['settings']['provider']}"
        f"  |  load {report.get('load_average_start')} -> {report.get('load_average_end')}"
    )
    lat = report.get("latency", {})
    t = Table(
        title=f"Per-turn latency over {report['settings']['turns']} turns (fixed {report['settings']['answer_tokens']}-token answers)"
    )
    for col in (
        "model",
        "turn 1 answer",
        "turn N answer",
        "N/1",
        "N/1 (median window)",
        "turn 1 TTFT",
        "turn N TTFT",
        "TTFT N/1",
    ):
        t.add_column(col, justify="right")
    for name, c in lat.items():
        t.add_row(
            {
                "rxt": "RxT (rxt-edge)",
                "baseline": "stateless baseline",
                "baseline_cached": "baseline, KV kept",
            }.get(name, name),
            _fmt(c["turn1_total_s"] * 1e3, ".1f", " ms"),
            _fmt(c["turnN_total_s"] * 1e3, ".1f", " ms"),
            _fmt(c["ratio_total"], ".2f"),
            _fmt(c["ratio_total_window"], ".2f"),
            _fmt(c["turn1_ttft_s"] * 1e3, ".1f", " ms"),
            _fmt(c["turnN_ttft_s"] * 1e3, ".1f", " ms"),
            _fmt(c["ratio_ttft"], ".2f"),
        )
    console.print(t)
    sp = report.get("speed", {})
    t = Table(
        title=f"Speed, {sp.get('threads')} thread(s): prompt {sp.get('prompt_tokens')} tokens, {sp.get('decode_tokens')} decoded"
    )
    for col in (
        "engine",
        "prompt",
        "decode / token",
        "(best turn)",
        "memory update",
        "decode speedup vs torch",
        "vs rxlm",
        "vs genai",
    ):
        t.add_column(col, justify="right")
    for row in sp.get("runtime", []) + sp.get("reference", []) + sp.get("peer", {}).get("rows", []):
        t.add_row(
            row["engine"],
            _fmt(row["prompt_ms"], ".2f", " ms"),
            _fmt(row["decode_ms_per_token"], ".2f", " ms"),
            _fmt(row.get("decode_ms_per_token_best"), ".2f", " ms"),
            _fmt(row["memory_update_ms"], ".1f", " ms"),
            _fmt(row.get("speedup_vs_torch", {}).get("decode"), ".2f", "x"),
            _fmt(row.get("speedup_vs_rxlm", {}).get("decode"), ".2f", "x"),
            _fmt(row.get("speedup_vs_peer", {}).get("decode"), ".2f", "x"),
        )
    console.print(t)
    t = Table(title="Memory update off the user's path")
    for col in ("typing delay", "update", "turns that waited", "mean wait", "median TTFT", "median answer"):
        t.add_column(col, justify="right")
    for u in report.get("memory_update", []):
        t.add_row(
            _fmt(u["typing_delay_s"] * 1e3, "g", " ms"),
            _fmt(u["memory_update_ms"], ".1f", " ms"),
            _fmt(100 * u["turns_waited_share"], ".0f", " %"),
            _fmt(u["mean_wait_ms"], ".1f", " ms"),
            _fmt(u["median_ttft_ms"], ".1f", " ms"),
            _fmt(u["median_total_ms"], ".1f", " ms"),
        )
    console.print(t)
    t = Table(title="Packages")
    for col in (
        "package",
        "size",
        "peak RSS",
        "device memory",
        "decode / token",
        "weights read / token",
        "bandwidth floor",
        "decode / floor",
    ):
        t.add_column(col, justify="right")
    for row in sp.get("runtime", []):
        dev = (row.get("device_memory") or {}).get("mb")
        t.add_row(
            row["package"],
            _fmt(row["package_bytes"] / 1e6, ".1f", " MB"),
            _fmt(row["peak_rss_mb"], ".0f", " MiB"),
            _fmt(dev, ".0f", " MiB"),
            _fmt(row["decode_ms_per_token"], ".2f", " ms"),
            _fmt(
                row.get("decoder_weight_bytes_per_token", 0) / 1e6
                if row.get("decoder_weight_bytes_per_token")
                else None,
                ".1f",
                " MB",
            ),
            _fmt(row.get("bandwidth_floor_ms"), ".2f", " ms"),
            _fmt(row.get("floor_ratio"), ".2f", "x"),
        )
    console.print(t)
    if report.get("bandwidth"):
        console.print(
            f"bandwidth: {report['bandwidth']['gb_per_s']:.1f} GB/s ({report['bandwidth']['method']})"
        )
    if report.get("targets"):
        t = Table(title="Targets")
        for col in ("target", "measured", "met"):
            t.add_column(col)
        for tg in report["targets"]:
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: "n/a"}[tg["met"]]
            t.add_row(tg["name"], tg["measured"], met)
        console.print(t)
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")


def markdown_report(report: dict[str, Any]) -> str:
    """The report's tables in Markdown (what docs/benchmarks.md quotes)."""

    def f(x, spec=".1f", suffix=""):
        return _fmt(x, spec, suffix)

    s, m, mach = report["settings"], report.get("model", {}), report["machine"]
    params = m.get("params")
    out = [
        f"**{m.get('label')}** ({f(params / 1e6 if params else None, '.1f', 'M')} parameters), "
        f"{s['provider']}, {s['threads']} thread(s), {s['turns']} turns, {s['query_tokens']}-token queries, "
        f"{s['answer_tokens']}-token answers. Machine: {mach['cpu']}, {mach['logical_cpus']} logical CPUs, "
        f"{mach['ram_gib']} GiB RAM, onnxruntime {mach['onnxruntime']}, torch {mach['torch']}. "
        f"Load average (1/5/15 min) {report.get('load_average_start')} at the start, "
        f"{report.get('load_average_end')} at the end.",
        "",
        "| model | turn 1 answer | turn N answer | N/1 | N/1 (median of window) | turn 1 TTFT | turn N TTFT | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "rxt": "RxT (rxt-edge)",
        "baseline": "stateless baseline (re-reads)",
        "baseline_cached": "baseline, KV cache kept",
    }
    for name, c in report.get("latency", {}).items():
        out.append(
            f"| {names.get(name, name)} | {f(c['turn1_total_s'] * 1e3, '.1f', ' ms')} | "
            f"{f(c['turnN_total_s'] * 1e3, '.1f', ' ms')} | {f(c['ratio_total'], '.2f')} | "
            f"{f(c['ratio_total_window'], '.2f')} | {f(c['turn1_ttft_s'] * 1e3, '.1f', ' ms')} | "
            f"{f(c['turnN_ttft_s'] * 1e3, '.1f', ' ms')} | {f(c.get('peak_rss_mb'), '.0f', ' MiB')} |"
        )
    sp = report.get("speed", {})
    out += [
        "",
        f"Speed ({sp.get('prompt_tokens')}-token prompt, {sp.get('decode_tokens')} tokens decoded, median of "
        f"{s['speed_turns']} turns; best turn in brackets):",
        "",
        "| engine | prompt | decode / token | memory update | decode speedup vs PyTorch eager (ours) | vs rxlm | vs genai (same dims) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sp.get("runtime", []) + sp.get("reference", []) + sp.get("peer", {}).get("rows", []):
        st, sr = row.get("speedup_vs_torch", {}), row.get("speedup_vs_rxlm", {})
        sg = row.get("speedup_vs_peer", {})
        out.append(
            f"| {row['engine']} | {f(row['prompt_ms'], '.2f', ' ms')} | {f(row['decode_ms_per_token'], '.2f', ' ms')} "
            f"({f(row.get('decode_ms_per_token_best'), '.2f')}) | {f(row['memory_update_ms'], '.1f', ' ms')} | "
            + (
                f"{f(st.get('decode'), '.2f', 'x')} ({f(st.get('decode_best'), '.2f', 'x')}) | "
                f"{f(sr.get('decode'), '.2f', 'x')} ({f(sr.get('decode_best'), '.2f', 'x')}) |"
                if st or sr
                else " | |"
            )
            + (
                f" {f(sg.get('decode'), '.2f', 'x')} ({f(sg.get('decode_best'), '.2f', 'x')}) |"
                if sg
                else " |"
            )
        )
    out += [
        "",
        "| typing delay | memory update | turns that waited | mean wait | median TTFT | median answer |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for u in report.get("memory_update", []):
        out.append(
            f"| {f(u['typing_delay_s'] * 1e3, 'g', ' ms')} | {f(u['memory_update_ms'], '.1f', ' ms')} | "
            f"{f(100 * u['turns_waited_share'], '.0f', ' %')} | {f(u['mean_wait_ms'], '.1f', ' ms')} | "
            f"{f(u['median_ttft_ms'], '.1f', ' ms')} | {f(u['median_total_ms'], '.1f', ' ms')} |"
        )
    out += [
        "",
        "| package | size | peak RSS | decode / token | weights read / token | bandwidth floor | decode / floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sp.get("runtime", []):
        wb = row.get("decoder_weight_bytes_per_token")
        out.append(
            f"| {row['package']} | {f(row['package_bytes'] / 1e6, '.1f', ' MB')} | {f(row['peak_rss_mb'], '.0f', ' MiB')} | "
            f"{f(row['decode_ms_per_token'], '.2f', ' ms')} | {f(wb / 1e6 if wb else None, '.1f', ' MB')} | "
            f"{f(row.get('bandwidth_floor_ms'), '.2f', ' ms')} | {f(row.get('floor_ratio'), '.2f', 'x')} |"
        )
    if report.get("bandwidth"):
        bw = report["bandwidth"]
        out += ["", f"Bandwidth: {bw['gb_per_s']:.1f} GB/s ({bw['method']})."]
    if report.get("targets"):
        out += ["", "| target | measured | met |", "|---|---|---|"]
        for t in report["targets"]:
            out.append(
                f"| {t['name']} | {t['measured']} | {({True: 'yes', False: 'no', None: 'n/a'})[t['met']]} |"
            )
    for note in report.get("notes", []):
        out.append(f"\nNote: {note}")
    return "\n".join(out) + "\n"


def plot_available() -> bool:
    """Whether `write_plot` can run (matplotlib installed); checked before a long run, not after it."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def write_plot(report: dict[str, Any], path: str | Path) -> Path:
    """PNG of answer time and time to first token per turn, RxT against the baseline(s). Needs matplotlib
    (`pip install 'rxt-edge[bench]'`)."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'rxt-edge[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = report["latency"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    style = {"rxt": ("RxT (rxt-edge)", "tab:blue"), "baseline": ("stateless baseline (re-reads)", "tab:red"),
             "baseline_cached": ("baseline, KV cache kept", "tab:orange")}  # fmt: skip
    for name, c in lat.items():
        label, color = style.get(name, (name, None))
        x = range(1, len(c["total_s"]) + 1)
        ax.plot(x, [v * 1e3 for v in c["total_s"]], color=color, label=f"{label}: full answer")
        ax.plot(x, [v * 1e3 for v in c["ttft_s"]], color=color, linestyle="--", label=f"{label}: first token")
    s, m = report["settings"], report.get("model", {})
    ax.set_xlabel("turn")
    ax.set_ylabel("latency (ms)")
    ax.set_title(
        f"{m.get('label')}: {s['query_tokens']}-token queries, {s['answer_tokens']}-token answers, "
        f"{s['threads']} thread(s), {s['provider']}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Strict JSON: NaN and infinities (a measurement that could not be made) become null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False))
    return path


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
