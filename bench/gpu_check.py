"""CUDA execution-provider checks and timings, run on the lent GPU machine (see docs/benchmarks.md).

    python -m rxt_edge.bench.gpu_check --out $OUT --presets tiny alpha-micro alpha-mini

For each preset: export fp32 (and fp16) packages with random weights, then
1. correctness: 5-turn greedy conversation on the CUDA EP vs the CPU EP (tokens identical for fp32) and vs torch;
2. the STM and its K/V stay on the device: the OrtValues' device names, and the decoder's bound inputs;
3. speed: decode tokens/s (median over turns) on CPU and CUDA, fp32 and fp16.
Writes gpu_check.json under --out and prints a table. Public runtime API only (sessions, conversations, slots).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from rxt_edge import contract


def make_package(preset: str, root: Path, precision: str) -> tuple[Path, object]:
    from .fixtures import export_checkpoint, preset_checkpoint

    ckpt = preset_checkpoint(preset, root / f"{preset}-ckpt", seed=0, scale=0.05)
    return export_checkpoint(ckpt, root / f"{preset}-{precision}", precision=precision)


def conversation_tokens(pkg: Path, provider: str, turns: int, new_tokens: int):
    from rxt_edge import RxTSession

    session = RxTSession.load(pkg, provider=provider)
    conv = session.conversation()
    answers, decode_rates, devices = [], [], {}
    for t in range(turns):
        query = [10 + t, 20 + t, 30 + t, 40 + t, 50 + t, 60 + t]
        ids = conv.interact_ids(query, max_new_tokens=new_tokens)
        answers.append(ids)
        decode_rates.append(conv.last_stats.tokens_per_s)
        conv.wait_memory()
    memory = conv.memory
    devices["stm"] = memory.stm[memory.active].device_name()
    devices["memory_key.0"] = memory.kv[memory.active]["memory_key.0"].device_name()
    with session.engine.lease_slot(memory) as slot:
        devices["kv_cache.0"] = slot.cache.keys[0].device_name()
    stm = conv.stm()
    session.close()
    return answers, decode_rates, devices, stm


def forced_decode_rate(pkg: Path, provider: str, tokens: int = 128) -> float:
    """Decode tokens/s with EOS ignored: a fixed number of steps on a leased slot, median of 3 turns."""
    from rxt_edge import RxTSession

    session = RxTSession.load(pkg, provider=provider)
    conv = session.conversation()
    tokens = min(tokens, session.dims.max_seq_len - 8)
    rates = []
    with session.engine.lease_slot(conv.memory) as slot:
        for t in range(4):
            logits = slot.prefill(contract.turn_prompt(session.engine.special, [10 + t, 11, 12]))
            started = time.perf_counter()
            for _ in range(tokens):
                logits = slot.step(int(np.argmax(logits)) % 200 + 5)
            rates.append(tokens / (time.perf_counter() - started))
    session.close()
    return statistics.median(rates[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("gpu-out"))
    ap.add_argument("--presets", nargs="+", default=["tiny", "alpha-micro"])
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument(
        "--gpu", default="cuda", help="provider to compare with the CPU (use cpu for a local dry run)"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort
    import torch
    from rxt_edge.export.torch_chat import TorchConversation

    print(
        "onnxruntime", ort.__version__, ort.get_available_providers(), "torch", torch.__version__, flush=True
    )
    results = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(), "presets": {}}
    work = Path(tempfile.mkdtemp(prefix="rxt-gpu-"))
    for preset in args.presets:
        row = {}
        t0 = time.perf_counter()
        pkg32, model = make_package(preset, work, "fp32")
        pkg16, _ = make_package(preset, work, "fp16")
        row["export_s"] = round(time.perf_counter() - t0, 1)
        ref = TorchConversation(model)
        torch_answers = [
            ref.say([10 + t, 20 + t, 30 + t, 40 + t, 50 + t, 60 + t], 24) for t in range(args.turns)
        ]
        cpu = conversation_tokens(pkg32, "cpu", args.turns, 24)
        cuda = conversation_tokens(pkg32, args.gpu, args.turns, 24)
        cuda16 = conversation_tokens(pkg16, args.gpu, args.turns, 24)
        agree16 = np.mean(
            [
                np.mean([a == b for a, b in zip(x, y, strict=False)] or [1.0])
                for x, y in zip(cuda16[0], cuda[0], strict=True)
            ]
        )
        row.update(
            cuda_tokens_equal_cpu_fp32=cuda[0] == cpu[0],
            cpu_tokens_equal_torch=cpu[0] == torch_answers,
            stm_cuda_vs_cpu_max_diff=float(np.abs(cuda[3] - cpu[3]).max()),
            fp16_greedy_agreement_vs_fp32=float(agree16),
            devices_cuda=cuda[2],
            decode_tok_s={
                "cpu_fp32": round(forced_decode_rate(pkg32, "cpu"), 1),
                "cuda_fp32": round(forced_decode_rate(pkg32, args.gpu), 1),
                "cuda_fp16": round(forced_decode_rate(pkg16, args.gpu), 1),
            },
        )
        results["presets"][preset] = row
        print(preset, json.dumps(row), flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
