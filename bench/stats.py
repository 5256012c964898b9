"""Summaries of timings: medians, guarded ratios, a latency curve's turn-N / turn-1 ratios, per-turn speed."""

from __future__ import annotations

import math
import statistics
from typing import Any


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def ratio(a: float, b: float) -> float | None:
    """a / b, or None where either is not a finite measurement or b is not positive."""
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else None


def curve_summary(ttft: list[float], total: list[float], window: int) -> dict[str, Any]:
    """Turn-N / turn-1 ratios of a latency curve, raw and robust (median of `window` turns at each end)."""
    w = max(1, min(window, len(total) // 2 or 1))
    return {
        "turn1_total_s": total[0],
        "turnN_total_s": total[-1],
        "turn1_ttft_s": ttft[0],
        "turnN_ttft_s": ttft[-1],
        "ratio_total": ratio(total[-1], total[0]),
        "ratio_ttft": ratio(ttft[-1], ttft[0]),
        "window": w,
        "ratio_total_window": ratio(median(total[-w:]), median(total[:w])),
        "ratio_ttft_window": ratio(median(ttft[-w:]), median(ttft[:w])),
    }


def speed_summary(prompt: list[float], decode: list[float], update: list[float]) -> dict[str, float]:
    """Medians over the measured turns, and the best turn (closest to the uncontended cost on a busy machine)."""
    return {
        "prompt_ms": 1e3 * median(prompt),
        "decode_ms_per_token": 1e3 * median(decode),
        "memory_update_ms": 1e3 * median(update),
        "prompt_ms_best": 1e3 * min(prompt, default=math.nan),
        "decode_ms_per_token_best": 1e3 * min(decode, default=math.nan),
        "memory_update_ms_best": 1e3 * min(update, default=math.nan),
    }


def speed_from_turns(turns: list[dict[str, Any]]) -> dict[str, float]:
    """`speed_summary` of a child run's turns: prompt = time to first token, decode per token after it."""
    prompt = [t["ttft_s"] for t in turns]
    decode = [(t["total_s"] - t["ttft_s"]) / (t["answer_tokens"] - 1) for t in turns]
    update = [t["update_s"] for t in turns if t["update_s"] is not None]
    return speed_summary(prompt, decode, update)
