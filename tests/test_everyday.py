"""Issue 19: the demo model's everyday-typing data (models/demo/recipe/demo_everyday.py), the evaluation set written
apart from it (everyday_eval.py), and a fast subset of that set through the shipped int8 package."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "models" / "demo" / "recipe"
INT8 = ROOT / "models" / "demo" / "package-int8"
sys.path.insert(0, str(RECIPE))

import demo_dialogues as dd  # noqa: E402
import demo_drills as dr  # noqa: E402
import demo_everyday as de  # noqa: E402
import everyday_eval as ev  # noqa: E402

ALL_VALUES = re.compile(
    r"(?<!\w)(?:"
    + "|".join(re.escape(v) for vs in dd.POOLS.values() for v in sorted(vs, key=len, reverse=True))
    + r")(?!\w)",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def everyday():
    return de.generate_everyday(1500, seed=4, split="train")


def _norm(text: str) -> str:
    """Lower case, values masked, punctuation and apostrophes dropped: two phrasings equal here are the same."""
    text = ALL_VALUES.sub(" vvv ", text.lower())
    return " ".join(re.sub(r"[^a-z0-9 ]+", "", text).split())


# --- generator ------------------------------------------------------------------------------------------------


def test_everyday_generation_is_deterministic_per_seed():
    a = de.generate_everyday(30, seed=2)
    assert a == de.generate_everyday(30, seed=2) and a != de.generate_everyday(30, seed=3)


def test_phrases_hold_no_pool_value():
    """Every value in a dialogue is a fact value, so `contains_value` and the pseudo-value swap stay exact."""
    texts = de.template_texts() + dr.template_texts()
    assert [t for t in texts if ALL_VALUES.search(t.replace("{", " {"))] == []
    assert [q for q in ev.GREETINGS + ev.FILLERS + ev.GREETING_PREFIXES if ALL_VALUES.search(q)] == []


def test_split_is_kept(everyday):
    held = {v.lower() for p in dd.POOLS for v in dd.pool_values(p, "heldout")}
    words = {w.lower() for d in everyday for t in d for w in re.findall(r"\w+", f"{t.query} {t.answer}")}
    assert words.isdisjoint(held - {"a", "an"})
    train = {v.lower() for p in dd.POOLS for v in dd.pool_values(p, "train")}
    held_words = {
        w.lower()
        for d in de.generate_everyday(300, 1, "heldout")
        for t in d
        for w in re.findall(r"\w+", t.query)
    }
    assert held_words.isdisjoint(train)


def test_asks_expect_the_latest_value_and_two_fact_tells_name_both(everyday):
    kinds = set()
    for d in everyday:
        told: dict[str, tuple[int, str]] = {}
        for i, t in enumerate(d):
            if t.kind in (dd.TELL, dd.UPDATE):
                keys = t.fact_key.split("+")
                kinds.add("two" if len(keys) == 2 else t.kind)
                for k in keys:
                    values = [v for v in dd.POOLS[dd.FACT_POOL[k]] if dd.contains_value(t.query, v)]
                    assert values, t
                    # the acknowledgement repeats every told value (as typed, so any case)
                    assert all(dd.contains_value(t.answer, v) for v in values), t
                    told[k] = (i, next(v for v in values if k != "pet" or v in dd.PET_NAMES))
            elif t.kind == dd.ASK:
                key = "pet" if t.fact_key == "pet_kind" else t.fact_key
                at, value = told[key]
                assert t.asked_after == i - at
                assert dd.contains_value(t.answer, t.value)
                if t.fact_key != "pet_kind":
                    assert t.value.lower() == value.lower()
            elif t.kind == dd.SMALLTALK:
                assert not ev.is_fact_sentence(t.answer), t
    assert kinds == {dd.TELL, dd.UPDATE, "two"}


def test_typing_noise_varies_case_punctuation_and_spelling_but_never_a_value(everyday):
    queries = [t for d in everyday for t in d]
    assert sum(t.query.islower() for t in queries) > 0.2 * len(queries)
    assert sum(not t.query.rstrip().endswith((".", "!", "?")) for t in queries) > 0.2 * len(queries)
    for t in queries:
        if t.value and t.kind in (dd.TELL, dd.UPDATE):
            assert dd.contains_value(t.query, t.value)
    greetings = {_norm(t.query) for t in queries if t.kind == dd.SMALLTALK}
    assert {"hi", "hello", "good morning", "hey", "how are you", "thanks"} <= greetings  # the issue's own


def test_every_interaction_fits_the_training_width():
    """train_demo.py --compile pads every interaction to --width 80; pseudo-values make them longer."""
    import train_demo as td

    tok, rng = td.Tok(td.DEFAULT_TOKENIZER), random.Random(0)
    lengths = [
        len(tok.interaction(t.query, t.answer, False)[0])
        for d in de.generate_everyday(400, seed=9)
        for t in td.with_pseudo_values(d, rng, 0.5)
    ]
    assert max(lengths) <= 76


def test_pseudo_values_keep_the_case_the_user_typed():
    import train_demo as td

    name = dd.pool_values("names", "train")[0]
    low = name.lower()
    d = [
        dd.Turn(f"my name's {low}", f"Nice to meet you, {low}!", dd.TELL, "name", None, low),
        dd.Turn("WHO AM I", f"Your name is {name}.", dd.ASK, "name", 1, name),
    ]
    s = td.with_pseudo_values(d, random.Random(1), 0.5)
    new = s[1].value
    assert new.lower() != low and new[0].isupper()
    assert s[0].query == f"my name's {new.lower()}" and s[0].answer == f"Nice to meet you, {new.lower()}!"
    assert s[1].answer == f"Your name is {new}."
    assert not td._VALUE_RE.search(" ".join(t.query + t.answer for t in s))


def test_batches_mix_in_the_everyday_share():
    import train_demo as td

    data = td.DialogueBatches(td.DEFAULT_TOKENIZER, 10, 8, 0, 12, 0.0, 0.1, False, 0, everyday=0.5)
    plain = td.DialogueBatches(td.DEFAULT_TOKENIZER, 10, 8, 0, 12, 0.0, 0.1, False, 0)
    a, b = data[3][0], plain[3][0]
    assert a[0].ids.shape[0] == b[0].ids.shape[0] == 8
    assert not all(x.ids.shape == y.ids.shape and (x.ids == y.ids).all() for x, y in zip(a, b, strict=False))


# --- stage-10 drills ----------------------------------------------------------------------------------------------


def test_drills_ask_each_fact_of_a_pair_and_the_corrected_value():
    """Every question expects the fact's current value at the right delay; most two-fact messages get a question
    about each of their facts, corrections get a later question, and never-told facts are asked too."""
    drills = dr.generate_drills(400, seed=5)
    assert drills == dr.generate_drills(400, seed=5) != dr.generate_drills(400, seed=6)
    pairs = both = corrected_asked = unknown = 0
    for d in drills:
        told: dict[str, tuple[int, str]] = {}
        for i, t in enumerate(d):
            if t.kind in (dd.TELL, dd.UPDATE):
                keys = t.fact_key.split("+")
                for k in keys:
                    told[k] = (i, next(v for v in dd.POOLS[dd.FACT_POOL[k]] if dd.contains_value(t.query, v)))
                if len(keys) == 2:
                    pairs += 1
                    asked = {
                        "pet" if u.fact_key == "pet_kind" else u.fact_key
                        for u in d[i + 1 :]
                        if u.kind == dd.ASK
                    }
                    both += set(keys) <= asked
                if t.kind == dd.UPDATE:
                    corrected_asked += any(
                        u.kind == dd.ASK and u.fact_key in (t.fact_key, "pet_kind") for u in d[i + 1 :]
                    )
            elif t.kind == dd.ASK:
                key = "pet" if t.fact_key == "pet_kind" else t.fact_key
                at, value = told[key]
                assert t.asked_after == i - at and 1 <= t.asked_after <= 11
                if t.fact_key != "pet_kind":
                    assert t.value.lower() == value.lower() and dd.contains_value(t.answer, value), t
            elif t.kind == dd.ASK_UNKNOWN:
                unknown += 1
                assert t.fact_key not in told and t.answer == dd.UNKNOWN_ANSWER
    updates = sum(t.kind == dd.UPDATE for d in drills for t in d)
    assert pairs > 400 and both > 0.6 * pairs
    assert updates > 100 and corrected_asked > 0.7 * updates and unknown > 100


def test_two_fact_messages_also_come_with_a_subjectless_tail():
    rng = random.Random(0)
    facts = dd._draw_facts(rng, "train")
    turns = [dr._tell_pair("name", "city", facts, rng) for _ in range(200)]
    queries = [_norm(t.query) for t in turns]
    # "currently in" / "originally from" are tail forms only (TELLS say "I currently live in", "I'm from")
    assert sum(("currently in vvv" in q or "originally from vvv" in q) for q in queries) > 10
    assert all(
        dd.contains_value(t.answer, facts["name"]) and dd.contains_value(t.answer, facts["city"])
        for t in turns
    )


def test_drills_keep_the_split_and_fit_the_training_width():
    import train_demo as td

    held = {v.lower() for p in dd.POOLS for v in dd.pool_values(p, "heldout")}
    drills = dr.generate_drills(300, seed=2)
    words = {w.lower() for d in drills for t in d for w in re.findall(r"\w+", f"{t.query} {t.answer}")}
    assert words.isdisjoint(held - {"a", "an"})
    tok = td.Tok(td.DEFAULT_TOKENIZER)

    def lengths(long: float) -> list[int]:
        rng = random.Random(0)
        return [
            len(tok.interaction(t.query, t.answer, False)[0])
            for d in drills
            for t in td.with_pseudo_values(d, rng, 0.5, long)
        ]

    assert max(lengths(0.0)) <= 78
    # 8-13 letter stand-ins (--long-values) may push a rare one past the width: the trainer cuts it there
    long = lengths(0.2)
    assert sum(n > 80 for n in long) <= 0.002 * len(long) and sum(n > 76 for n in long) > 0


def test_batches_mix_in_drills_and_refuse_shares_over_one():
    import train_demo as td

    data = td.DialogueBatches(
        td.DEFAULT_TOKENIZER, 10, 8, 0, 12, 0.0, 0.1, False, 0, everyday=0.5, drills=0.25
    )
    plain = td.DialogueBatches(td.DEFAULT_TOKENIZER, 10, 8, 0, 12, 0.0, 0.1, False, 0, everyday=0.5)
    a, b = data[3][0], plain[3][0]
    assert a[0].ids.shape[0] == b[0].ids.shape[0] == 8
    assert not all(x.ids.shape == y.ids.shape and (x.ids == y.ids).all() for x, y in zip(a, b, strict=False))
    with pytest.raises(ValueError, match="sum to at most 1"):
        td.DialogueBatches(td.DEFAULT_TOKENIZER, 10, 8, 0, 12, 0.0, 0.1, False, 0, everyday=0.8, drills=0.3)


# --- the evaluation set -----------------------------------------------------------------------------------------


def test_eval_queries_are_written_apart_from_the_generators():
    """No evaluation query (lower case, no punctuation, values masked) is one the generators produce."""
    produced = {_norm(t.query) for d in de.generate_everyday(4000, seed=0) for t in d}
    produced |= {_norm(t.query) for d in dr.generate_drills(3000, seed=0) for t in d}
    produced |= {_norm(t.query) for d in dd.generate_dialogues(1500, seed=0) for t in d}
    queries = {_norm(q) for d in ev.build() for q in d.queries}
    assert len(queries) > 150
    assert sorted(queries & produced) == []


def test_eval_set_covers_every_category_and_delay_with_heldout_values():
    dialogues = ev.build()
    assert len(dialogues) >= 200
    cells = {(d.category, d.delay) for d in dialogues}
    assert cells == {(c, k) for c in ev.CATEGORIES for k in ev.DELAYS}
    held = {v for p in dd.POOLS for v in dd.pool_values(p, "heldout")}
    for d in dialogues:
        for _kind, expected, forbidden in d.checks.values():
            assert expected is None or expected in held
            assert forbidden is None or forbidden in held


@pytest.mark.parametrize(
    "kind, expected, forbidden, answer, ok",
    [
        ("smalltalk", None, None, "Hello! How can I help?", True),
        ("smalltalk", None, None, "You're welcome!", True),
        ("smalltalk", None, None, "Your best friend is Doritom.", False),
        ("smalltalk", None, None, "I don't know yet, you haven't told me.", False),
        ("smalltalk", None, None, "Hepe welcome, Lisbon!", False),
        ("recall", "Oscar", None, "Your name is oscar.", True),
        ("recall", "Annie", "Oscar", "You are Annie, not Oscar.", False),
        ("unknown", None, "Lisbon", "I don't know yet, you haven't told me.", True),
        ("unknown", None, "Lisbon", "You live in Lisbon.", False),
    ],
)
def test_judge(kind, expected, forbidden, answer, ok):
    assert ev.judge(kind, expected, forbidden, answer)["ok"] is ok


# --- the shipped model ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (INT8 / "manifest.json").exists(), reason="demo package not built")
def test_shipped_int8_demo_on_an_everyday_subset():
    """28 dialogues (one per category and delay) through the runtime, asserting issue 19's targets (90% overall,
    no greeting answered with a fact sentence, never-told facts answered "I don't know") with a margin for the
    smaller sample."""
    from rxt_edge import RxTSession

    with RxTSession.load(INT8, threads=1) as session:

        def factory():
            conv = session.conversation()
            return lambda q: conv.say(q, max_new_tokens=40)

        s = ev.summarise(ev.run(factory, ev.build(per_cell=1, seed=5)))
    cats = s["categories"]
    assert s["greetings_with_fact_sentence"] == 0.0, s
    assert cats["never_told"]["all"] >= 0.75, s
    assert s["overall"] >= 0.8, s
