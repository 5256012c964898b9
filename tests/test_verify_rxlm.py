"""`rxt-edge verify --reference rxlm`: rxlm itself (its own from_pretrained and interact()) against the runtime.

Random-weight models rarely pick [EOS], so most answers here end at the length limit: the case where the memory
rule matters (a cut answer enters memory without [EOS], as rxlm writes it)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rxlm")

from rxt_edge.apps.cli import app  # noqa: E402
from rxt_edge.export.verify_rxlm import RxlmUnavailableError, verify_against_rxlm  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from rxt_edge import contract  # noqa: E402


@pytest.mark.parametrize("name", ["rxlm_alpha_sqa_moe", "rxlm_beta_like"])
def test_runtime_answers_as_rxlm_does_over_turns_with_cut_answers(exported, name):
    e = exported(name)
    report = verify_against_rxlm(e.package, e.checkpoint, turns=4, max_new_tokens=8)
    assert report.passed, report.failures
    assert all(t.token_agreement == 1.0 and t.rxlm_answer for t in report.turns)
    assert sum(len(t.runtime_answer) == 8 for t in report.turns) >= 2  # cut answers were exercised
    first = report.turns[0]
    assert first.stm_max_diff <= 1e-3 * first.stm_scale  # one update from the same STM: rounding only


def test_a_runtime_writing_eos_after_a_cut_answer_fails(exported, monkeypatch):
    """The drift the check exists for: the old rule (always [EOS]) makes the memories, then answers, differ."""
    e = exported("rxlm_alpha_sqa_moe")
    real = contract.turn_interaction
    monkeypatch.setattr(contract, "turn_interaction", lambda sp, p, a, ended=True: real(sp, p, a, True))
    report = verify_against_rxlm(e.package, e.checkpoint, turns=4, max_new_tokens=8)
    assert not report.passed and report.failures


def test_per_component_checkpoints_are_refused_clearly(exported):
    e = exported("rxlm_comp_self")
    with pytest.raises(RxlmUnavailableError, match="per-component layout"):
        verify_against_rxlm(e.package, e.checkpoint, turns=1)


def test_cli_reference_rxlm(exported):
    e = exported("rxlm_alpha_sqa_moe")
    args = ["verify", str(e.package), "--against", str(e.checkpoint), "--reference", "rxlm", "--turns", "2"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reference"].startswith("rxlm") and report["passed"]
    bad = CliRunner().invoke(app, [*args[:-4], "--reference", "llama"])
    assert bad.exit_code != 0 and "--reference must be torch or rxlm" in bad.output
