"""The demo model's quantization table (docs/quantization.md, "The demo model"): every scheme and graph selection
against the fp32 package, with recall on held-out probes.

    python -m rxt_edge.bench.demo_quant_table [--package models/demo/package] [--recall-n 50] [--json out.json]

Recall probes come from the demo recipe (`models/demo/recipe/demo_dialogues.py`, a folder of scripts that its
own scripts and tests import with the folder on sys.path; done here in `main` only).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rxt_edge.export.quantize import Scope, quantize_package

from rxt_edge import contract

from .quant_report import DEFAULT_QUERIES, compare_packages

D, E, M = contract.DECODER, contract.ENCODER, contract.MEMORY_UPDATE
# (scheme, preset, label, scope, per_channel: None = the preset's)
ROWS: list[tuple[str, str | None, str, Scope | None, bool | None]] = [
    ("int8", None, "decoder", None, None),
    ("int4", None, "decoder", None, None),
    ("int8-dynamic", "avx2", "decoder", None, None),
    ("int8-dynamic", "avx512_vnni", "decoder", None, None),
    ("int8-dynamic", "avx512_vnni", "decoder, per-tensor", None, False),
    ("int8-dynamic", "avx2", "decoder-no-head", Scope((D,), head=False), None),
    ("int8-dynamic", "avx2", "decoder+encoder", Scope((D, E)), None),
    ("int8-dynamic", "avx2", "decoder+memory_update", Scope((D, M)), None),
    ("int8-dynamic", "avx2", "all", Scope(contract.GRAPH_NAMES), None),
    ("int8-dynamic", "avx2", "all+embedding", Scope(contract.GRAPH_NAMES, embedding=True), None),
    ("int8-block", None, "decoder", None, None),
    ("int8-block", None, "all", Scope(contract.GRAPH_NAMES), None),
    ("int4-block", None, "decoder", None, None),
    ("int4-block", None, "decoder-no-head", Scope((D,), head=False), None),
    ("int4-block", None, "all", Scope(contract.GRAPH_NAMES), None),
    ("fp16", None, "all", None, None),
]


def _pct(recall: dict, which: str) -> str:
    return "/".join(f"{100 * recall[which][d]:.0f}" for d in sorted(recall[which], key=int)) + "%"


def _recall_probes(recipe: Path, n: int) -> list:
    """`n` held-out recall probes per delay 1, 2, 4, 8 (seed 0) from the demo recipe."""
    if not (recipe / "demo_dialogues.py").is_file():
        raise SystemExit(f"{recipe}: no demo_dialogues.py (pass --recipe DIR)")
    sys.path.insert(0, str(recipe))
    import demo_dialogues

    return demo_dialogues.recall_probes(n, 0, delays=(1, 2, 4, 8))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=Path("models/demo/package"))
    ap.add_argument("--recall-n", type=int, default=50)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--recipe", type=Path, default=None, help="demo recipe folder (default: ../recipe)")
    args = ap.parse_args(argv)
    probes = _recall_probes(args.recipe or args.package.resolve().parent / "recipe", args.recall_n)
    rows, out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (scheme, preset, label, scope, per_channel) in enumerate(ROWS):
            q = quantize_package(
                args.package, Path(tmp) / str(i), scheme, preset=preset, scope=scope, per_channel=per_channel
            ).output
            r = compare_packages(
                args.package, q, queries=DEFAULT_QUERIES * 2, speed=False, recall_probes=probes
            )
            j = r.to_json()
            drift = r.stm_drift
            line = (
                f"| `{scheme}/{preset or '-'}:{label}` | {r.teacher_forced_top1_agreement:.3f} | {r.mean_kl:.1e} "
                f"| {r.greedy_token_agreement:.2f} ({r.greedy_identical_turns}) "
                f"| {drift[5]:.3f} / {drift[-1]:.3f} | {_pct(r.recall, 'quantized')} "
                f"| {r.size_ratio:.2f} |"
            )
            if not rows:
                print(f"fp32 recall d1/d2/d4/d8: {_pct(r.recall, 'source')}", flush=True)
            print(line, flush=True)
            rows.append(line)
            out.append({"scheme": scheme, "preset": preset, "graphs": label, **j})
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
