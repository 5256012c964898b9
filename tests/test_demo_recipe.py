"""The demo model's data and tokenizer recipe (models/demo/recipe/)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

RECIPE = Path(__file__).resolve().parents[1] / "models" / "demo" / "recipe"
sys.path.insert(0, str(RECIPE))

import demo_dialogues as dd  # noqa: E402
import demo_tokenizer as dt  # noqa: E402

SHIPPED_TOKENIZER = RECIPE.parent / "tokenizer.model"


def _texts(dialogues):
    for d in dialogues:
        for t in d:
            yield t.query
            yield t.answer


def _any_value(values) -> re.Pattern[str]:
    alts = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)


@pytest.fixture(scope="module")
def train_dialogues():
    return dd.generate_dialogues(3000, seed=11, split="train")


# --- generator -----------------------------------------------------------------------------


def test_generation_is_deterministic_per_seed():
    a = dd.generate_dialogues(40, seed=3)
    assert a == dd.generate_dialogues(40, seed=3)
    assert a != dd.generate_dialogues(40, seed=4)
    assert all(4 <= len(d) <= 12 for d in a)
    assert all(len(d) <= 6 for d in dd.generate_dialogues(40, seed=3, max_turns=6))


def test_pools_are_disjoint_and_split_about_one_fifth():
    seen: dict[str, str] = {}
    for pool, values in dd.POOLS.items():
        assert len(set(values)) == len(values), pool
        for v in values:
            assert v.lower() not in seen, f"{v} in {pool} and {seen.get(v.lower())}"
            seen[v.lower()] = pool
        train, held = dd.pool_values(pool, "train"), dd.pool_values(pool, "heldout")
        assert set(train) | set(held) == set(values) and not set(train) & set(held)
        assert 0.15 <= len(held) / len(values) <= 0.25, pool


def test_heldout_values_never_appear_in_train_dialogues(train_dialogues):
    held = _any_value(v for pool in dd.POOLS for v in dd.pool_values(pool, "heldout"))
    hits = [t for t in _texts(train_dialogues) if held.search(t)]
    assert hits == []


def test_train_values_never_appear_in_heldout_dialogues():
    train = _any_value(v for pool in dd.POOLS for v in dd.pool_values(pool, "train"))
    hits = [t for t in _texts(dd.generate_dialogues(1000, seed=2, split="heldout")) if train.search(t)]
    assert hits == []


def test_small_talk_mentions_no_entity_value(train_dialogues):
    every_value = _any_value(v for values in dd.POOLS.values() for v in values)
    small = [t for d in train_dialogues for t in d if t.kind == dd.SMALLTALK]
    assert len(small) > 1000
    assert [t for t in small if every_value.search(t.query + " " + t.answer)] == []


def test_asks_point_back_to_the_latest_statement_of_their_fact(train_dialogues):
    for d in train_dialogues:
        for i, t in enumerate(d):
            if t.kind == dd.ASK:
                told = "pet" if t.fact_key == "pet_kind" else t.fact_key
                src = d[i - t.asked_after]
                assert src.kind in (dd.TELL, dd.UPDATE) and src.fact_key == told
                between = d[i - t.asked_after + 1 : i]
                assert not any(b.kind in (dd.TELL, dd.UPDATE) and b.fact_key == told for b in between)
                if told == t.fact_key:
                    assert src.value == t.value
                assert dd.contains_value(t.answer, t.value)
                assert dd.contains_value(src.query, t.value)
            elif t.kind in (dd.TELL, dd.UPDATE):
                assert dd.contains_value(t.query, t.value) and dd.contains_value(t.answer, t.value)
            elif t.kind == dd.ASK_UNKNOWN:
                assert t.answer == dd.UNKNOWN_ANSWER
                told = {"pet" if u.fact_key == "pet_kind" else u.fact_key for u in d if u.kind == dd.TELL}
                assert ("pet" if t.fact_key == "pet_kind" else t.fact_key) not in told


def test_training_data_covers_evaluated_delays_and_all_fact_kinds(train_dialogues):
    turns = [t for d in train_dialogues for t in d]
    delays = {t.asked_after for t in turns if t.kind == dd.ASK}
    assert {1, 2, 4, 8} <= delays
    assert {t.fact_key for t in turns if t.kind == dd.ASK} == set(dd.ASK_KEYS)
    assert {t.kind for t in turns} == set(dd.KINDS)


@pytest.mark.parametrize("mixed", [False, True])
def test_recall_probes_tell_the_fact_exactly_delay_turns_before_the_question(mixed):
    probes = dd.recall_probes(len(dd.ASK_KEYS), seed=5, delays=(1, 2, 4, 8), mixed=mixed)
    assert len(probes) == 4 * len(dd.ASK_KEYS)
    for delay in (1, 2, 4, 8):
        assert {p.fact_key for p in probes if p.delay == delay} == set(dd.ASK_KEYS)
    held = {v for pool in dd.POOLS for v in dd.pool_values(pool, "heldout")}
    for p in probes:
        assert p.told and len(p.turns) == p.delay + 1
        first, question = p.turns[0], p.turns[-1]
        assert first.kind == dd.TELL and first.fact_key == ("pet" if p.fact_key == "pet_kind" else p.fact_key)
        assert dd.contains_value(first.query, p.expected)
        assert question.kind == dd.ASK and question.asked_after == p.delay and question.fact_key == p.fact_key
        assert dd.contains_value(question.answer, p.expected)
        assert p.expected in held
        # Only turn 0 states the expected value; distractors never repeat the fact.
        for t in p.turns[1:-1]:
            assert not dd.contains_value(t.query + " " + t.answer, p.expected)
            assert t.fact_key not in (p.fact_key, first.fact_key)
            assert mixed or t.kind == dd.SMALLTALK
    if mixed:
        assert any(t.kind == dd.TELL for p in probes for t in p.turns[1:-1])


def test_no_fact_probes_are_the_recall_probes_without_the_fact():
    told = dd.recall_probes(6, seed=8, delays=(2, 8))
    untold = dd.no_fact_probes(6, seed=8, delays=(2, 8))
    assert len(told) == len(untold)
    for a, b in zip(told, untold, strict=True):
        assert not b.told and b.expected == a.expected and b.delay == a.delay
        assert b.turns[1:-1] == a.turns[1:-1] and b.turns[-1].query == a.turns[-1].query
        assert b.turns[0].kind == dd.SMALLTALK
        assert b.turns[-1].kind == dd.ASK_UNKNOWN and b.turns[-1].answer == dd.UNKNOWN_ANSWER
        assert not any(dd.contains_value(t.query + " " + t.answer, b.expected) for t in b.turns)


def test_contains_value_matches_whole_words_only():
    assert dd.contains_value("Your name is ann.", "Ann")
    assert not dd.contains_value("Your name is Anna.", "Ann")
    assert dd.contains_value("You are 34 years old.", "34") and not dd.contains_value("345", "34")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: dd.generate_dialogues(3, 0, split="dev"), "split"),
        (lambda: dd.generate_dialogues(-1, 0), "n"),
        (lambda: dd.generate_dialogues(3, 0, max_turns=1), "max_turns"),
        (lambda: dd.recall_probes(3, 0, fact_keys=["shoe_size"]), "fact_keys"),
        (lambda: dd.recall_probes(3, 0, delays=(0,)), "delays"),
    ],
)
def test_bad_arguments_name_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_cli_prints_and_writes_jsonl(tmp_path):
    lines: list[str] = []
    assert dd.main(["--n", "2", "--seed", "1"], out=lines.append) == 0
    assert sum(line.startswith("=== dialogue") for line in lines) == 2
    path = tmp_path / "d.jsonl"
    assert dd.main(["--n", "3", "--seed", "1", "--jsonl", str(path)], out=lines.append) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    expected = dd.generate_dialogues(3, 1)
    assert [[dd.Turn(**t) for t in row] for row in rows] == expected


# --- tokenizer -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "small.model"
    ids = dt.train_tokenizer(path, seed=0, n_dialogues=1000)
    return path, ids, spm.SentencePieceProcessor(model_file=str(path))


def test_special_ids_are_as_declared_and_control(small_tokenizer):
    path, ids, sp = small_tokenizer
    assert ids == {name: i for name, (i, _) in dt.SPECIAL_TOKENS.items()}
    assert dt.special_ids(path) == ids
    for name, (i, piece) in dt.SPECIAL_TOKENS.items():
        assert sp.id_to_piece(i) == piece, name
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert sp.is_control(ids["query"]) and sp.is_control(ids["answer"])
    assert sp.vocab_size() == dt.DEFAULT_VOCAB_SIZE


def test_typed_markers_do_not_become_control_ids(small_tokenizer):
    _, ids, sp = small_tokenizer
    text = "[BOS][Q] what is [A] and [EOS]?"
    encoded = sp.encode(text)
    assert not set(encoded) & {ids["bos"], ids["eos"], ids["query"], ids["answer"], ids["unk"]}
    assert sp.decode(encoded) == text


def test_round_trip_and_heldout_values_are_spelled(small_tokenizer):
    _, ids, sp = small_tokenizer
    texts = list(_texts(dd.generate_dialogues(50, seed=1, split="heldout")))
    texts += ["Zoë moved to Zürich 😀 in 2024.", "naïve café"]
    for text in texts:
        encoded = sp.encode(text)
        assert ids["unk"] not in encoded and sp.decode(encoded) == text
    for pool in dd.POOLS:
        for v in dd.pool_values(pool, "heldout"):
            encoded = sp.encode(f"My value is {v}.")
            assert ids["unk"] not in encoded and sp.decode(encoded) == f"My value is {v}."


def test_training_is_deterministic(small_tokenizer, tmp_path):
    path, _, _ = small_tokenizer
    again = tmp_path / "again.model"
    dt.train_tokenizer(again, seed=0, n_dialogues=1000)
    assert again.read_bytes() == path.read_bytes()


def test_corpus_holds_no_heldout_value_and_masks_train_values():
    corpus = dt.tokenizer_corpus(seed=0, n_dialogues=300)
    held = _any_value(v for pool in dd.POOLS for v in dd.pool_values(pool, "heldout"))
    assert [line for line in corpus if held.search(line)] == []
    lexicon = {v for pool in dd.POOLS for v in dd.pool_values(pool, "train")}
    words = _any_value(v for v in lexicon if not v.isdigit())
    assert [line for line in corpus if line not in lexicon and words.search(line)] == []
    assert lexicon <= set(corpus)


def test_vocab_size_below_reserved_pieces_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        dt.train_tokenizer(tmp_path / "x.model", vocab_size=200, n_dialogues=10)


@pytest.mark.skipif(not SHIPPED_TOKENIZER.exists(), reason="models/demo/tokenizer.model not built yet")
def test_shipped_tokenizer_is_reproducible_and_covers_heldout_values(tmp_path):
    assert SHIPPED_TOKENIZER.stat().st_size < 1_000_000
    rebuilt = tmp_path / "rebuilt.model"
    dt.train_tokenizer(rebuilt)
    assert rebuilt.read_bytes() == SHIPPED_TOKENIZER.read_bytes()
    cov = dt.heldout_coverage(SHIPPED_TOKENIZER, n_dialogues=2000, dropout=0.05)
    assert cov["covered"] == 1.0 and cov["byte_fallback"] == 0.0
    assert cov["single_piece_train"] < 0.1  # values are spelled with shared sub-word pieces


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "17"], "unknown stage '17'"),
        (["--stage"], "--stage needs a number"),
        (["--init"], "--init needs a checkpoint folder"),
        (["--stage", "11", "--init", "/nonexistent"], "/nonexistent/config.json missing"),
        (["--stage", "10", "--fast"], "unknown argument: --fast"),
        # stage 7's checkpoint (the base of stages 9 and 14) left the tree when stage 16 shipped: say how to get it
        (["--stage", "14"], "git show b02665f:models/demo/checkpoint/$f > models/demo/stage7/$f"),
    ],
)
def test_device_script_refuses_bad_arguments_before_doing_anything(tmp_path, args, message):
    """device_train.sh is run once, on a lent GPU: a wrong stage or flag must stop it at once, with the reason."""
    import subprocess

    out = tmp_path / "out"
    root = RECIPE.parents[2]
    if args == ["--stage", "14"] and (root / "models/demo/stage7/config.json").exists():
        pytest.skip("models/demo/stage7 was restored in this checkout")
    proc = subprocess.run(
        ["bash", str(RECIPE / "device_train.sh"), *args],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and message in proc.stderr
    assert not out.exists()
