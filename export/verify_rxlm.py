"""`rxt-edge verify --reference rxlm`: the package against rxlm itself, token for token over a conversation.

`verify` (verify.py) compares a package with *our* torch model read from the checkpoint; that proves the export,
not the reader. This check removes our reader from the loop: rxlm loads the checkpoint with its own
`from_pretrained` and answers each turn with its own `interact()` (greedy: top_k 1), while the torch-free runtime
holds its own conversation from the package. Per turn: the answers' token agreement, and the two STMs after the
memory update (rxlm's own, from the interaction it generated). rxlm's `interact()` writes an answer cut at the
length limit into memory without [EOS]; the runtime follows the same rule (rxt_edge.contract.turn_interaction).

rxlm is licensed non-commercially; it is imported only here, only when asked for, and never shipped.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rxt_edge import contract
from rxt_edge.session import RxTSession

from .checkpoints.rxlm_twin import reset_rxlm_caches, rxlm_version
from .verify import DEFAULT_QUERIES, TOLERANCES


class RxlmUnavailableError(RuntimeError):
    """rxlm is not installed, or cannot load this checkpoint as one model."""


@dataclass
class RxlmTurn:
    turn: int
    rxlm_answer: list[int]
    runtime_answer: list[int]
    token_agreement: float
    stm_max_diff: float  # |runtime STM - rxlm STM| after this turn's update (judged after turn 1 only)
    stm_scale: float  # max |rxlm STM|: float32 rounding grows with it
    comparable: bool = True  # False once an earlier turn diverged (the memories differ from then on)


@dataclass
class RxlmReport:
    reference: str
    precision: str
    turns: list[RxlmTurn]
    passed: bool = False
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def load_rxlm_model(checkpoint: str | Path):
    """rxlm's own model from an rxlm `save_pretrained` directory (combined layout), in eval mode."""
    try:
        import torch
        from rxlm.rxt import models
    except ImportError as e:
        raise RxlmUnavailableError(f"--reference rxlm needs the rxlm package ({e})") from None
    directory = Path(checkpoint)
    if (directory / "decoder").is_dir():
        raise RxlmUnavailableError(
            f"{directory} has rxlm's per-component layout; rxlm assembles no single model from it to run here "
            "(use --reference torch)"
        )
    try:
        tokens = json.loads((directory / "config.json").read_text()).get("tokenizer_config") or {}
    except (OSError, ValueError) as e:
        raise RxlmUnavailableError(f"{directory}/config.json: not an rxlm checkpoint config ({e})") from None
    cls = models.RxTBeta if "think_token_id" in tokens else models.RxTAlpha
    with contextlib.redirect_stdout(sys.stderr):  # it prints progress; stdout may carry --json
        model = cls.from_pretrained(str(directory))
    # The file keeps one copy of the shared embedding (the decoder's) and the STM under the decoder; sharing the
    # components resets the STM, so it is put back afterwards.
    with torch.no_grad():
        model.encoder.model.embedding.weight.copy_(model.decoder.model.embedding.weight)
    saved_stm = model.decoder.model.stm.memory.detach().clone()
    model.share_components()
    model.load_stm_state(saved_stm)
    return model.eval()


def _rxlm_answer(model, prompt: list[int], budget: int, eos: int) -> list[int]:
    """One greedy turn through rxlm's `interact()`, which also updates its STM; the answer without [EOS]."""
    import torch

    reset_rxlm_caches(model)
    fast = "thinking_mode" in inspect.signature(model.interact).parameters  # RxTBeta: answer without thinking
    stream = model.interact(
        torch.tensor([prompt[:-1]]),  # interact() appends [A] itself
        attention_mask=torch.ones(1, len(prompt) - 1, dtype=torch.long),
        temperature=1.0,
        top_k=1,  # greedy; rxlm's sampler refuses temperature 0
        max_seq_len=len(prompt) + budget,
        **({"thinking_mode": "fast"} if fast else {}),
    )
    with torch.no_grad():
        tokens = [int(t) for t in stream if int(t) >= 0][1 if fast else 0 :]  # fast mode yields [A] first
    return tokens[:-1] if tokens and tokens[-1] == eos else tokens


def verify_against_rxlm(
    package_dir: str | Path,
    checkpoint: str | Path,
    turns: int = 5,
    max_new_tokens: int = 24,
    queries: list[str] | None = None,
) -> RxlmReport:
    rx = load_rxlm_model(checkpoint)
    queries = queries or DEFAULT_QUERIES
    with RxTSession.load(package_dir) as session:
        pkg, limit = session.package, session.dims.max_seq_len
        sp, tol = pkg.manifest.special_tokens, TOLERANCES.get(pkg.manifest.precision, TOLERANCES["fp16"])
        report = RxlmReport("rxlm " + rxlm_version(), pkg.manifest.precision, [])
        conv = session.conversation()
        for t in range(turns):
            query = pkg.tokenizer.encode(queries[t % len(queries)])[: contract.max_query_tokens(limit)]
            prompt = contract.turn_prompt(sp, query)
            budget = contract.answer_budget(max_new_tokens, len(prompt), limit)
            theirs = _rxlm_answer(rx, prompt, budget, sp["eos"])
            ours = conv.interact_ids(query, max_new_tokens=max_new_tokens)
            rx_stm = rx.memory_attention.model.stm.memory.detach().float().numpy()
            diff = float(np.abs(conv.stm().astype(np.float32) - rx_stm).max())
            agree = sum(a == b for a, b in zip(ours, theirs, strict=False)) / max(len(ours), len(theirs), 1)
            comparable = all(r.token_agreement == 1.0 for r in report.turns)
            report.turns.append(
                RxlmTurn(t + 1, theirs, ours, agree, diff, max(1.0, float(np.abs(rx_stm).max())), comparable)
            )
    for r in report.turns:
        if r.comparable and r.token_agreement < tol["token_agreement"]:
            report.failures.append(f"turn {r.turn}: token agreement with rxlm {r.token_agreement:.2f}")
        # judged after the first update only: both start from the checkpoint's STM, so that difference is one
        # step of rounding; later ones also carry drift that some random models amplify turn after turn
        # (reported, not judged; the tokens of every turn are)
        if r.turn == 1 and r.token_agreement == 1.0 and r.stm_max_diff > tol["stm"] * 10 * r.stm_scale:
            report.failures.append(f"turn {r.turn}: STM differs from rxlm's by {r.stm_max_diff:.2e}")
    report.passed = not report.failures
    return report
