"""The quantization report: a quantized package against its source on a fixed multi-turn script.

numpy + onnxruntime only. Quality is measured with the plain driver of the four graphs that `verify` uses too
(`rxt_edge.export.graph_driver.GraphDriver`), so both packages see exactly the same inputs:
- teacher-forced on the source's greedy answers: mean KL(source || quantized) of the next-token distributions,
  top-1 agreement, and the STM drift after each turn (both packages write their memory from the same
  interactions, each with its own encoder and memory-update graphs, so the drift is the numerical error that
  accumulates in the STM);
- free-running greedy: each package holds its own conversation; token agreement per position.
Speed is measured with the real runtime (`RxTSession`, IOBinding): decode ms/token, prompt ms and memory-update
ms, medians over turns after a warm-up turn, with the memory update finished before each turn so it does not
compete for the cores. Given recall probes (the demo model's `recall_probes` from its recipe, passed in by the
caller: `bench/demo_quant_table.py`), the report adds recall accuracy per delay.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rxt_edge.export.graph_driver import GraphDriver

from rxt_edge.package import ModelPackage, load_package

DEFAULT_QUERIES = (
    "Hi, I'm Ann and I live in Paris.",
    "What is the weather like today?",
    "Tell me a joke about cats.",
    "What is my name?",
    "Where do I live?",
    "Thank you, goodbye!",
)


# ---------------------------------------------------------------- metrics


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(P || Q) per row, in nats, from logits [n, vocab]."""
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


def positional_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of positions where two answers hold the same token (over the longer answer; 1.0 if both empty)."""
    n = max(len(a), len(b))
    return 1.0 if n == 0 else sum(x == y for x, y in zip(a, b, strict=False)) / n


@dataclass
class Timing:
    decode_ms_per_token: float | None
    prompt_ms: float | None
    memory_update_ms: float | None


@dataclass
class QuantReport:
    source: str
    quantized: str
    scheme: str | None
    preset: str | None
    turns: int
    max_new_tokens: int
    greedy_token_agreement: float  # free-running, mean over turns of positional agreement
    greedy_identical_turns: int
    teacher_forced_top1_agreement: float
    mean_kl: float  # nats, teacher-forced, all positions of all turns
    max_kl: float
    stm_drift: list[float]  # relative Frobenius ||STM_q - STM_src|| / ||STM_src|| after each turn
    stm_drift_max_abs: list[float]
    sizes: dict[str, dict[str, int]]
    size_ratio: float
    timing: dict[str, Timing]
    decode_speedup: float | None
    recall: dict[str, dict[str, float]] | None = None
    answers: dict[str, list[list[int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the scheme did not cover, and the routed experts

    @property
    def final_stm_drift(self) -> float:
        return self.stm_drift[-1] if self.stm_drift else 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["final_stm_drift"] = self.final_stm_drift
        return d


def _sizes(pkg: ModelPackage) -> dict[str, int]:
    out = {}
    for name, g in pkg.manifest.graphs.items():
        files = (g.ref, *g.external_data)
        out[name] = sum((pkg.directory / f.file).stat().st_size for f in files)
    out["total"] = sum(out.values())
    return out


def expert_notes(quantization: dict[str, Any]) -> list[str]:
    """Lines on the routed experts of a quantized package (its manifest's `quantization.experts`), fp32 ones first."""
    notes = []
    for graph, rec in (quantization.get("experts") or {}).items():
        for node, why in rec.get("kept_fp32", {}).items():
            notes.append(f"{graph}: MoE node {node} kept fp32 ({why})")
        if rec.get("qmoe_nodes"):
            blocks = ", ".join(str(b) if b else "per row" for b in rec.get("block_sizes", []))
            notes.append(
                f"{graph}: {rec['qmoe_nodes']} MoE node(s) as QMoE, {rec['bits']}-bit, block {blocks}"
            )
    return notes


def _encode_queries(pkg: ModelPackage, queries: Sequence[str], room: int) -> list[list[int]]:
    return [pkg.tokenizer.encode(q)[:room] for q in queries]


def quality(
    src: GraphDriver, q: GraphDriver, queries: Sequence[Sequence[int]], max_new: int
) -> dict[str, Any]:
    """Teacher-forced KL / top-1 / STM drift, and free-running greedy agreement."""
    stm_s = src.package.initial_stm
    stm_q = q.package.initial_stm
    kls, top1, drift, drift_abs, tf_answers = [], [], [], [], []
    for ids in queries:
        prompt = src.prompt(ids)
        answer, ls = src.answer_logits(stm_s, prompt, None, max_new)
        _, lq = q.answer_logits(stm_q, prompt, answer, max_new)
        n = min(len(ls), len(lq))
        kls.append(kl_divergence(ls[:n], lq[:n]))
        top1.append(np.argmax(ls[:n], axis=-1) == np.argmax(lq[:n], axis=-1))
        inter = src.interaction(prompt, answer, src.ended(prompt, answer, max_new))
        stm_s, stm_q = src.update(stm_s, inter), q.update(stm_q, inter)
        a, b = stm_s.astype(np.float64), stm_q.astype(np.float64)
        drift.append(float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30)))
        drift_abs.append(float(np.abs(b - a).max()))
        tf_answers.append(answer)
    # free running: each package answers from its own memory of its own answers
    stm_s, stm_q = src.package.initial_stm, q.package.initial_stm
    agree, same, q_answers = [], 0, []
    for ids, ref in zip(queries, tf_answers, strict=True):
        prompt = src.prompt(ids)
        ans_q, _ = q.answer_logits(stm_q, prompt, None, max_new)
        agree.append(positional_agreement(ref, ans_q))
        same += ans_q == ref
        q_answers.append(ans_q)
        stm_q = q.update(stm_q, q.interaction(prompt, ans_q, q.ended(prompt, ans_q, max_new)))
    all_kl = np.concatenate(kls) if kls else np.zeros(0)
    all_top1 = np.concatenate(top1) if top1 else np.zeros(0, bool)
    return {
        "greedy_token_agreement": float(np.mean(agree)) if agree else 1.0,
        "greedy_identical_turns": int(same),
        "teacher_forced_top1_agreement": float(all_top1.mean()) if all_top1.size else 1.0,
        "mean_kl": float(all_kl.mean()) if all_kl.size else 0.0,
        "max_kl": float(all_kl.max()) if all_kl.size else 0.0,
        "stm_drift": drift,
        "stm_drift_max_abs": drift_abs,
        "answers": {"source": tf_answers, "quantized": q_answers},
    }


