"""Conformance: an independent runtime written from docs/graph-contract.md (tests/conformance_runtime.py, which
imports nothing from rxt_edge) must reproduce RxTSession on the shipped packages, token for token and STM for STM.

Tolerance: none. Both run the same graphs on onnxruntime's CPU provider with one thread, so every answer token
must be equal and every STM bit-identical (np.array_equal); a contract mismatch shows up as different tokens or an
STM that differs by far more than rounding. The script covers a system prompt (or its refusal, where the manifest says the model takes none), several turns, an answer cut by
max_new_tokens, a query at the length limit (budget 1), a left-truncated query, the refusals, the fingerprint and
snapshots written by one runtime and read by the other. `test_drift_is_detected` shows the comparison fails when
the runtime's turn template drifts from the contract.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conformance_runtime import ConformanceError, MinimalRuntime, greedy, read_snapshot, write_snapshot

from rxt_edge import PromptTooLongError, RxTSession, SamplingConfig, contract
from rxt_edge.conversation import SystemPromptUnsupportedError
from rxt_edge.sampling import sample_next

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "models" / "demo" / "package", ROOT / "models" / "demo" / "package-int8"]
SYSTEM = "You are a concise assistant. The user's name is Ann and she lives in Oslo."
QUERIES = [
    "Hi! My name is Ann.",
    "My dog is called Rex.",
    "I live in Oslo.",
    "What is my name?",
    "What is my dog called?",
]

pytestmark = pytest.mark.skipif(
    not (PACKAGES[0] / "manifest.json").exists(), reason="demo packages not built"
)


class Comparison:
    """Runs one script through both runtimes and collects every difference (empty: conformant)."""

    def __init__(self, package: Path, inplace: bool):
        self.session = RxTSession.load(package, threads=1)
        self.conv = self.session.conversation()
        self.mini = MinimalRuntime(package, inplace=inplace, threads=1)
        self.problems: list[str] = []
        self.answers = 0

    def close(self) -> None:
        self.session.close()

    def stm(self, what: str) -> None:
        ours, theirs = self.conv.stm(), self.mini.stm
        if not np.array_equal(ours, theirs):
            diff = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
            self.problems.append(f"{what}: STM differs (max abs {diff:.3g})")

    def turn(self, ids: list[int], what: str, length: int | None = None, **options) -> None:
        """One turn in both; `length`: the answer length the scenario needs (else it tests nothing)."""
        ours = self.conv.interact_ids(ids, **options)
        theirs = self.mini.turn(ids, **options)
        self.answers += len(ours)
        if ours != theirs:
            self.problems.append(f"{what}: answer {ours} != {theirs}")
        if length is not None and len(ours) != length:
            self.problems.append(f"{what}: the scenario needs a {length}-token answer, got {len(ours)}")
        self.stm(what)

    def script(self, tmp_path: Path) -> list[str]:
        if self.session.package.fingerprint != self.mini.fingerprint:
            self.problems.append("fingerprint differs")
        self.stm("initial STM")
        if self.mini.takes_system_prompt:
            self.conv.set_system_prompt(SYSTEM)
            self.mini.system_prompt(SYSTEM)
        else:  # the manifest says the model takes none: both refuse, the memory untouched
            with pytest.raises(SystemPromptUnsupportedError):
                self.conv.set_system_prompt(SYSTEM)
            with pytest.raises(ConformanceError):
                self.mini.system_prompt(SYSTEM)
        self.stm("system prompt")
        encode = self.mini.tokenizer.encode
        for i, q in enumerate(QUERIES):
            if encode(q) != self.session.package.tokenizer.encode(q):
                self.problems.append(f"tokenization of {q!r} differs")
            self.turn(encode(q), f"turn {i}")
        self.turn(encode("Tell me about my dog."), "answer cut by max_new_tokens", 2, max_new_tokens=2)
        self.conv.reset()  # the limit scenarios from a fresh STM: their answer lengths do not hang on history
        self.mini.set_stm(self.mini.initial_stm)
        self.stm("reset")
        limit = self.session.dims.max_seq_len
        room = contract.max_query_tokens(limit)
        # small talk, not facts: the demo answers a cut-off run of facts with "." and [EOS] (1 token), which
        # would leave the 2-token budget untested; a cut-off greeting runs on past the budget
        long = (encode("Hello there, how are you today? ") * limit)[: room + 1]
        self.turn(long[: room - 1], "query one below the limit (budget 2)", 2)
        self.turn(long[:room], "query at the length limit (budget 1)", 1)
        self.turn(long, "left-truncated query", 1, truncate=True)
        with pytest.raises(PromptTooLongError):
            self.conv.interact_ids(long)
        with pytest.raises(ConformanceError):
            self.mini.turn(long)
        with pytest.raises(ValueError):
            self.conv.interact_ids(encode("Hi"), max_new_tokens=0)
        with pytest.raises(ConformanceError):
            self.mini.turn(encode("Hi"), max_new_tokens=0)
        self.stm("after the refusals")
        self._snapshots(tmp_path)
        return self.problems

    def _snapshots(self, tmp_path: Path) -> None:
        """contract 'snapshot': each runtime reads what the other wrote."""
        ours = tmp_path / "ours.rxtsnap"
        self.conv.save(ours)
        stm, meta = read_snapshot(ours, self.mini.fingerprint)
        if not np.array_equal(stm, self.mini.stm) or meta.get("turns") != self.conv.turns:
            self.problems.append("a snapshot written by rxt_edge reads back differently")
        theirs = tmp_path / "theirs.rxtsnap"
        write_snapshot(theirs, self.mini.stm, self.mini.fingerprint, {"turns": 3})
        restored = self.session.restore(theirs)
        if not np.array_equal(restored.stm(), self.mini.stm) or restored.turns != 3:
            self.problems.append("a snapshot written from the contract restores differently")
        self.conv = restored
        self.turn(self.mini.tokenizer.encode("What is my name?"), "turn after restoring")


@pytest.fixture(scope="module")
def dynamic_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo checkpoint exported with the dynamic KV cache (the shipped packages have the static one), and
    without the no-system-prompt mark: the other decoder layout and the system-prompt path."""
    from rxt_edge.export.checkpoints import load_checkpoint
    from rxt_edge.export.onnx_export import export_package

    model, source = load_checkpoint(ROOT / "models" / "demo" / "checkpoint")
    out = tmp_path_factory.mktemp("dynamic_demo") / "package"
    export_package(model, source, out, kv_cache="dynamic")
    return out


