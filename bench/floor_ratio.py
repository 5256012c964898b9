"""Decode time against the memory-bandwidth floor of the active weights (not a test): the issue-16 target.

    python -m rxt_edge.bench.floor_ratio PKG [PKG ...] --threads 1,2 --json floor.json

Per package and thread count: the weight bytes one decode step reads (bench/active_weights.py: routed experts at
their top-k share, shared experts, attention, dense layers, LM head whole, one embedding row; quantized bytes
and scales as stored), the machine's copy bandwidth at that thread count (bench/machine.py), the floor
bytes / bandwidth, the measured decode ms/token (real runtime, packages interleaved `--repeats` times, medians
over every turn) and the ratio decode / floor (goal <= 2x). The floor with the STM K/V that cross-attention
reads every step (activations, not weights: 21 x 4096 slots at Beta scale) is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .machine import decoder_bytes_per_token, load_average, measure_bandwidth
from .quant_report import DEFAULT_QUERIES, SpeedProbe


def floor_ms(nbytes: float, gb_per_s: float) -> float:
    """The time to stream `nbytes` once at `gb_per_s`, in ms."""
    return nbytes / (gb_per_s * 1e9) * 1e3


def measure(packages: list[Path], threads: int, repeats: int, max_new: int, mib: int) -> list[dict[str, Any]]:
    """One row per package at `threads` threads (see the module docstring)."""
    bw = measure_bandwidth(threads, mib)
    probes = {p: SpeedProbe(p, threads) for p in packages}
    try:
        tok = next(iter(probes.values())).session.package.tokenizer
        queries = [tok.encode(q)[:200] for q in DEFAULT_QUERIES]
        for r in range(repeats):
            print(
                f"[{time.strftime('%H:%M:%S')}] {threads} thread(s), repeat {r + 1}/{repeats}",
                file=sys.stderr,
            )
            for probe in probes.values():
                probe.run(queries, max_new)
        load = load_average()
        rows = []
        for pkg, probe in probes.items():
            per_tok = decoder_bytes_per_token(pkg)
            decode = probe.samples.medians().decode_ms_per_token
            floor = floor_ms(per_tok["weights"], bw["gb_per_s"])
            with_kv = floor_ms(per_tok["weights"] + per_tok["stm_kv"], bw["gb_per_s"])
            rows.append(
                {
                    "package": str(pkg),
                    "threads": threads,
                    "bytes_per_token": per_tok,
                    "bandwidth_gb_per_s": bw["gb_per_s"],
                    "bandwidth_method": bw["method"],
                    "decode_ms_per_token": decode,
                    "floor_ms": floor,
                    "floor_with_stm_kv_ms": with_kv,
                    "ratio": decode / floor if decode else None,
                    "ratio_with_stm_kv": decode / with_kv if decode else None,
                    "load_average": load,
                }
            )
        return rows
    finally:
        for probe in probes.values():
            probe.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packages", nargs="+", type=Path)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--bandwidth-mib", type=int, default=1024)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        rows += measure(args.packages, threads, args.repeats, args.max_new_tokens, args.bandwidth_mib)
    print(f"{'package':40s} {'thr':>3s} {'MB/token':>9s} {'GB/s':>6s} {'floor':>8s} {'decode':>8s} {'ratio':>6s}"
          f" {'+STM K/V':>9s}")  # fmt: skip
    for r in rows:
        mb = r["bytes_per_token"]["weights"] / 1e6
        print(
            f"{r['package'][-40:]:40s} {r['threads']:3d} {mb:9.1f} {r['bandwidth_gb_per_s']:6.1f} "
            f"{r['floor_ms']:6.2f}ms {r['decode_ms_per_token']:6.2f}ms {r['ratio']:5.2f}x "
            f"{r['ratio_with_stm_kv']:8.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
