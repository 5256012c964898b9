"""Train the shipped demo RxT end-to-end through its Short-Term Memory.

The demo model must *use* its STM: a fact told in one turn is recalled 1, 2, 4 and 8 turns later, and
the only link between turns is the STM. So every training step runs whole conversations turn by turn,
exactly as the runtime does, and backpropagates through all of them (BPTT over the memory):

    STM_0 = initial STM (learned; expanded to the batch)
    for each turn t:   ids = [BOS][Q] query [A] answer [EOS]
        loss_t = cross-entropy of the decoder on `answer [EOS]`, teacher-forced, reading mem K/V of STM_{t-1}
        STM_t  = memory(STM_{t-1}, encoder(ids, mask), mask)          (right-padded, padding masked)
    loss = sum_t loss_t / answer tokens;  one AdamW step (warmup + cosine, grad clip)

Data: `demo_dialogues.generate_dialogues` (train split; a fresh seeded batch every step), tokenized with
BPE-dropout (`enable_sampling=True, alpha=0.05`) so every piece of held-out values is trained. A short
curriculum grows the conversation length from `--turns-start` to 12 turns over the first
`--curriculum` fraction of the steps. The initial STM is a learned tensor (random start): with an all-zero
start every slot would stay identical (a symmetric write), leaving the model one effective slot.

Evaluation (held-out values only): `recall_probes` / `no_fact_probes` at delays 1, 2, 4, 8; a fast batched
greedy decoder on the training device during training, and at the end `TorchConversation` (eager, CPU,
the reference the exported package is checked against), scored with `contains_value`.

Outputs in --out (default models/demo/checkpoint/): config.json + model.safetensors (native checkpoint,
`save_native`), tokenizer.model (copied), metrics.json, and the log on stdout.

    python models/demo/recipe/train_demo.py --device cuda --steps 3000            # the shipped model
    python models/demo/recipe/train_demo.py --device cpu --steps 20 --tiny --eval-n 4 --out /tmp/demo

Reproducible: every batch k is generated from (--seed, k) and its BPE-dropout sampling is re-seeded per
batch, the model init is seeded, so a CPU run repeats bit for bit. On CUDA, floating-point reductions
(attention backward, index_add in embedding backward) are not deterministic: runs with the same seed agree
closely in metrics but not bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import demo_dialogues as dd
import sentencepiece as spm
import torch
import torch.nn.functional as F
from demo_tokenizer import SPECIAL_TOKENS
from torch import nn

from rxt_edge.export.checkpoints.native import save_native
from rxt_edge.export.config import (
    AttentionConfig,
    BlockConfig,
    DecoderConfig,
    EncoderConfig,
    FeedForwardConfig,
    GateConfig,
    MemoryAttentionConfig,
    MemoryNormConfig,
    RxTConfig,
)
from rxt_edge.export.model import RxTModel
from rxt_edge.export.torch_chat import TorchConversation

HERE = Path(__file__).resolve().parent
DEFAULT_TOKENIZER = HERE.parent / "tokenizer.model"
DEFAULT_OUT = HERE.parent / "checkpoint"
SP_ALPHA = 0.05
MAX_ANSWER_TOKENS = 40  # greedy budget at evaluation; the longest scripted answer is about 30 pieces
DELAYS = (1, 2, 4, 8)


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


def demo_config(
    *,
    vocab: int,
    special: dict[str, int],
    dim: int = 192,
    layers: int = 4,
    heads: int = 6,
    kv_heads: int = 2,
    ffn: int = 384,
    slots: int = 48,
    variant: str = "simple",
    gate: str = "elementwise",
    max_seq_len: int = 128,
) -> RxTConfig:
    """The demo RxT: `layers` memory layers (= encoder layers = STM layers), GQA self/cross attention."""
    hd = dim // heads
    attn = AttentionConfig(q_heads=heads, kv_heads=kv_heads, head_dim=hd)
    dense = FeedForwardConfig(hidden_dim=ffn)
    dec_block = BlockConfig(self_attn=attn, ffn=dense, cross_attn=AttentionConfig(heads, kv_heads, hd))
    enc_block = BlockConfig(self_attn=attn, ffn=dense)
    g = GateConfig(mode=gate, activation="sigmoid")
    return RxTConfig(
        vocab_size=vocab,
        dim=dim,
        stm_slots=slots,
        decoder=DecoderConfig(memory_layers=[dec_block] * layers, max_seq_len=max_seq_len),
        encoder=EncoderConfig(layers=[enc_block] * layers, max_seq_len=max_seq_len),
        memory=MemoryAttentionConfig(
            variant=variant,
            num_layers=layers,
            attn=AttentionConfig(heads, kv_heads, hd),
            aux_attn=None if variant == "simple" else AttentionConfig(heads, kv_heads, hd),
            norm=MemoryNormConfig("classic-rms"),
            residual_gate=g,
            aux_residual_gate=g,
            mix_gate=g,
        ),
        special_tokens=dict(special),
    )


def init_weights(model: RxTModel, layers: int) -> None:
    """GPT-style init: N(0, 0.02) weights, zero biases, residual output projections scaled down."""
    resid_std = 0.02 / math.sqrt(2 * layers)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            nn.init.zeros_(p)
        elif p.dim() >= 2:
            std = resid_std if name.endswith(("out_proj.weight", "fc2.weight")) else 0.02
            nn.init.normal_(p, 0.0, std)


class Trainable(nn.Module):
    """The RxT model plus its learned initial STM (copied into `model.initial_stm` before saving)."""

    def __init__(self, model: RxTModel, stm_std: float):
        super().__init__()
        self.model = model
        self.stm0 = nn.Parameter(torch.randn_like(model.initial_stm) * stm_std)

    def commit_stm(self) -> None:
        with torch.no_grad():
            self.model.initial_stm.copy_(self.stm0)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


@dataclass
class TurnBatch:
    """One turn of B conversations, right-padded: ids/mask [B, T], loss_mask [B, T-1], active [B]."""

    ids: torch.Tensor
    mask: torch.Tensor
    loss_mask: torch.Tensor
    active: torch.Tensor

    def to(self, device: torch.device) -> TurnBatch:
        nb = device.type == "cuda"
        return TurnBatch(*(t.to(device, non_blocking=nb) for t in (self.ids, self.mask, self.loss_mask, self.active)))


class Tok:
    """Turn template in ids: [BOS][Q] query [A] answer [EOS]."""

    def __init__(self, path: Path):
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.special = {name: self.sp.piece_to_id(piece) for name, (_, piece) in SPECIAL_TOKENS.items()}
        for name, (tid, piece) in SPECIAL_TOKENS.items():
            if self.special[name] != tid:
                raise ValueError(f"{path}: special token {piece} has id {self.special[name]}, expected {tid}")
        self.bos, self.eos, self.q, self.a, self.pad = (self.special[k] for k in ("bos", "eos", "query", "answer", "pad"))

    def encode(self, text: str, sample: bool) -> list[int]:
        if sample:
            return self.sp.encode(text, enable_sampling=True, alpha=SP_ALPHA, nbest_size=-1)
        return self.sp.encode(text)

    def prompt(self, query: list[int]) -> list[int]:
        return [self.bos, self.q, *query, self.a]

    def interaction(self, query: str, answer: str, sample: bool) -> tuple[list[int], int]:
        """Full interaction ids and the index of the first answer token."""
        p = self.prompt(self.encode(query, sample))
        return p + self.encode(answer, sample) + [self.eos], len(p)


def collate_turns(seqs: list[list[tuple[list[int], int] | None]], pad: int, dummy: list[int]) -> list[TurnBatch]:
    """Per-turn right-padded batches. An ended conversation gets a dummy interaction (mask 1, no loss,
    `active` False): an all-padding row would give NaN attention in the encoder and memory."""
    n_turns = max(len(s) for s in seqs)
    out = []
    for t in range(n_turns):
        items = [s[t] if t < len(s) else None for s in seqs]
        width = max(len(it[0]) if it else len(dummy) for it in items)
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        loss = torch.zeros((len(items), width - 1), dtype=torch.float32)
        active = torch.zeros(len(items), dtype=torch.bool)
        for b, it in enumerate(items):
            seq, start = it if it else (dummy, len(dummy))
            ids[b, : len(seq)] = torch.tensor(seq)
            mask[b, : len(seq)] = 1
            if it:
                loss[b, start - 1 : len(seq) - 1] = 1.0  # logits at position j predict token j+1
                active[b] = True
        out.append(TurnBatch(ids, mask, loss, active))
    return out


def turns_at(step: int, steps: int, start: int, frac: float, full: int = 12) -> int:
    """Curriculum: conversation length limit grows linearly from `start` to `full` turns."""
    ramp = max(1, int(frac * steps))
    return full if step >= ramp else start + (full - start) * step // ramp


class DialogueBatches(torch.utils.data.Dataset):
    """Batch k = `batch` fresh train-split conversations from seed (seed, k), BPE-dropout re-seeded per batch."""

    def __init__(self, tok_path: Path, steps: int, batch: int, seed: int, turns_start: int, curriculum: float, dropout: bool):
        self.tok_path, self.steps, self.batch, self.seed = tok_path, steps, batch, seed
        self.turns_start, self.curriculum, self.dropout = turns_start, curriculum, dropout
        self.tok: Tok | None = None

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, k: int) -> list[TurnBatch]:
        if self.tok is None:
            self.tok = Tok(self.tok_path)
        tok = self.tok
        data_seed = self.seed * 1_000_003 + k
        spm.set_random_generator_seed(data_seed % (2**31))
        max_turns = turns_at(k, self.steps, self.turns_start, self.curriculum)
        dialogues = dd.generate_dialogues(self.batch, seed=data_seed, split="train", max_turns=max_turns)
        seqs = [[tok.interaction(t.query, t.answer, self.dropout) for t in d] for d in dialogues]
        dummy = [tok.bos, tok.q, tok.a, tok.eos]
        return collate_turns(seqs, tok.pad, dummy)


# ------------------------------------------------------------------------------------------------
# Training step: whole conversations through the memory
# ------------------------------------------------------------------------------------------------


def empty_cache(model: RxTModel, batch: int, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    k, v = model.empty_cache(batch)
    return [t.to(device) for t in k], [t.to(device) for t in v]


def dialogue_loss(net: Trainable, turns: list[TurnBatch]) -> tuple[torch.Tensor, float]:
    """Mean answer-token cross-entropy over all turns, backpropagated through every memory update."""
    model = net.model
    b = turns[0].ids.shape[0]
    device = turns[0].ids.device
    stm = net.stm0.expand(-1, b, -1, -1)
    total = torch.zeros((), device=device)
    count = sum(float(t.loss_mask.sum()) for t in turns)
    pk, pv = empty_cache(model, b, device)
    for tb in turns:
        mem_k, mem_v = model.memory_kv(stm)
        logits, _, _ = model.decoder(tb.ids[:, :-1], pk, pv, mem_k, mem_v, all_logits=True)
        ce = F.cross_entropy(logits.float().transpose(1, 2), tb.ids[:, 1:], reduction="none")
        total = total + (ce * tb.loss_mask).sum()
        encoded = model.encoder(tb.ids, tb.mask)
        new = model.memory(stm, encoded, tb.mask)
        stm = torch.where(tb.active[None, :, None, None], new, stm)
    return total / max(count, 1.0), count


def lr_at(step: int, steps: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


def probe_sets(n: int, seed: int) -> dict[str, list[dd.Probe]]:
    return {
        "told": dd.recall_probes(n, seed, DELAYS, split="heldout"),
        "no_fact": dd.no_fact_probes(n, seed, DELAYS, split="heldout"),
    }


@torch.no_grad()
def batched_answers(net: Trainable, tok: Tok, probes: list[dd.Probe], device: torch.device) -> list[str]:
    """Greedy answers for many probes at once (history fed with the scripted answers, as the runtime would
    after those turns). Full re-forward per step over right-padded rows: exact, and simple."""
    model = net.model
    b = len(probes)
    stm = net.stm0.expand(-1, b, -1, -1)
    hist = [[tok.interaction(t.query, t.answer, False) for t in p.turns[:-1]] for p in probes]
    dummy = [tok.bos, tok.q, tok.a, tok.eos]
    for tb in collate_turns(hist, tok.pad, dummy):
        tb = tb.to(device)
        new = model.memory(stm, model.encoder(tb.ids, tb.mask), tb.mask)
        stm = torch.where(tb.active[None, :, None, None], new, stm)
    mem_k, mem_v = model.memory_kv(stm)
    prompts = [tok.prompt(tok.encode(p.turns[-1].query, False)) for p in probes]
    lens = torch.tensor([len(p) for p in prompts], device=device)
    width = int(lens.max()) + MAX_ANSWER_TOKENS
    ids = torch.full((b, width), tok.pad, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p)
    start = lens.clone()
    done = torch.zeros(b, dtype=torch.bool, device=device)
    pk, pv = empty_cache(model, b, device)
    rows = torch.arange(b, device=device)
    for _ in range(MAX_ANSWER_TOKENS):
        cur = int(lens.max())
        logits, _, _ = model.decoder(ids[:, :cur], pk, pv, mem_k, mem_v, all_logits=True)
        nxt = logits[rows, lens - 1].argmax(-1)
        done |= nxt == tok.eos
        write = ~done & (lens < width)
        ids[rows[write], lens[write]] = nxt[write]
        lens = lens + write.long()
        if bool(done.all()):
            break
    return [tok.sp.decode(ids[i, int(start[i]) : int(lens[i])].tolist()) for i in range(b)]


def eager_answers(net: Trainable, tok: Tok, probes: list[dd.Probe]) -> list[str]:
    """Greedy answers through `TorchConversation` (batch 1, CPU): the reference path."""
    net.commit_stm()
    model = net.model.cpu().eval()
    out = []
    for p in probes:
        conv = TorchConversation(model)
        for t in p.turns[:-1]:
            ids, _ = tok.interaction(t.query, t.answer, False)
            conv.update(ids)
        answer = conv.generate(tok.encode(p.turns[-1].query, False), MAX_ANSWER_TOKENS).answer
        out.append(tok.sp.decode(answer))
    return out


def score(probes_by_set: dict[str, list[dd.Probe]], answers_by_set: dict[str, list[str]]) -> dict:
    """Recall per delay (told), chance hits and the 'unknown' reply rate per delay (no-fact)."""
    res: dict = {}
    for name, probes in probes_by_set.items():
        answers = answers_by_set[name]
        per = {}
        for d in DELAYS:
            pairs = [(p, a) for p, a in zip(probes, answers, strict=True) if p.delay == d]
            hit = sum(dd.contains_value(a, p.expected) for p, a in pairs) / len(pairs)
            unknown = sum(a.strip() == dd.UNKNOWN_ANSWER for _, a in pairs) / len(pairs)
            per[str(d)] = {"n": len(pairs), "contains_value": hit, "unknown_reply": unknown}
        res[name] = per
    return res


def format_table(res: dict) -> str:
    lines = ["delay | recall (told) | no-fact hits | no-fact 'unknown' reply", "----- | ------------- | ------------ | -----------------------"]
    for d in DELAYS:
        t, nf = res["told"][str(d)], res["no_fact"][str(d)]
        lines.append(f"{d:5d} | {t['contains_value']:13.1%} | {nf['contains_value']:12.1%} | {nf['unknown_reply']:23.1%}")
    return "\n".join(lines)


def examples(probes: list[dd.Probe], answers: list[str], k: int = 4) -> list[dict]:
    picked = []
    for d in DELAYS:
        picked += [(p, a) for p, a in zip(probes, answers, strict=True) if p.delay == d][:k // 2 or 1]
    return [{"delay": p.delay, "q": p.turns[-1].query, "expected": p.expected, "answer": a} for p, a in picked]


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=256, help="conversations per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    p.add_argument("--workers", type=int, default=4, help="data workers (results depend on the seed, not on this)")
    p.add_argument("--turns-start", type=int, default=4, help="curriculum: max turns at step 0")
    p.add_argument("--curriculum", type=float, default=0.2, help="fraction of steps to reach 12 turns")
    p.add_argument("--no-dropout", action="store_true", help="disable BPE-dropout (not recommended)")
    # architecture
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=384)
    p.add_argument("--slots", type=int, default=48)
    p.add_argument("--variant", default="simple", choices=["simple", "self", "interlayer", "self-interlayer"])
    p.add_argument("--gate", default="elementwise", choices=["elementwise", "static", "linear"])
    p.add_argument("--stm-std", type=float, default=1.0, help="std of the learned initial STM's random start")
    p.add_argument("--tiny", action="store_true", help="a very small model for smoke tests")
    # evaluation
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-n", type=int, default=48, help="probes per delay during training (batched)")
    p.add_argument("--final-n", type=int, default=100, help="probes per delay at the end (TorchConversation)")
    p.add_argument("--eval-seed", type=int, default=1234)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop training early (wall clock); 0 = off")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tiny:
        args.dim, args.layers, args.heads, args.kv_heads, args.ffn, args.slots = 32, 2, 4, 2, 64, 8
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tok = Tok(args.tokenizer)
    cfg = demo_config(
        vocab=tok.sp.get_piece_size(), special=tok.special, dim=args.dim, layers=args.layers, heads=args.heads,
        kv_heads=args.kv_heads, ffn=args.ffn, slots=args.slots, variant=args.variant, gate=args.gate,
    )
    model = RxTModel(cfg)
    init_weights(model, args.layers)
    net = Trainable(model, args.stm_std).to(device)
    n_params = sum(p.numel() for p in model.parameters()) + net.stm0.numel()
    print(f"config: dim={args.dim} layers={args.layers} heads={args.heads}/{args.kv_heads} ffn={args.ffn} "
          f"slots={args.slots} variant={args.variant} gate={args.gate}; {n_params / 1e6:.2f}M parameters "
          f"({n_params * 4 / 2**20:.1f} MiB fp32); device={device}", flush=True)
    print(f"train: steps={args.steps} batch={args.batch} lr={args.lr} warmup={args.warmup} seed={args.seed} "
          f"curriculum={args.turns_start}->12 turns over {args.curriculum:.0%} of steps, bpe_dropout={not args.no_dropout}", flush=True)

    decay = [p for n, p in net.named_parameters() if p.dim() >= 2 and n != "stm0"]
    no_decay = [p for n, p in net.named_parameters() if p.dim() < 2 or n == "stm0"]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    data = DialogueBatches(args.tokenizer, args.steps, args.batch, args.seed, args.turns_start, args.curriculum,
                           not args.no_dropout)
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, shuffle=False, num_workers=args.workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if args.workers else None,
        persistent_workers=False,
    )
    probes = probe_sets(args.eval_n, args.eval_seed)
    history = []
    t0 = time.perf_counter()
    t_eval = 0.0
    ema = None
    steps_done = 0
    for step, turns in enumerate(loader):
        net.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        turns = [tb.to(device) for tb in turns]
        loss, _ = dialogue_loss(net, turns)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip))
        opt.step()
        steps_done = step + 1
        lv = float(loss)
        if not math.isfinite(lv):
            raise FloatingPointError(f"step {step}: loss is {lv}")
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        last = steps_done == args.steps
        if step % 50 == 0 or last:
            el = time.perf_counter() - t0 - t_eval
            print(f"step {step:5d} turns<={len(turns):2d} loss {lv:.4f} ema {ema:.4f} gnorm {gnorm:.2f} "
                  f"lr {opt.param_groups[0]['lr']:.2e} {el / steps_done:.3f}s/step {el:.0f}s", flush=True)
        timeout = args.max_minutes and (time.perf_counter() - t0) / 60 > args.max_minutes
        if (args.eval_every and steps_done % args.eval_every == 0) or last or timeout:
            te = time.perf_counter()
            net.eval()
            ans = {k: batched_answers(net, tok, v, device) for k, v in probes.items()}
            res = score(probes, ans)
            recall = {d: res["told"][str(d)]["contains_value"] for d in DELAYS}
            nofact = sum(res["no_fact"][str(d)]["contains_value"] for d in DELAYS) / len(DELAYS)
            history.append({"step": steps_done, "loss_ema": ema, "recall": recall, "no_fact": nofact})
            print(f"eval step {steps_done}: recall " + " ".join(f"d{d}={r:.0%}" for d, r in recall.items())
                  + f" | no-fact hits {nofact:.1%}", flush=True)
            t_eval += time.perf_counter() - te
        if timeout:
            print(f"stopping early at step {steps_done}: --max-minutes {args.max_minutes} reached", flush=True)
            break
    train_s = time.perf_counter() - t0 - t_eval
    print(f"training: {steps_done} steps in {train_s:.1f} s ({train_s / max(1, steps_done):.3f} s/step, "
          f"periodic eval {t_eval:.1f} s extra)", flush=True)

    # Final evaluation through TorchConversation (eager, CPU) on a larger held-out probe set.
    te = time.perf_counter()
    final_probes = probe_sets(args.final_n, args.eval_seed + 1)
    batched = {k: batched_answers(net.eval(), tok, v, device) for k, v in final_probes.items()}
    res_batched = score(final_probes, batched)
    torch.set_num_threads(max(1, min(8, torch.get_num_threads())))
    eager = {k: eager_answers(net, tok, v) for k, v in final_probes.items()}
    res = score(final_probes, eager)
    agree = sum(a == b for k in eager for a, b in zip(eager[k], batched[k], strict=True)) / sum(len(v) for v in eager.values())
    eval_s = time.perf_counter() - te
    print(f"\nfinal held-out evaluation, TorchConversation (greedy, CPU), {args.final_n} probes per delay:")
    print(format_table(res))
    print(f"(batched {device} decoder agrees on {agree:.1%} of answers; evaluation took {eval_s:.1f} s)")
    for ex in examples(final_probes["told"], eager["told"]):
        print(f"  d{ex['delay']} Q: {ex['q']!r} expected {ex['expected']!r} -> {ex['answer']!r}")
    for ex in examples(final_probes["no_fact"], eager["no_fact"], 2):
        print(f"  no-fact d{ex['delay']} Q: {ex['q']!r} -> {ex['answer']!r}")

    out = args.out
    net.commit_stm()
    model.cpu()
    save_native(model, out)
    shutil.copyfile(args.tokenizer, out / "tokenizer.model")
    metrics = {
        "command": " ".join(["python", "models/demo/recipe/train_demo.py", *(argv if argv is not None else sys.argv[1:])]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "parameters": n_params,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "steps_done": steps_done,
        "train_seconds": round(train_s, 1),
        "seconds_per_step": round(train_s / max(1, steps_done), 4),
        "final_eval": {"path": "TorchConversation greedy, CPU", "probes_per_delay": args.final_n,
                       "eval_seed": args.eval_seed + 1, "results": res},
        "final_eval_batched": {"device": str(device), "results": res_batched, "answers_identical": agree},
        "history": history,
        "examples": examples(final_probes["told"], eager["told"]) + examples(final_probes["no_fact"], eager["no_fact"], 2),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"wrote {out}/config.json, model.safetensors, tokenizer.model, metrics.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
