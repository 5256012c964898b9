"""Everyday-typing evaluation of the demo model, written apart from the training generator (issue 19).

    python models/demo/recipe/everyday_eval.py models/demo/package-int8 [--per-cell 8] [--json out.json]

Every phrase here is hand-written for this file: none of `demo_dialogues` / `demo_everyday`'s sentences
(tests/test_everyday_eval.py checks that no query here, lower-cased, without punctuation and with values masked, is
one the generators produce). Only the value pools and their held-out split come from `demo_dialogues`: every value
asked about is a held-out one, never seen in training.

Categories, each at delays 1, 2, 4 and 8 (turns between the fact and the question; the model answers every turn
itself, so its own answers go into memory as in real use):

| category | dialogue | correct when |
|---|---|---|
| greeting | a greeting, a fact, delay-1 fillers, another greeting | both greetings get small talk: no fact sentence, no "I don't know" |
| statement | a fact in an everyday form, fillers, a question | the answer holds the value |
| greeting_fact | greeting and fact in one message, fillers, a question | the answer holds the value |
| two_facts | two facts in one message, fillers, a question on each | both answers hold their values |
| correction | a fact, a filler, its correction, fillers, a question | the new value, not the old one |
| paraphrase | a fact, fillers, a question in unusual words | the answer holds the value |
| never_told | another fact, fillers, a question on a fact never told | the answer says "I don't know" |
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_dialogues as dd  # noqa: E402  (value pools and the held-out split only)

DELAYS = (1, 2, 4, 8)
CATEGORIES = ("greeting", "statement", "greeting_fact", "two_facts", "correction", "paraphrase", "never_told")

# --- hand-written phrase lists ({v} value, {a} its article, {kind} pet kind) ------------------------------

STATEMENTS: dict[str, tuple[str, ...]] = {
    "name": (
        "hey, I'm {v} btw",
        "my name is {v}, nice to chat :)",
        "you can just call me {v}",
        "{v} is my name",
        "this is {v}",
        "im {v}",
        "the name is {v}",
        "i'm called {v}",
    ),
    "friend": (
        "my bff is {v}",
        "my best friend? that's {v}",
        "{v} has been my best friend for years",
        "my best pal is called {v}",
    ),
    "city": (
        "i'm currently living in {v}",
        "I stay in {v}",
        "my hometown is {v}",
        "I reside in {v}",
        "living in {v} right now",
    ),
    "pet": (
        "i have a {kind}. its name is {v}",
        "there's a {kind} at home called {v}",
        "my pet {kind} is named {v}",
        "i got a {kind} named {v} last year",
    ),
    "colour": (
        "{v} is the best colour",
        "my fave color is {v}",
        "i really love {v}, it's my colour",
        "I'd say my favourite colour is {v}",
    ),
    "age": ("I am {v} years of age", "im {v} yrs old", "I turned {v} last month", "i'm {v} this year"),
    "job": (
        "I work as {a} {v} these days",
        "i'm {a} {v} at the moment",
        "my job is being {a} {v}",
        "I earn my living as {a} {v}",
    ),
    "food": (
        "i'm a big fan of {v}",
        "{v} is what I love to eat",
        "nothing beats {v}",
        "my all-time favourite food is {v}",
    ),
}
QUESTIONS: dict[str, tuple[str, ...]] = {
    "name": (
        "do you remember what my name is?",
        "what name did i give you",
        "tell me my name",
        "whats my name again",
    ),
    "friend": (
        "who did I say my best friend was?",
        "remind me, who's my best friend",
        "what's my bff's name",
    ),
    "city": ("what city do i live in again?", "where do i stay", "which town do I live in"),
    "pet": (
        "what is the name of my {kind}",
        "my {kind}, what's it called?",
        "what name does my {kind} have?",
    ),
    "pet_kind": ("which animal do i own?", "what sort of pet have I got?"),
    "colour": ("which colour is my favourite?", "what's my fave color", "what colour did i say i like"),
    "age": ("what age am i", "how old did I say I was?", "remind me how old i am"),
    "job": ("what's my job again?", "what work do i do", "what did i say i do for work?"),
    "food": ("what food did i say i love", "what's my favourite thing to eat", "which food do i like most"),
}
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "name": ("so who am i, then?", "any idea what I'm called?", "what should you call me?"),
    "friend": ("who's my closest pal?", "who is my best pal, again?"),
    "city": ("where am i living these days?", "what's my city?", "where is home for me?"),
    "pet": ("what's the name of the {kind} i have?", "what did i name my {kind}?"),
    "pet_kind": ("what animal lives with me?", "what kind of pet did i mention?"),
    "colour": ("what colour do i love?", "which colour do i prefer?"),
    "age": ("how many years old am i?", "what's my current age?"),
    "job": ("what's my occupation?", "how do i earn money?", "what do i work as?"),
    "food": ("what do i love eating?", "what's my go-to food?"),
}
GREETINGS = (
    "hey hey",
    "heya",
    "hi hi!",
    "good day!",
    "evening!",
    "yo!",
    "hi friend",
    "hello again",
    "hey, how's your day?",
    "how have you been?",
    "how r u",
    "whats new",
    "hey pal!",
    "morning all :)",
    "sup?",
    "thank you so much",
    "thx",
    "cheers!",
    "hi, nice to see you",
    "greetings!",
    "good to see you",
    "how are things?",
    "hello friend",
    "HI THERE",
)
GREETING_PREFIXES = ("hey hey, ", "heya! ", "good day! ", "hi again, ", "yo, ", "evening! ", "hello friend, ")
TWO_FACTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("name", "city"): (
        "i'm {v1} from {v2}",
        "{v1} here, living in {v2}",
        "Hey! I'm {v1} and I'm living in {v2}.",
    ),
    ("name", "job"): ("this is {v1}, i work as {a2} {v2}", "I'm {v1}, {a2} {v2} by trade"),
    ("name", "age"): ("my name is {v1} and i am {v2} yrs old", "{v1}, {v2} years old, nice to meet you"),
    ("city", "food"): ("I live in {v1} and love eating {v2}", "based in {v1}, big fan of {v2}"),
    ("name", "pet"): ("i'm {v1} and i have a {kind} named {v2}",),
    ("colour", "food"): ("{v1} is my colour and {v2} is my food",),
    ("age", "city"): ("i am {v1} years old and live in {v2}",),
}
CORRECTIONS: dict[str, tuple[str, ...]] = {
    "name": ("oops, my name is actually {v}", "wait, call me {v} instead", "correction: my name's {v}"),
    "city": ("oh I moved, I'm in {v} now", "update: i live in {v} now"),
    "job": ("I switched jobs, I'm {a} {v} now", "new job: I'm {a} {v}"),
    "colour": ("hmm, actually {v} is my favourite colour now",),
    "food": ("i've gone off it, now i love {v}",),
    "age": ("sorry, typo, I'm {v}",),
}
FILLERS = (
    "tell me something nice",
    "i'm a bit tired today",
    "it's sunny here",
    "any plans for the weekend?",
    "what's your favourite season?",
    "do you like music?",
    "can you count to five?",
    "what day comes after sunday?",
    "lol",
    "ok cool",
    "nice weather today",
    "I had coffee this morning",
)

UNKNOWN_RE = re.compile(r"\bdon'?t know\b", re.IGNORECASE)
# A sentence that states (or invents) a user fact: what a greeting must never get.
FACT_SENTENCE_RE = re.compile(
    r"\byour (name|best friend|favou?rite|\w+ is called)\b|\byou live\b|\byou work\b|\byou love\b|\byou like\b"
    r"|\byou have an?\b|\byou(?: are|'re) (?:an?\b|\d)|\byears old\b|\bnice to meet you, [A-Z]",
    re.IGNORECASE,
)
_ALL_VALUES = re.compile(
    r"(?<!\w)(?:" + "|".join(re.escape(v) for vs in dd.POOLS.values() for v in vs) + r")(?!\w)", re.IGNORECASE
)


def is_fact_sentence(answer: str) -> bool:
    """Whether an answer states a user fact (a fact template or any pool value)."""
    return bool(FACT_SENTENCE_RE.search(answer) or _ALL_VALUES.search(answer))


@dataclass
class Dialogue:
    """Queries to send in order; `checks` maps a query index to (kind, expected, forbidden)."""

    category: str
    delay: int
    queries: list[str]
    checks: dict[int, tuple[str, str | None, str | None]] = field(default_factory=dict)


def _heldout(rng: random.Random) -> dict[str, str]:
    facts = {k: rng.choice(dd.pool_values(pool, "heldout")) for k, pool in dd.FACT_POOL.items()}
    while facts["friend"] == facts["name"]:
        facts["friend"] = rng.choice(dd.pool_values("names", "heldout"))
    facts["pet_kind"] = rng.choice(dd.pool_values("pet_kinds", "heldout"))
    return facts


def _fill(t: str, facts: dict[str, str], key: str) -> str:
    v = facts[key]
    return t.format(v=v, a=dd.article(v), kind=facts["pet_kind"])


def _fillers(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(FILLERS) for _ in range(n)]


def _question(rng: random.Random, lists: dict[str, tuple[str, ...]], key: str, facts: dict[str, str]) -> str:
    return _fill(rng.choice(lists[key]), facts, key)


def build(per_cell: int = 8, seed: int = 19) -> list[Dialogue]:
    """`per_cell` dialogues per category and delay (7 x 4 x 8 = 224 by default); deterministic."""
    rng = random.Random(f"everyday-eval:{seed}")
    out: list[Dialogue] = []
    keys = [k for k in STATEMENTS]
    ask_keys = [*keys, "pet_kind"]
    for delay in DELAYS:
        for i in range(per_cell):
            f = _heldout(rng)
            key = keys[(i + delay) % len(keys)]
            ask = "pet_kind" if key == "pet" and i % 2 else key
            tell = _fill(rng.choice(STATEMENTS[key]), f, key)
            gap = _fillers(rng, delay - 1)
            # greeting: small talk with an empty memory, then with a fact `delay` turns back
            q = [rng.choice(GREETINGS), tell, *gap, rng.choice(GREETINGS)]
            out.append(
                Dialogue(
                    "greeting",
                    delay,
                    q,
                    {0: ("smalltalk", None, None), len(q) - 1: ("smalltalk", None, None)},
                )
            )
            q = [tell, *gap, _question(rng, QUESTIONS, ask, f)]
            out.append(Dialogue("statement", delay, q, {len(q) - 1: ("recall", f[ask], None)}))
            q = [
                rng.choice(GREETING_PREFIXES) + tell,
                *_fillers(rng, delay - 1),
                _question(rng, QUESTIONS, ask, f),
            ]
            out.append(Dialogue("greeting_fact", delay, q, {len(q) - 1: ("recall", f[ask], None)}))
            (k1, k2), templates = list(TWO_FACTS.items())[(i + delay) % len(TWO_FACTS)]
            both = rng.choice(templates).format(
                v1=f[k1], v2=f[k2], a2=dd.article(f[k2]), a1=dd.article(f[k1]), kind=f["pet_kind"]
            )
            q = [
                both,
                *_fillers(rng, delay - 1),
                _question(rng, QUESTIONS, k1, f),
                _question(rng, QUESTIONS, k2, f),
            ]
            out.append(
                Dialogue(
                    "two_facts",
                    delay,
                    q,
                    {len(q) - 2: ("recall", f[k1], None), len(q) - 1: ("recall", f[k2], None)},
                )
            )
            ckey = list(CORRECTIONS)[(i + delay) % len(CORRECTIONS)]
            old = f[ckey]
            g = _heldout(rng)
            new = (
                g[ckey]
                if g[ckey] != old
                else rng.choice([v for v in dd.pool_values(dd.FACT_POOL[ckey], "heldout") if v != old])
            )
            f2 = {**f, ckey: new}
            q = [
                _fill(rng.choice(STATEMENTS[ckey]), f, ckey),
                rng.choice(FILLERS),
                _fill(rng.choice(CORRECTIONS[ckey]), f2, ckey),
                *_fillers(rng, delay - 1),
                _question(rng, QUESTIONS, ckey, f2),
            ]
            out.append(Dialogue("correction", delay, q, {len(q) - 1: ("recall", new, old)}))
            q = [tell, *_fillers(rng, delay - 1), _question(rng, PARAPHRASES, ask, f)]
            out.append(Dialogue("paraphrase", delay, q, {len(q) - 1: ("recall", f[ask], None)}))
            other = ask_keys[(i + delay + 3) % len(ask_keys)]
            while other in (key, ask) or (other == "pet_kind" and key == "pet"):
                other = ask_keys[(ask_keys.index(other) + 1) % len(ask_keys)]
            q = [tell, *_fillers(rng, delay - 1), _question(rng, QUESTIONS, other, f)]
            out.append(Dialogue("never_told", delay, q, {len(q) - 1: ("unknown", None, f[other])}))
    return out


def judge(kind: str, expected: str | None, forbidden: str | None, answer: str) -> dict[str, bool]:
    """Scores of one checked answer: `ok`, plus `fact` (a fact sentence) for small talk."""
    if kind == "smalltalk":
        fact = is_fact_sentence(answer)
        return {"ok": not fact and not UNKNOWN_RE.search(answer), "fact": fact}
    if kind == "unknown":
        return {"ok": bool(UNKNOWN_RE.search(answer)) and not dd.contains_value(answer, forbidden)}
    ok = dd.contains_value(answer, expected) and not (forbidden and dd.contains_value(answer, forbidden))
    return {"ok": ok}


def run(say_factory: Callable[[], Callable[[str], str]], dialogues: Sequence[Dialogue]) -> list[dict]:
    """Answer every dialogue in a fresh conversation; one record per dialogue with its checked answers."""
    records = []
    for d in dialogues:
        say = say_factory()
        answers = [say(q) for q in d.queries]
        results = [judge(*d.checks[i], answers[i]) | {"answer": answers[i]} for i in sorted(d.checks)]
        records.append(
            {
                "category": d.category,
                "delay": d.delay,
                "queries": d.queries,
                "results": results,
                "ok": all(r["ok"] for r in results),
            }
        )
    return records


def summarise(records: Sequence[dict]) -> dict:
    """Accuracy per category and delay (a dialogue counts when all its checks pass), the share of greetings
    answered with a fact sentence, and the overall accuracy."""
    table: dict = {}
    for cat in CATEGORIES:
        rows = [r for r in records if r["category"] == cat]
        if not rows:
            continue
        per = {
            d: sum(r["ok"] for r in rows if r["delay"] == d) / max(1, sum(r["delay"] == d for r in rows))
            for d in DELAYS
        }
        table[cat] = {"n": len(rows), "all": sum(r["ok"] for r in rows) / len(rows), "delays": per}
    greet = [x for r in records if r["category"] == "greeting" for x in r["results"]]
    return {
        "categories": table,
        "greetings_with_fact_sentence": sum(x["fact"] for x in greet) / max(1, len(greet)),
        "overall": sum(r["ok"] for r in records) / max(1, len(records)),
        "dialogues": len(records),
    }


def format_summary(s: dict) -> str:
    lines = ["category      |   n | d1     | d2     | d4     | d8     | all", "-" * 66]
    for cat, row in s["categories"].items():
        cells = " | ".join(f"{row['delays'][d]:6.1%}" for d in DELAYS)
        lines.append(f"{cat:13s} | {row['n']:3d} | {cells} | {row['all']:6.1%}")
    lines.append(
        f"overall {s['overall']:.1%} of {s['dialogues']} dialogues; greetings answered with a fact "
        f"sentence: {s['greetings_with_fact_sentence']:.1%}"
    )
    return "\n".join(lines)


def evaluate(
    package: Path, per_cell: int = 8, seed: int = 19, max_new_tokens: int = 48, provider: str = "cpu"
) -> tuple[dict, list]:
    """Run the set through the torch-free runtime (greedy) on `package`."""
    from rxt_edge import RxTSession

    session = RxTSession.load(package, provider=provider)
    try:

        def factory() -> Callable[[str], str]:
            conv = session.conversation()
            return lambda q: conv.say(q, max_new_tokens=max_new_tokens)

        started = time.perf_counter()
        records = run(factory, build(per_cell, seed))
        s = summarise(records)
        s.update(
            package=str(package),
            precision=session.package.manifest.precision,
            seconds=round(time.perf_counter() - started, 1),
        )
        return s, records
    finally:
        session.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--per-cell", type=int, default=8, help="dialogues per category and delay")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--json", type=Path, help="write the summary and every answer here")
    ap.add_argument("--show-misses", type=int, default=0, help="print this many wrong answers")
    ap.add_argument("--provider", default="cpu", help="cpu, cuda or dml")
    args = ap.parse_args(argv)
    s, records = evaluate(args.package, args.per_cell, args.seed, provider=args.provider)
    print(f"{args.package} ({s['precision']}), greedy, {s['seconds']} s")
    print(format_summary(s))
    misses = [r for r in records if not r["ok"]][: args.show_misses]
    for r in misses:
        print(f"  [{r['category']} d{r['delay']}] {r['queries']} -> {[x['answer'] for x in r['results']]}")
    if args.json:
        args.json.write_text(json.dumps({"summary": s, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
