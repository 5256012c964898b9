"""Drill conversations for stage 10 of the demo model: the two failure modes stage 9 kept (README, "Stage 10").

Stage 9 lost at least one fact in 23 of 32 two-fact dialogues of the everyday evaluation set (both in 15, mostly
"I don't know"), and 13 of 32 corrections came back garbled, invented or "I don't know". In `demo_everyday` the facts
of a two-fact message are seldom both asked and a correction is seldom asked about afterwards. These conversations
are built around those turns instead:

- **pair drills**: one message with two facts, then a question about *each* of them (either order, delays 1-8,
  other turns between), so that losing the first or the second fact always costs loss. Besides the two-clause
  forms of `demo_everyday`, the second fact comes as a short tail without a subject now and then ("I'm Ann and
  living in Rome", "I work as a nurse - aged 40"): `TAILS` below, generic forms written from the issue's list,
  never from the evaluation set;
- **correction drills**: a fact (alone or in a pair), often a question that reads the old value back, then its
  correction, then a question that must give the new value (not the old one, nor a blend of the two);
- throughout: other facts, questions about facts never told (`UNKNOWN_ANSWER`: asking only about told facts would
  teach the model to invent values) and small talk, with the same typing noise as `demo_everyday`.

Same facts, pools, held-out split and `Turn` kinds as the other generators; `train_demo.py --drills P` draws a share
P of every batch from here (0 by default, so the stage-9 recipe's batches are unchanged).
"""

from __future__ import annotations

import random

import demo_dialogues as dd
import demo_everyday as de

#: Second clauses without a subject, joined to a first fact clause ("I'm Ann" + " and " + "living in Rome").
TAILS: dict[str, tuple[str, ...]] = {
    "friend": ("best friends with {v}", "with {v} as my best friend", "my best mate being {v}"),
    "city": ("living in {v}", "based in {v}", "currently in {v}", "originally from {v}", "now living in {v}"),
    "pet": (
        "owner of {ka} {kind} called {v}",
        "with {ka} {kind} named {v}",
        "proud owner of {ka} {kind}, {v}",
    ),
    "colour": ("into the colour {v}", "a fan of the colour {v}", "loving the colour {v}", "{v} fan"),
    "age": ("aged {v}", "{v} years old", "{v} y/o", "{v} this year"),
    "job": ("working as {a} {v}", "employed as {a} {v}", "{a} {v} by profession", "doing {v} work"),
    "food": ("crazy about {v}", "a huge fan of {v}", "loving {v}", "obsessed with {v}", "into {v} big time"),
}
#: Joiners before a tail: no bare comma, so "X here, living in Y" style fragments stay the eval set's own.
TAIL_JOINERS = (" and ", ", and ", " & ", " - ", " and also ", " and I'm ", ", I'm ")
#: Delays between a fact and its question (1, 2, 4 and 8 are what the evaluations use).
DELAYS = (1, 1, 2, 2, 3, 4, 4, 5, 6, 8, 8)


def _pair_keys(rng: random.Random, fresh: list[str]) -> tuple[str, str] | None:
    pairs = [(a, b) for a in fresh for b in fresh if a != b and {a, b} != {"name", "friend"}]
    if not pairs:
        return None
    k1, k2 = rng.choice(pairs)
    if "name" in (k1, k2) and rng.random() < 0.5:  # people introduce themselves first
        k1, k2 = "name", k2 if k1 == "name" else k1
    return k1, k2


def _tell_pair(k1: str, k2: str, facts: dict[str, str], rng: random.Random) -> dd.Turn:
    """Two facts in one message: `demo_everyday._tell_two`'s shapes (two clauses, a clause + a verb phrase, a
    clause + an apposition or fragment, two fragments), or a first clause and a subjectless tail. A pet told
    second never comes as a whole clause (`demo_everyday._second`): "I'm {v} and I have a {kind} named {v}" is,
    values masked, a sentence of the evaluation set, which drills (3x the pairs of `demo_everyday`) produced."""
    if k2 not in TAILS or rng.random() < 0.6:
        return de._tell_two(k1, k2, facts, rng)
    kind = facts["pet_kind"]
    values = de._value_tuple(k1, facts) + de._value_tuple(k2, facts)
    n1, n2 = de._fill(de.NOTED[k1], facts[k1], kind), de._fill(de.NOTED[k2], facts[k2], kind)

    def make(greet: bool = True) -> tuple[str, str]:
        c1 = de._core(k1, facts, rng, rng.choice(("his", "her")))
        while c1.endswith(" here"):  # a verbless "{v} here" takes a whole clause after it, not a tail
            c1 = de._core(k1, facts, rng, rng.choice(("his", "her")))
        body = c1 + rng.choice(TAIL_JOINERS) + de._pick(TAILS[k2], rng, facts[k2], kind)
        query = (
            de._dress(body, rng, greet=greet and rng.random() < 0.25) if greet else de._sentence(body, rng)
        )
        if k1 == "name" and rng.random() < 0.5:
            answer = de.NAME_FIRST_ACK.format(v=facts[k1], n2=n2)
        else:
            answer = rng.choice(de.TWO_ACKS).format(n1=n1, n2=n2)
        return de.noisy(query, values, rng), de._cap(answer)

    query, answer = de._fitting(make, values, lambda: make(False))
    return dd.Turn(query, answer, dd.TELL, f"{k1}+{k2}", None, None)