@pytest.mark.parametrize(
    "which, inplace",
    [(0, True), (1, False), ("dynamic", True)],
    ids=["fp32-static-inplace-binding", "int8-static-run-and-copy", "fp32-dynamic-inplace-binding"],
)
def test_independent_runtime_matches_rxt_session(which, inplace, tmp_path, request):
    package = request.getfixturevalue("dynamic_demo") if which == "dynamic" else PACKAGES[which]
    static = json.loads((package / "manifest.json").read_text())["graphs"]["decoder"].get("kv_cache")
    assert static == ("static" if which != "dynamic" else None)  # each layout is what this case says
    cmp = Comparison(package, inplace)
    try:
        problems = cmp.script(tmp_path)
    finally:
        cmp.close()
    assert not problems, "\n".join(problems)
    assert cmp.answers > 20  # the script really generated (an empty answer everywhere would compare equal)


def test_drift_is_detected(monkeypatch, tmp_path):
    """A runtime that writes [EOS] after an answer cut at the budget (the contract says it does not) is caught."""
    real = contract.turn_interaction
    monkeypatch.setattr(
        contract, "turn_interaction", lambda sp, prompt, answer, ended=True: real(sp, prompt, answer)
    )
    cmp = Comparison(PACKAGES[0], inplace=True)
    try:
        problems = cmp.script(tmp_path)
    finally:
        cmp.close()
    assert any("answer cut by max_new_tokens: STM differs" in p for p in problems), problems


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_greedy_tie_break_is_the_contracts(dtype):
    """Ties never happen in the scripted turns, so the tie-break rule (first maximum) is compared directly."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        row = rng.integers(-3, 4, size=64).astype(dtype)  # few distinct values: many tied maxima
        assert (
            sample_next(row, SamplingConfig(temperature=0.0))
            == greedy(row)
            == int(np.flatnonzero(row == row.max())[0])
        )
    row = np.array([1.0, np.inf, 2.0, np.inf], dtype)
    assert sample_next(row, SamplingConfig(temperature=0.0)) == greedy(row) == 1
