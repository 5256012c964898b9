"""Recall of the shipped demo model, measured through the exported ONNX package and the torch-free runtime.

    python models/demo/recipe/eval_demo.py models/demo/package [--n 50] [--json out.json]

For each delay k in 1, 2, 4, 8: a held-out fact is told at turn 0, k-1 small-talk turns follow, then the question;
the model answers every turn itself (its own answers go into memory, as in real use) and the last answer is scored
with `contains_value`. The same probes without the fact told ("no-fact") show the chance level: answers there can
only hit the value by guessing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_dialogues import contains_value, no_fact_probes, recall_probes  # noqa: E402

from rxt_edge import RxTSession  # noqa: E402

DELAYS = (1, 2, 4, 8)


def score(session: RxTSession, probes, max_new_tokens: int = 48) -> float:
    hits = 0
    for probe in probes:
        conv = session.conversation()
        answer = ""
        for turn in probe.turns:
            answer = conv.say(turn.query, max_new_tokens=max_new_tokens)
        hits += contains_value(answer, probe.expected)
    return hits / max(1, len(probes))


def evaluate(package: Path, n: int = 50, seed: int = 1234, provider: str = "cpu") -> dict:
    session = RxTSession.load(package, provider=provider)
    started = time.perf_counter()
    table = {}
    for delay in DELAYS:
        told = recall_probes(n, seed, delays=(delay,), split="heldout")
        untold = no_fact_probes(n, seed, delays=(delay,), split="heldout")
        table[delay] = {"recall": score(session, told), "no_fact_hits": score(session, untold)}
    session.close()
    return {
        "package": str(package),
        "precision": session.package.manifest.precision,
        "quantization": session.package.manifest.quantization,
        "probes_per_delay": n,
        "seed": seed,
        "delays": table,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--n", type=int, default=50, help="probes per delay")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    result = evaluate(args.package, args.n, args.seed, args.provider)
    print(f"{args.package} ({result['precision']}), {args.n} held-out probes per delay:")
    print("delay | recall | no-fact hits (chance)")
    for delay, row in result["delays"].items():
        print(f"{delay:5d} | {row['recall']:6.1%} | {row['no_fact_hits']:6.1%}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