def _new_value(key: str, facts: dict[str, str], split: str, rng: random.Random) -> str:
    others = [v for v in dd.pool_values(dd.FACT_POOL[key], split) if v != facts[key]]
    if key in ("name", "friend"):
        others = [v for v in others if v not in (facts["name"], facts["friend"])]
    return rng.choice(others)


def _render(rng: random.Random, split: str, max_turns: int) -> dd.Dialogue:
    low = min(3, max_turns)
    n = max(rng.randint(low, max_turns), rng.randint(low, max_turns))
    facts = dd._draw_facts(rng, split)
    keys = list(dd.FACT_POOL)
    rng.shuffle(keys)
    correction_drill = rng.random() < 0.45
    told_at: dict[str, int] = {}
    due: dict[int, list[str]] = {}  # turn -> facts to ask then
    corrected = False
    turns: dd.Dialogue = []

    def schedule(key: str, i: int, earliest: int = 1) -> None:
        room = n - 1 - i
        if room >= earliest:
            ask = "pet_kind" if key == "pet" and rng.random() < 0.25 else key
            due.setdefault(i + min(rng.choice(DELAYS), room), []).append(ask)

    for i in range(n):
        fresh = [k for k in keys if k not in told_at]
        untold = [k for k in dd.ASK_KEYS if k not in told_at and not (k == "pet_kind" and "pet" in told_at)]
        asks = [k for k in due.pop(i, []) if ("pet" if k == "pet_kind" else k) in told_at]
        if asks:
            key = asks[0]
            fact = "pet" if key == "pet_kind" else key
            turns.append(de._ask(key, facts, i - told_at[fact], rng))
            for later in asks[1:]:  # two questions due at once: the next one a turn later
                due.setdefault(i + 1, []).insert(0, later)
            continue
        r = rng.random()
        if i == 0 and r < 0.25:
            turns.append(de._smalltalk(rng))
        elif not told_at or (len(told_at) < 4 and r < 0.3):
            pair = _pair_keys(rng, fresh) if (not correction_drill or told_at or r < 0.4) else None
            if pair:
                turns.append(_tell_pair(*pair, facts, rng))
                for k in pair:
                    told_at[k] = i
                    schedule(k, i)
            else:
                key = fresh[0]
                turns.append(de._tell(key, facts, rng, greet=rng.random() < 0.2))
                told_at[key] = i
                schedule(key, i)
        elif correction_drill and not corrected and r < 0.75:
            key = rng.choice(list(told_at))
            facts[key] = _new_value(key, facts, split, rng)
            told_at[key] = i
            corrected = True
            turns.append(de._correct(key, facts, rng))
            schedule(key, i)
        elif untold and 0.75 <= r < 0.88:
            kind = rng.choice(dd.pool_values("pet_kinds", split))
            turns.append(de._ask_unknown(rng.choice(untold), kind, rng))
        else:
            turns.append(de._smalltalk(rng))
    return turns


def generate_drills(n: int, seed: int, split: str = "train", max_turns: int = 12) -> list[dd.Dialogue]:
    """`n` drill conversations of 3..max_turns turns with values from `split` only (deterministic)."""
    dd._check_split(split)
    dd._check_positive("n", n, 0)
    dd._check_positive("max_turns", max_turns, 2)
    rng = random.Random(f"rxt-demo-drills:{split}:{seed}")
    return [_render(rng, split, max_turns) for _ in range(n)]


def template_texts() -> list[str]:
    """This module's own phrases (placeholders unfilled): tests check none holds a pool value."""
    return [t for ts in TAILS.values() for t in ts] + list(TAIL_JOINERS)