@dataclass
class SpeedSamples:
    """Raw per-turn samples in ms (decode: per token), so runs of several packages can be interleaved."""

    decode: list[float] = field(default_factory=list)
    prompt: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)

    def medians(self) -> Timing:
        def med(xs: list[float]) -> float | None:
            return float(statistics.median(xs)) if xs else None

        return Timing(med(self.decode), med(self.prompt), med(self.update))


class SpeedProbe:
    """A package loaded in the real runtime (`RxTSession`), timed over a script of turns."""

    def __init__(self, directory: str | Path, threads: int | None = None, provider: str = "cpu"):
        from rxt_edge.session import RxTSession

        self.session = RxTSession.load(directory, provider=provider, threads=threads, verify_hashes=False)
        self.samples = SpeedSamples()
        self._warm = False

    def run(self, queries: Sequence[Sequence[int]], max_new: int) -> SpeedSamples:
        """One conversation over `queries` (after a warm-up turn on first use); appends to `samples`."""
        if not self._warm:
            warm = self.session.conversation()
            warm.interact_ids(queries[0], max_new_tokens=max_new)
            warm.wait_memory()
            self._warm = True
        limit = self.session.dims.max_seq_len
        conv = self.session.conversation()
        for ids in queries:
            conv.wait_memory()  # the update must not compete with the timed turn for the cores
            answer = conv.interact_ids(ids, max_new_tokens=max_new)
            st = conv.last_stats
            budget = min(max_new, limit - st.prompt_tokens - 1)
            steps = len(answer) - 1 + (len(answer) < budget)  # decoder runs after the prompt's
            if answer:
                self.samples.prompt.append((st.time_to_first_token_s - st.update_wait_s) * 1e3)
            if steps > 0:
                self.samples.decode.append((st.total_s - st.time_to_first_token_s) / steps * 1e3)
            conv.wait_memory()
            self.samples.update.append(conv.last_update_s * 1e3)
        return self.samples

    def close(self) -> None:
        self.session.close()


def measure_speed(
    directory: str | Path,
    queries: Sequence[Sequence[int]],
    max_new: int,
    threads: int | None = None,
    provider: str = "cpu",
) -> Timing:
    """Medians over the script's turns with the real runtime, after one warm-up turn."""
    probe = SpeedProbe(directory, threads, provider)
    try:
        return probe.run(queries, max_new).medians()
    finally:
        probe.close()


# ---------------------------------------------------------------- recall (demo model)


class RecallProbe(Protocol):
    """One recall probe (the demo recipe's `Probe`): history turns, then a question whose answer must contain
    `expected`; `delay` is how many turns back the fact was told."""

    delay: int
    expected: str
    turns: Sequence[Any]  # each with .query and .answer text; the last one's query is the question


def contains_value(text: str, value: str) -> bool:
    """Whether `value` occurs in `text` as a whole word, ignoring case (the recall hit rule)."""
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, flags=re.IGNORECASE) is not None


def recall_accuracy(runner: GraphDriver, probes: Sequence[RecallProbe]) -> dict[str, float]:
    """Share of recall probes answered with the told value, per delay (feeds the given history into memory)."""
    tok = runner.package.tokenizer
    limit = runner.dims.max_seq_len
    room = limit - 8
    hits: dict[int, list[bool]] = {}
    for probe in probes:
        stm = runner.package.initial_stm
        for turn in probe.turns[:-1]:
            prompt = runner.prompt(tok.encode(turn.query)[:room])
            answer = tok.encode(turn.answer)[: max(0, limit - len(prompt) - 1)]
            stm = runner.update(stm, runner.interaction(prompt, answer))
        prompt = runner.prompt(tok.encode(probe.turns[-1].query)[:room])
        answer, _ = runner.answer_logits(stm, prompt, None, 32)
        hits.setdefault(probe.delay, []).append(contains_value(tok.decode(answer), probe.expected))
    return {str(d): float(np.mean(hits[d])) for d in sorted(hits)}


