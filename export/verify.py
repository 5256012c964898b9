"""`rxt-edge verify`: prove a package computes what its source checkpoint computes.

Two checks per turn of a scripted multi-turn greedy conversation:
- per graph, on identical inputs (teacher forcing on the torch answer, the torch STM fed to the graphs):
  max |logits| difference of the decoder (and memory_kv feeding it), the encoder's output, the memory update's STM;
- end to end, the torch-free runtime (RxTSession) holding its own conversation: greedy token agreement with torch
  (a divergence is accepted only at a near-tie of torch's own logits), the runtime's STM write checked against
  torch's update of the runtime's own previous STM (one step, so chaotic models do not accumulate), and the STM
  difference to torch's conversation after each turn (drift accumulated over turns; reported, not judged).
Documented in docs/verify.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rxt_edge import contract
from rxt_edge.session import RxTSession

from .graph_driver import GraphDriver
from .layers import float_except_experts
from .memory_kv_heads import collapsed
from .model import RxTModel
from .quantize_memory_kv import dequantized
from .torch_chat import TorchConversation

# Documented in docs/verify.md.
TOLERANCES = {
    "fp32": {"logits": 1e-4, "encoder": 1e-4, "stm": 1e-4, "token_agreement": 1.0},
    "fp16": {"logits": 5e-2, "encoder": 5e-2, "stm": 5e-2, "token_agreement": 0.9},
}
DEFAULT_QUERIES = [
    "Hi, I'm Ann and I live in Paris.",
    "What is the weather like today?",
    "Tell me a joke about cats.",
    "What is my name?",
    "Where do I live?",
    "What did I tell you first?",
    "Thank you, goodbye!",
]


@dataclass
class TurnReport:
    turn: int
    decoder_logits_max_diff: float
    encoder_max_diff: float
    memory_update_max_diff: float
    memory_kv_max_diff: float
    token_agreement: float
    runtime_stm_max_diff: float
    # max |value| of the torch reference: STM and encoder limits scale with it (an STM that grows to 1e3 over
    # a few turns cannot match to 1e-4 absolute in float32, whose resolution there is ~1e-4 itself)
    encoder_scale: float = 1.0
    stm_scale: float = 1.0
    # the runtime's new STM vs torch's encoder + memory attention applied to the runtime's STM before the turn and
    # the runtime's own interaction: the runtime's update path in one step, free of accumulated drift
    runtime_stm_step_diff: float = 0.0
    # first answer position where runtime and torch differ, and torch's logit margin there between its token and
    # the runtime's (a near-tie within the logits tolerance explains a divergence)
    first_divergence: int | None = None
    divergence_margin: float | None = None
    # False once an earlier turn diverged: the two conversations then hold different memories, so tokens are
    # reported but not judged
    comparable: bool = True
    torch_answer: list[int] = field(default_factory=list)
    runtime_answer: list[int] = field(default_factory=list)


@dataclass
class VerifyReport:
    precision: str
    tolerances: dict
    turns: list[TurnReport]
    passed: bool = False
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype)


def verify_package(
    package_dir: str | Path,
    model: RxTModel,
    turns: int = 5,
    max_new_tokens: int = 24,
    queries: list[str] | None = None,
) -> VerifyReport:
    package_dir = Path(package_dir)
    session = RxTSession.load(package_dir)
    precision = session.package.manifest.precision
    fdt = session.package.float_dtype
    memory_kv = session.package.manifest.graphs[contract.DECODER].memory_kv
    tol = TOLERANCES.get(precision, TOLERANCES["fp16"])
    graphs = GraphDriver(session.package, sessions=session.engine.graphs.sessions)  # one copy of the weights
    model = float_except_experts(model).eval()  # expert stacks may stay bf16 (load_checkpoint)
    ref = TorchConversation(model)
    conv = session.conversation()
    tok = session.package.tokenizer
    eos = model.cfg.special_tokens["eos"]
    queries = queries or DEFAULT_QUERIES
    report = VerifyReport(precision, tol, [])
    for t in range(turns):
        query = [i for i in tok.encode(queries[t % len(queries)]) if i < model.cfg.vocab_size]
        turn = ref.generate(query, max_new_tokens)
        # memory_kv graph on the torch STM, then the decoder graph teacher-forced on the torch answer
        kv = graphs.memory_kv(_np(ref.stm, fdt))
        tk, tv = model.memory_kv(ref.stm)
        kv_ref = [x for pair in zip(tk, tv, strict=True) for x in pair]
        kv_float = dequantized(kv) if memory_kv == "int8" else kv
        if memory_kv == "expanded":  # each K/V head repeated for its query heads: compare one of each
            dims = session.package.manifest.model
            kv_float = collapsed(kv, dims.cross_query_heads // dims.cross_kv_heads)
        kv_diff = max(
            float(np.abs(a - _np(b, np.float32)).max()) for a, b in zip(kv_float, kv_ref, strict=True)
        )
        past, tokens, logit_diff = graphs.empty_past(), turn.prompt, 0.0
        for step, ref_logits in enumerate(turn.step_logits):
            logits, past = graphs.decode(tokens, past, kv)
            logit_diff = max(logit_diff, float(np.abs(logits - ref_logits.numpy()).max()))
            if step < len(turn.answer):
                tokens = [turn.answer[step]]
        # encoder and memory update on the same inputs
        interaction = graphs.interaction(turn.prompt, turn.answer, turn.ended)
        enc = graphs.encode(interaction)
        old_stm = ref.stm.clone()
        enc_ref = ref.update(interaction)
        enc_diff = float(np.abs(enc.astype(np.float32) - _np(enc_ref, np.float32)).max())
        upd = graphs.memory_update(_np(old_stm, fdt), _np(enc_ref, fdt))
        upd_diff = float(np.abs(upd.astype(np.float32) - _np(ref.stm, np.float32)).max())
        # the runtime, on its own
        runtime_before = torch.from_numpy(conv.stm().astype(np.float32))
        answer = conv.interact_ids(query, max_new_tokens=max_new_tokens)
        runtime_after = conv.stm().astype(np.float32)
        agree = _agreement(answer, turn.answer)
        stm_diff = float(np.abs(runtime_after - _np(ref.stm, np.float32)).max())
        with torch.no_grad():
            rt_ended = graphs.ended(turn.prompt, answer, max_new_tokens)
            rt_ids = torch.tensor([graphs.interaction(turn.prompt, answer, rt_ended)])
            rt_mask = torch.ones_like(rt_ids)
            expected = model.memory(runtime_before, model.encoder(rt_ids, rt_mask), rt_mask)
        step_diff = float(np.abs(runtime_after - expected.numpy()).max())
        div = next((i for i, (a, b) in enumerate(zip(answer, turn.answer, strict=False)) if a != b), None)
        if div is None and len(answer) != len(turn.answer):
            div = min(len(answer), len(turn.answer))  # one stopped ([EOS]) where the other went on
        margin = None
        if div is not None and div < len(turn.step_logits):
            torch_tok = turn.answer[div] if div < len(turn.answer) else eos
            runtime_tok = answer[div] if div < len(answer) else eos
            margin = float(turn.step_logits[div][torch_tok] - turn.step_logits[div][runtime_tok])
        report.turns.append(
            TurnReport(
                turn=t + 1,
                decoder_logits_max_diff=logit_diff,
                encoder_max_diff=enc_diff,
                memory_update_max_diff=upd_diff,
                memory_kv_max_diff=kv_diff,
                token_agreement=agree,
                runtime_stm_max_diff=stm_diff,
                encoder_scale=max(1.0, float(enc_ref.abs().max())),
                stm_scale=max(1.0, float(ref.stm.abs().max()), float(expected.abs().max())),
                runtime_stm_step_diff=step_diff,
                first_divergence=div,
                divergence_margin=margin,
                comparable=all(r.first_divergence is None for r in report.turns),
                torch_answer=turn.answer,
                runtime_answer=answer,
            )
        )
    session.close()
    _judge(report)
    return report


def _agreement(a: list[int], b: list[int]) -> float:
    n = max(len(a), len(b))
    return 1.0 if n == 0 else sum(x == y for x, y in zip(a, b, strict=False)) / n


def _judge(report: VerifyReport) -> None:
    tol = report.tolerances
    for tr in report.turns:
        checks = [
            ("decoder logits", tr.decoder_logits_max_diff, tol["logits"]),
            ("memory_kv", tr.memory_kv_max_diff, tol["logits"]),
            ("encoder", tr.encoder_max_diff, tol["encoder"] * tr.encoder_scale),
            ("memory update", tr.memory_update_max_diff, tol["stm"] * tr.stm_scale),
            ("runtime STM write", tr.runtime_stm_step_diff, 10 * tol["stm"] * tr.stm_scale),
        ]
        for name, value, limit in checks:
            if not value <= limit:
                report.failures.append(f"turn {tr.turn}: {name} max diff {value:.3g} > {limit:g}")
        near_tie = tr.divergence_margin is not None and tr.divergence_margin <= 2 * tol["logits"]
        if tr.comparable and tr.token_agreement < tol["token_agreement"] and not near_tie:
            margin = (
                "" if tr.divergence_margin is None else f" (torch's margin there {tr.divergence_margin:.3g})"
            )
            report.failures.append(
                f"turn {tr.turn}: runtime greedy tokens agree {tr.token_agreement:.0%} with torch, first "
                f"difference at answer token {tr.first_divergence}{margin}"
            )
    report.passed = not report.failures
