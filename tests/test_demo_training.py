"""The demo model's training recipe (models/demo/recipe/train_demo.py): value-weighted loss, pseudo-values, and
tiny end-to-end runs (one process, and two under torchrun) that write a checkpoint the exporter reads."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "models" / "demo" / "recipe"
sys.path.insert(0, str(RECIPE))

import demo_dialogues as dd  # noqa: E402
import train_demo as td  # noqa: E402

TOKENIZER = RECIPE.parent / "tokenizer.model"


@pytest.fixture(scope="module")
def tok():
    return td.Tok(TOKENIZER)


@pytest.mark.parametrize(
    "answer, value",
    [("Your name is Zeno.", "Zeno"), ("You are 43 years old.", "43"), ("You have a gerbil.", "gerbil")],
)
def test_value_weight_falls_on_the_value_pieces_only(tok, answer, value):
    ids, start, weights = tok.weighted_interaction("Who am I?", answer, value, 5.0, sample=False)
    plain_ids, plain_start = tok.interaction("Who am I?", answer, False)
    assert (ids, start) == (plain_ids, plain_start)
    assert len(weights) == len(ids) - start  # answer pieces and [EOS]
    weighted = "".join(tok.sp.id_to_piece(i) for i, w in zip(ids[start:], weights, strict=True) if w == 5.0)
    assert weighted.replace("▁", "") == value
    assert set(weights) == {1.0, 5.0}


def test_weighted_turns_reach_the_loss_mask():
    data = td.DialogueBatches(TOKENIZER, 10, 16, 0, 2, 1.0, 0.1, False, 0, 0.0, 0.0, 3.0)
    turns, count, _ = data[0]
    masks = [t.loss_mask for t in turns]
    assert any((m == 3.0).any() for m in masks)  # the asked values
    assert count == pytest.approx(float(sum(m.sum() for m in masks)))
    plain = td.DialogueBatches(TOKENIZER, 10, 16, 0, 2, 1.0, 0.1, False, 0, 0.0, 0.0, 1.0)[0][0]
    assert all(set(t.loss_mask.unique().tolist()) <= {0.0, 1.0} for t in plain)


@pytest.mark.parametrize("letters", [0.0, 1.0])
def test_pseudo_values_replace_every_value_consistently(letters):
    rng = random.Random(3)
    forbidden = {v.lower() for pool in dd.POOLS for v in dd.POOLS[pool]} | td._TEMPLATE_WORDS
    for dialogue in dd.generate_dialogues(200, seed=5, split="train"):
        swapped = td.with_pseudo_values(dialogue, rng, letters)
        told = {}
        for old, new in zip(dialogue, swapped, strict=True):
            assert (new.kind, new.fact_key, new.asked_after) == (old.kind, old.fact_key, old.asked_after)
            if old.kind == dd.SMALLTALK:
                assert (new.query, new.answer) == (old.query, old.answer)
            if old.value is None:
                continue
            assert new.value.lower() not in forbidden and len(new.value) > 2
            assert new.value.isdigit() == old.value.isdigit()
            assert told.setdefault(old.value, new.value) == new.value  # one stand-in per value
            if old.kind == dd.ASK:
                assert dd.contains_value(new.answer, new.value)
            assert not td._VALUE_RE.search(new.query + " " + new.answer)  # no original value left


def test_letter_stand_ins_are_spelled_more_freely_than_the_pool_chain():
    """Stand-ins for a small pool's value ("green": 16 train colours feed its chain) drawn from the all-pool
    letter chain use many more letter pairs: the spellings a held-out colour or job needs."""

    def bigrams(letters: float) -> set[str]:
        rng = random.Random(0)
        words = [td.pseudo_value("green", rng, set(), letters) for _ in range(300)]
        assert all(
            w[0] not in "aeiou" and w.islower() for w in words
        )  # "a"/"an" and case still follow "green"
        return {w[i : i + 2] for w in words for i in range(len(w) - 1)}

    pool_only, letter_chain = bigrams(0.0), bigrams(1.0)
    assert len(letter_chain) > 1.3 * len(pool_only)


def test_long_stand_ins_are_8_to_13_letters_and_only_a_share():
    """--long-values (stage 10): long held-out values ("omelettes") were stage 9's misspellings."""
    rng = random.Random(0)
    always = [td.pseudo_value("Sprinkles", rng, set(), 0.5, 1.0) for _ in range(100)]
    assert all(8 <= len(w) <= 13 and w[0].isupper() and w[0] not in "AEIOU" for w in always)
    some = [td.pseudo_value("Sprinkles", rng, set(), 0.5, 0.2) for _ in range(300)]
    assert 0.15 < sum(len(w) >= 8 for w in some) / len(some) < 0.5