# ---------------------------------------------------------------- report


def compare_packages(
    source: str | Path,
    quantized: str | Path,
    queries: Sequence[str] = DEFAULT_QUERIES,
    max_new_tokens: int = 24,
    threads: int | None = None,
    speed: bool = True,
    recall_probes: Sequence[RecallProbe] | None = None,
    repeats: int = 1,
    provider: str = "cpu",
) -> QuantReport:
    """Compare `quantized` with its `source` package (see the module docstring for what is measured).

    `recall_probes`: recall accuracy on these probes, both packages (None: no recall); `repeats`: timed runs;
    `provider`: the execution provider of both packages ("cuda" for an fp16 package on a GPU)."""
    src_pkg, q_pkg = load_package(source), load_package(quantized)
    # (a K/V form may record the query heads the source left unrecorded: the same model either way)
    if replace(src_pkg.manifest.model, cross_query_heads=0) != replace(
        q_pkg.manifest.model, cross_query_heads=0
    ):
        raise ValueError(f"{quantized}: model dims differ from {source}; not a quantized copy of it")
    qrec = q_pkg.manifest.quantization or {}
    src_r, q_r = GraphDriver(src_pkg, threads, provider), GraphDriver(q_pkg, threads, provider)
    room = src_pkg.manifest.model.max_seq_len - 6
    ids = _encode_queries(src_pkg, queries, room)
    qual = quality(src_r, q_r, ids, max_new_tokens)
    sizes = {"source": _sizes(src_pkg), "quantized": _sizes(q_pkg)}
    timing: dict[str, Timing] = {}
    speedup = None
    if speed:
        probes = {
            k: SpeedProbe(p, threads, provider) for k, p in (("source", source), ("quantized", quantized))
        }
        try:
            for _ in range(repeats):  # interleaved, so both see the same machine load
                for probe in probes.values():
                    probe.run(ids, max_new_tokens)
        finally:
            for probe in probes.values():
                probe.close()
        timing = {k: p.samples.medians() for k, p in probes.items()}
        a, b = timing["source"].decode_ms_per_token, timing["quantized"].decode_ms_per_token
        speedup = a / b if a and b else None
    recall_result = None
    if recall_probes:
        recall_result = {
            "source": recall_accuracy(src_r, recall_probes),
            "quantized": recall_accuracy(q_r, recall_probes),
        }
    return QuantReport(
        source=str(source),
        quantized=str(quantized),
        scheme=qrec.get("scheme"),
        preset=qrec.get("preset"),
        turns=len(ids),
        max_new_tokens=max_new_tokens,
        sizes=sizes,
        size_ratio=sizes["quantized"]["total"] / max(1, sizes["source"]["total"]),
        timing=timing,
        decode_speedup=speedup,
        recall=recall_result,
        notes=expert_notes(qrec),
        **qual,
    )


def print_quant_report(report: QuantReport, console) -> None:
    """A rich table: quality, sizes and speed of the quantized package against its source."""
    from rich.table import Table

    def ms(t: Timing | None, attr: str) -> str:
        v = getattr(t, attr) if t else None
        return "-" if v is None else f"{v:.1f}"

    table = Table(title=f"{report.scheme} ({report.preset or 'no preset'}) vs source, {report.turns} turns")
    table.add_column("metric")
    table.add_column("source", justify="right")
    table.add_column("quantized", justify="right")
    src, q = report.timing.get("source"), report.timing.get("quantized")
    mb = 1 / 2**20
    table.add_row(
        "size MiB",
        f"{report.sizes['source']['total'] * mb:.1f}",
        f"{report.sizes['quantized']['total'] * mb:.1f}",
    )
    for label, attr in (
        ("decode ms/token", "decode_ms_per_token"),
        ("prompt ms", "prompt_ms"),
        ("memory update ms", "memory_update_ms"),
    ):
        table.add_row(label, ms(src, attr), ms(q, attr))
    table.add_row("greedy token agreement", "", f"{report.greedy_token_agreement:.0%}")
    table.add_row("top-1 agreement (teacher-forced)", "", f"{report.teacher_forced_top1_agreement:.0%}")
    table.add_row("mean KL (nats)", "", f"{report.mean_kl:.2e}")
    table.add_row(f"STM drift after {report.turns} turns", "", f"{report.final_stm_drift:.2e}")
    if report.recall:
        for d, acc in report.recall["source"].items():
            table.add_row(f"recall, delay {d}", f"{acc:.0%}", f"{report.recall['quantized'][d]:.0%}")
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}")
    if report.decode_speedup:
        console.print(f"decode speed-up x{report.decode_speedup:.2f} (this machine; medians over turns)")
