"""PyTorch eager references on the same weights and thread count: our canonical torch model, and rxlm's cached
decode path (through its twin, `rxt_edge.export.checkpoints.rxlm_twin`) where rxlm is installed.

Both follow the runtime's turn schedule with fixed-length answers ([EOS] never chosen) on the scripted queries of
`options.query_ids`, so their rows compare with the runtime's. torch is imported inside the functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rxt_edge import contract

from .options import WARMUP_TURN, BenchOptions, query_ids
from .stats import speed_summary


@contextmanager
def _torch_threads(torch, n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _torch_device(torch, provider: str) -> str:
    """Where the eager rows run: the GPU when the runtime is benchmarked on CUDA and torch can use it."""
    return "cuda" if provider == "cuda" and torch.cuda.is_available() else "cpu"


def torch_eager_speed(model, opts: BenchOptions) -> dict[str, Any]:
    """Our canonical torch model, eager, on the runtime's schedule: memory K/V projected once per turn at the
    end of the memory update; prompt in one call; one call per generated token (KV cache concatenated)."""
    import torch

    device = _torch_device(torch, opts.provider)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = model.to(device)
    sp = model.cfg.special_tokens
    eos, vocab = sp["eos"], model.cfg.vocab_size
    q, a = opts.query_tokens, opts.answer_tokens
    prompt_t, decode_t, update_t = [], [], []
    with torch.inference_mode(), _torch_threads(torch, opts.thread_count):
        stm = model.initial_stm.clone()
        mem_k, mem_v = model.memory_kv(stm)
        for t in range(-1, opts.speed_turns):  # turn -1: warm-up
            query = query_ids(WARMUP_TURN if t < 0 else t, q, vocab, opts.seed)
            prompt = contract.turn_prompt(sp, query)
            sync()
            t0 = time.perf_counter()
            past_k, past_v = ([x.to(device) for x in xs] for xs in model.empty_cache())
            logits, nk, nv = model.decoder(
                torch.tensor([prompt], device=device), past_k, past_v, mem_k, mem_v
            )
            logits[0, eos] = -math.inf
            answer = [int(logits[0].argmax())]
            t1 = time.perf_counter()
            past_k, past_v = nk, nv
            while len(answer) < a:
                tok = torch.tensor([[answer[-1]]], device=device)
                logits, nk, nv = model.decoder(tok, past_k, past_v, mem_k, mem_v)
                past_k = [torch.cat([x, y]) for x, y in zip(past_k, nk, strict=True)]
                past_v = [torch.cat([x, y]) for x, y in zip(past_v, nv, strict=True)]
                logits[0, eos] = -math.inf
                answer.append(int(logits[0].argmax()))
            t2 = time.perf_counter()
            ids = torch.tensor(
                [contract.turn_interaction(sp, prompt, answer, ended=False)], device=device
            )  # fixed length: cut
            mask = torch.ones_like(ids)
            stm = model.memory(stm, model.encoder(ids, mask), mask)
            mem_k, mem_v = model.memory_kv(stm)
            sync()
            t3 = time.perf_counter()
            if t >= 0:
                prompt_t.append(t1 - t0)
                decode_t.append((t2 - t1) / (a - 1))
                update_t.append(t3 - t2)
    model.to("cpu")
    return {
        "engine": f"PyTorch eager (rxt-edge model, {device})",
        "device": device,
        **speed_summary(prompt_t, decode_t, update_t),
    }


def rxlm_eager_speed(model, rx, opts: BenchOptions) -> dict[str, Any]:
    """rxlm's cached generation path, driven step by step as its `interact()` does: STM K/V pre-cache and
    prompt with the self-attention cache, then one token per call with `current_positions`; after the answer,
    encoder + memory attention. rxlm projects the STM K/V at the start of each answer, so that is in its prompt
    time (ours does it at the end of the memory update)."""
    import torch
    from rxt_edge.export.checkpoints.rxlm_twin import reset_rxlm_caches, rxlm_version

    sp = model.cfg.special_tokens
    eos, vocab = sp["eos"], model.cfg.vocab_size
    q, a = opts.query_tokens, opts.answer_tokens
    device = _torch_device(torch, opts.provider)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rx, model = rx.to(device), model.to(device)
    dec = rx.decoder.model
    prompt_t, decode_t, update_t = [], [], []
    first_logits_diff = None
    with torch.no_grad(), _torch_threads(torch, opts.thread_count):
        for t in range(-1, opts.speed_turns):
            query = query_ids(WARMUP_TURN if t < 0 else t, q, vocab, opts.seed)
            prompt = contract.turn_prompt(sp, query)
            reset_rxlm_caches(rx)
            ids = torch.tensor([prompt], device=device)
            sync()
            t0 = time.perf_counter()
            kv = dec.prepare_stm_kv_cache()
            out = dec(ids, attention_mask=torch.ones_like(ids), stm_kv_cache=kv, use_self_attn_cache=True)
            logits = out[0, -1]
            if t == -1:  # same weights, same STM: the first prompt's logits must agree with ours
                with torch.inference_mode():
                    mk, mv = model.memory_kv(model.initial_stm)
                    pk, pv = ([x.to(device) for x in xs] for xs in model.empty_cache())
                    ref = model.decoder(ids, pk, pv, mk, mv)[0][0]
                first_logits_diff = float((ref - logits).abs().max())
            logits[eos] = -math.inf
            answer = [int(logits.argmax())]
            t1 = time.perf_counter()
            pos = len(prompt)
            while len(answer) < a:
                out = dec(
                    torch.tensor([[answer[-1]]], device=device),
                    attention_mask=torch.ones(1, 1, dtype=torch.long, device=device),
                    stm_kv_cache=kv,
                    use_self_attn_cache=True,
                    current_positions=torch.tensor([[pos]], device=device),
                )
                pos += 1
                logits = out[0, -1]
                logits[eos] = -math.inf
                answer.append(int(logits.argmax()))
            t2 = time.perf_counter()
            inter = torch.tensor(
                [contract.turn_interaction(sp, prompt, answer, ended=False)], device=device
            )  # fixed length: cut
            mask = torch.ones_like(inter)
            _, hidden = rx.encoder(inter, attention_mask=mask)
            rx.memory_attention(hidden, attention_mask=mask)
            sync()
            t3 = time.perf_counter()
            if t >= 0:
                prompt_t.append(t1 - t0)
                decode_t.append((t2 - t1) / (a - 1))
                update_t.append(t3 - t2)
    model.to("cpu")
    return {
        "engine": f"PyTorch eager (rxlm {rxlm_version()}, cached decode, {device})",
        "device": device,
        **speed_summary(prompt_t, decode_t, update_t),
        "same_weights_first_logits_max_diff": first_logits_diff,
    }