def test_tiny_training_run_writes_a_checkpoint_the_exporter_loads(tmp_path):
    from rxt_edge.export.checkpoints.native import load_native

    out = tmp_path / "ckpt"
    argv = ["--device", "cpu", "--tiny", "--steps", "3", "--batch", "4", "--eval-n", "1", "--final-n", "1"]
    argv += ["--eval-procs", "1", "--workers", "1", "--pseudo-values", "0.5", "--value-weight", "4"]
    argv += ["--out", str(out)]
    assert td.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_done"] == 3 and metrics["args"]["value_weight"] == 4.0
    assert set(metrics["final_eval"]["results"]) >= {"told", "no_fact"}
    load_native(out)
    assert re.search(r"\d", (out / "config.json").read_text())


def test_a_turn_longer_than_the_width_cuts_its_conversation_there():
    """--compile pads every interaction to --width: a longer one (rare: stand-ins in a long everyday message)
    ends its conversation instead of stopping the run with a ValueError."""
    data = td.DialogueBatches(TOKENIZER, 10, 4, 0, 12, 0.0, 0.1, False, 24)
    data.tok = td.Tok(TOKENIZER)
    short = dd.Turn("Hi!", "Hello! How can I help?", dd.SMALLTALK)
    long = dd.Turn(
        "I live in Lisbon, and my best friend is Oscar, and I love soup. " * 2, "Nice!", dd.SMALLTALK
    )
    seqs = [data._interaction(t) for t in (short, short, long, short)]
    assert [len(s[0]) <= 24 for s in seqs] == [True, True, False, True]
    assert data._fitting(seqs) == seqs[:2]
    first = data._fitting(seqs[2:])
    assert len(first) == 1 and len(first[0][0]) <= 24  # nothing fits: one small-talk turn stands in
    data.width = 0
    assert data._fitting(seqs) == seqs  # no fixed width, nothing to cut


def test_everyday_batches_with_stand_ins_collate_at_the_device_width():
    """The device recipe's data (65% everyday, stand-ins, value weight) at --width 80, the longest curriculum."""
    data = td.DialogueBatches(
        TOKENIZER, 10, 32, 23, 12, 0.0, 0.1, True, 80, pseudo=0.8, value_weight=8, letters=0.5, everyday=0.65
    )
    for k in (0, 7):
        turns, count, _ = data[k]
        assert turns[0].ids.shape == (32, 80) and count > 0


def test_a_deadline_stops_training_and_still_writes_the_checkpoint(tmp_path, capsys):
    """--deadline: training stops --reserve seconds before it, the checkpoint is written before the final
    evaluation (device_train.sh relies on it), which is cut down when little time is left."""
    out = tmp_path / "ckpt"
    argv = ["--device", "cpu", "--tiny", "--steps", "500", "--batch", "2", "--eval-n", "1", "--final-n", "1"]
    # reserve ~2x the deadline: training stops after its first step, and the final evaluation counts as near the
    # deadline (< reserve / 2 left) however fast that step was (with --reserve 1 a fast machine had 0.5 s left)
    argv += ["--eval-procs", "1", "--workers", "0", "--deadline", "1", "--reserve", "1.99", "--out", str(out)]
    assert td.main(argv) == 0
    log = capsys.readouterr().out
    assert log.index("wrote ") < log.index("final held-out evaluation") and "deadline near" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_done"] == 1 and metrics["reload_check"]


