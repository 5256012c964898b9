"""Decode speed with the weights on 4 KiB and on 2 MiB pages, side by side (not a test): runtimes/huge_pages.py.

    python -m rxt_edge.bench.pages_ab PKG [PKG ...] --pairs 4 --threads 1 --json pages.json

Per package, `--pairs` pairs of fresh processes, alternated (plain first, then promoted), each loading the package
(`RxTSession.load(huge_pages=False|True)`) and running the bench's turns (`child.rxt_turns`: a warm-up turn, then
`--turns` turns of `--tokens` greedy tokens); a process's figure is the median decode ms/token of its turns. A
fresh process per load: once memory is on huge pages it stays there, so both forms cannot share one. Printed:
one row per package, the range of each form over the pairs and the change of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from .child import run_child
from .options import BenchOptions
from .run import rxt_job
from .stats import speed_from_turns


def one_load(package: Path, huge: bool, threads: int, turns: int, tokens: int) -> dict[str, Any]:
    """Decode ms/token of one fresh process: the bench's own turns (`child.rxt_turns`: a warm-up turn, then
    fixed-length greedy answers), loaded with `huge_pages=huge`."""
    job = {**rxt_job(package, BenchOptions(threads=threads), turns, tokens, None), "huge_pages": huge}
    result = run_child(job)
    pages = result["huge_pages"]
    return {"decode_ms": speed_from_turns(result["turns"])["decode_ms_per_token"], **pages}


def compare(package: Path, pairs: int, threads: int, turns: int, tokens: int) -> dict[str, Any]:
    """`pairs` alternated plain / promoted loads of `package`: both lists and the change of their medians."""
    plain, huge = [], []
    for _ in range(pairs):
        plain.append(one_load(package, False, threads, turns, tokens))
        huge.append(one_load(package, True, threads, turns, tokens))
    a = statistics.median(r["decode_ms"] for r in plain)
    b = statistics.median(r["decode_ms"] for r in huge)
    return {
        "package": str(package),
        "threads": threads,
        "plain": plain,
        "huge_pages": huge,
        "change": b / a - 1,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rxt_edge.bench.pages_ab", description=__doc__.split("\n")[0])
    ap.add_argument("packages", nargs="+", type=Path)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = [compare(p, args.pairs, args.threads, args.turns, args.tokens) for p in args.packages]
    print("| package | 4 KiB pages, ms/token | 2 MiB pages, ms/token | change | collapsed at load |")
    print("|---|---|---|---:|---|")
    for r in rows:
        lo_hi = [f"{min(x['decode_ms'] for x in r[k]):.2f}-{max(x['decode_ms'] for x in r[k]):.2f}"
                 for k in ("plain", "huge_pages")]  # fmt: skip
        last = r["huge_pages"][-1]
        load = last["skipped"] or f"{last['collapsed_mib']} MiB in {last['seconds']:.2f} s"
        print(f"| {r['package']} | {lo_hi[0]} | {lo_hi[1]} | {r['change'] * 100:+.0f}% | {load} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
