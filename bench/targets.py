"""The issue's targets, judged on a report: `met` is True, False, or None where this run cannot decide."""

from __future__ import annotations

from typing import Any

from .options import BenchOptions

FLAT_RATIO = 1.15  # target: RxT turn-N / turn-1 latency
# Fewer turns cannot judge the flat-vs-growing target: the median windows at the two ends overlap or sit so
# close that the baseline's re-read context has barely grown (its growth is what the target compares against).
MIN_GROWTH_TURNS = 16
DECODE_SPEEDUP_TARGETS = {"alpha-micro": 5.0, "alpha-mini": 3.0}  # vs PyTorch eager, CPU
FLOOR_FACTOR = 2.0  # target: Mini INT8 decode within 2x of the bandwidth floor
FLOOR_CONFIGS = ("alpha-mini",)


def evaluate_targets(report: dict[str, Any], opts: BenchOptions) -> list[dict[str, Any]]:
    """The issue's targets with the measured values; `met` is None where this run cannot decide."""
    out = []
    lat = report.get("latency", {})
    rxt, base = lat.get("rxt"), lat.get("baseline")
    if rxt:
        ratio = rxt["ratio_total_window"]
        grows = base["ratio_total_window"] if base else None
        turns = len(rxt.get("total_s", ())) or opts.turns
        measured = (
            f"RxT {_f(rxt['ratio_total'])} (raw), {_f(ratio)} (median of {rxt['window']} turns at each end); "
            f"baseline {_f(grows)}"
        )
        if turns < MIN_GROWTH_TURNS:
            measured += f"; {turns} turns are too few to judge (needs >= {MIN_GROWTH_TURNS})"
        judged = grows is not None and ratio is not None and turns >= MIN_GROWTH_TURNS
        out.append(
            {
                "name": f"RxT turn-{opts.turns}/turn-1 answer time <= {FLAT_RATIO} while the baseline grows",
                "measured": measured,
                "met": bool(ratio <= FLAT_RATIO and grows > FLAT_RATIO) if judged else None,
            }
        )
    want = DECODE_SPEEDUP_TARGETS.get(opts.config or "")
    rows = report.get("speed", {}).get("runtime", [])
    torch_ms = next(
        (
            r["decode_ms_per_token"]
            for r in report.get("speed", {}).get("reference", [])
            if "rxt-edge model" in r["engine"]
        ),
        None,
    )
    for row in rows if want and opts.provider == "cpu" else []:
        sp = row.get("speedup_vs_torch", {}).get("decode")
        measured = "n/a" if sp is None else f"{sp:.2f}x"
        floor = row.get("bandwidth_floor_ms")
        if sp is not None and torch_ms and floor:
            # no decoder of these weights can beat its bandwidth floor: the most this package could show
            measured += f" (at its bandwidth floor it would be {torch_ms / floor:.2f}x)"
        out.append(
            {
                "name": f"decode >= {want:g}x faster than PyTorch eager ({opts.config}, {row['package']} package, CPU)",
                "measured": measured,
                "met": None if sp is None else bool(sp >= want),
            }
        )
    for row in rows:  # issue 15: at or below onnxruntime-genai on a same-dims Llama (bench/peer.py)
        sp = row.get("speedup_vs_peer")
        if sp and sp.get("decode") is not None:
            out.append(
                {
                    "name": f"decode at or below onnxruntime-genai's same-dims Llama ({row['package']} vs genai "
                    f"{sp['precision']}, {opts.provider}, {opts.thread_count} thread(s))",
                    "measured": f"{row['decode_ms_per_token']:.2f} vs {sp['peer_decode_ms_per_token']:.2f} ms/token "
                    f"({sp['decode']:.2f}x)",
                    "met": bool(sp["decode"] >= 1.0),
                }
            )
    if opts.config in FLOOR_CONFIGS and opts.provider == "cpu":
        q = next((r for r in rows if r["package"] != "fp32" and "int8" in r["package"]), None)
        fr = q.get("floor_ratio") if q else None
        out.append(
            {
                "name": f"{opts.config} INT8 decode within {FLOOR_FACTOR:g}x of the memory-bandwidth floor",
                "measured": "n/a"
                if fr is None
                else f"{q['decode_ms_per_token']:.2f} ms vs floor {q['bandwidth_floor_ms']:.2f} ms = {fr:.2f}x",
                "met": None if fr is None else bool(fr <= FLOOR_FACTOR),
            }
        )
    return out


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"