def test_the_time_schedule_reaches_the_floor_when_the_deadline_does(capsys):
    """--lr-by-time: a call stopped by its deadline at step 900 of a 2000-step schedule must still end at the floor
    rate, not at the 70% of the peak the step schedule would be at there."""
    peak = 6e-4
    rates = [td.lr_by_time(t / 40, peak) for t in range(41)]
    assert rates[0] == pytest.approx(peak) and rates[-1] == pytest.approx(0.1 * peak)
    assert all(a >= b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert td.lr_by_time(2.0, peak) == pytest.approx(0.1 * peak)  # past the budget: the floor
    assert td.lr_at(900, 2000, peak, 40) > 0.6 * peak  # what the deadline would leave without it
    with pytest.raises(SystemExit):
        td.parse_args(["--lr-by-time"])
    assert "give --deadline too" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_under_torchrun_train_one_model(tmp_path):
    """torchrun with 2 CPU processes (gloo): gradients averaged, both stop after the same step at the same
    learning rate, rank 0 writes."""
    out = tmp_path / "ckpt"
    argv = ["--device", "cpu", "--tiny", "--steps", "4", "--stop-after", "3", "--batch", "4", "--eval-n", "1"]
    argv += ["--final-n", "1", "--eval-procs", "1", "--workers", "0", "--out", str(out)]
    argv += ["--deadline", "600", "--lr-by-time"]  # rank 0's clock sets every rank's rate (broadcast)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, str(RECIPE / "train_demo.py"), *argv], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps_done"] == 3
    assert metrics["command"].startswith(
        "torchrun --nproc-per-node 2 models/demo/recipe/train_demo.py --device cpu"
    )
    assert done.stdout.count("wrote ") == 1  # only rank 0 evaluates and writes


def _random_demo_model(seed: int):
    from rxt_edge.export.model import RxTModel

    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    cfg = td.demo_config(
        vocab=64,
        special={n: i for n, (i, _) in td.SPECIAL_TOKENS.items()},
        dim=32,
        layers=2,
        heads=4,
        kv_heads=2,
        ffn=48,
        slots=8,
    )
    model = RxTModel(cfg)
    td.init_weights(model, 2)
    with torch.no_grad():  # biases non-zero too, so a misplaced bias row would show
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.05)
    return model.eval()


def test_grown_ffn_computes_the_same_and_its_new_units_learn():
    import torch
    from grow import widen_ffn

    model = _random_demo_model(11)
    grown = widen_ffn(model, 80, torch.Generator().manual_seed(0)).eval()
    assert all(b.ffn.hidden_dim == 80 for b in grown.cfg.decoder.all_layers + grown.cfg.encoder.layers)
    ids = torch.randint(6, 64, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    stm = torch.randn(2, 2, 8, 32)
    with torch.no_grad():
        for m in (model, grown):
            m.initial_stm.copy_(stm[:, :1])
        encoded = [m.encoder(ids, mask) for m in (model, grown)]
        assert torch.allclose(encoded[0], encoded[1], atol=1e-6)
        written = [m.memory(stm, e, mask) for m, e in zip((model, grown), encoded, strict=True)]
        assert torch.allclose(written[0], written[1], atol=1e-6)
        logits = []
        for m in (model, grown):
            k, v = m.memory_kv(stm)
            past_k, past_v = m.empty_cache(2)
            logits.append(m.decoder(ids, past_k, past_v, k, v, all_logits=True)[0])
        assert torch.allclose(logits[0], logits[1], atol=1e-5)
    # the new units are live: one backward step puts gradient on fc2's new (zero) columns
    k, v = grown.memory_kv(stm)
    past_k, past_v = grown.empty_cache(2)
    grown.decoder(ids, past_k, past_v, k, v, all_logits=True)[0].square().mean().backward()
    fc2 = grown.decoder.blocks[0].ffn.fc2.weight
    assert fc2[:, 48:].abs().max() == 0 and fc2.grad[:, 48:].abs().max() > 0


def test_growing_narrower_or_a_fresh_model_is_refused(tmp_path):
    import torch
    from grow import widen_ffn

    with pytest.raises(ValueError, match="narrower"):
        widen_ffn(_random_demo_model(1), 32, torch.Generator())
    with pytest.raises(SystemExit):
        td.parse_args(["--grow-ffn", "768", "--out", str(tmp_path)])
