"""In-distribution recall: held-out-value conversations from the *training* generators, through the runtime.

    python models/demo/recipe/generator_eval.py PACKAGE [--generator everyday|drills] [--n 150] [--seed 7]

Beside `everyday_eval.py` (phrasings written apart from the generators) this separates the two ways the demo can
fail: a miss here is memory or capacity; a miss only there is phrasing the model never learned to read. Every
question is scored by where its fact was told (one fact in a message, two facts, a correction); never-told
questions by an "I don't know" answer.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_dialogues as dd  # noqa: E402
import demo_drills as dr  # noqa: E402
import demo_everyday as de  # noqa: E402

from rxt_edge import RxTSession  # noqa: E402


def score(package: Path, generator: str, n: int, seed: int) -> dict[str, tuple[int, int]]:
    """{where the fact was told: (right, asked)} over `n` conversations answered by the model itself."""
    make = de.generate_everyday if generator == "everyday" else dr.generate_drills
    session = RxTSession.load(package)
    asked: collections.Counter = collections.Counter()
    right: collections.Counter = collections.Counter()
    try:
        for dialogue in make(n, seed, split="heldout"):
            conv, told = session.conversation(), {}
            for turn in dialogue:
                answer = conv.say(turn.query, max_new_tokens=48)
                keys = (turn.fact_key or "").split("+")
                if turn.kind == dd.TELL:
                    told.update({k: "two facts" if len(keys) > 1 else "one fact" for k in keys})
                elif turn.kind == dd.UPDATE:
                    told[turn.fact_key] = "correction"
                elif turn.kind == dd.ASK:
                    where = told.get("pet" if turn.fact_key == "pet_kind" else turn.fact_key, "?")
                    asked[where] += 1
                    right[where] += dd.contains_value(answer, turn.value)
                elif turn.kind == dd.ASK_UNKNOWN:
                    asked["never told"] += 1
                    right["never told"] += answer == dd.UNKNOWN_ANSWER
    finally:
        session.close()
    return {k: (right[k], asked[k]) for k in asked}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--generator", choices=["everyday", "drills"], default="everyday")
    ap.add_argument("--n", type=int, default=150, help="conversations")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    for where, (ok, total) in score(args.package, args.generator, args.n, args.seed).items():
        print(f"{where:12s} {ok}/{total} = {ok / total:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
