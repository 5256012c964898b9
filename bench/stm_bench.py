"""STM at RxT-Beta scale (not a test): memory-update time, snapshot size and save/restore time, fp16 snapshots.

    python -m rxt_edge.bench.stm_bench --workdir /tmp/rxt-stmbench --threads 1 [--demo models/demo/package]

What is built: RxT-Beta's encoder (21 layers, SQA 8/8, gated attention, dense SwiGLU 1536) and memory attention
(grouped-self-interlayer, 3 groups, SQA 8/8, STM 21 x 4096 x 512) at their real shapes, random weights; the
decoder keeps Beta's 21 memory layers and cross-attention (so `memory_kv`, which runs after every update, is
Beta's) but a small dense FFN of 128 instead of the MoE stack, no memory-free layers and a 1024-token limit:
the decoder is not what this measures. Then, with the real runtime: the background memory update per turn, snapshot bytes,
save and restore time in float32 and float16, and greedy agreement after restoring an fp16 snapshot: the same
conversation continued from the float32 and from the float16 snapshot, token for token, here and on `--demo`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .quant_report import DEFAULT_QUERIES, positional_agreement

FOLLOW_UPS = (
    "And what about tomorrow?",
    "Can you say that again in other words?",
    "What did I tell you first?",
    "Thanks. One more question: what is two plus two?",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def beta_stm_config():
    """RxT-Beta with 21 memory layers, its decoder's FFNs replaced by a dense 128 (see the module docstring)."""
    from rxt_edge.export.config import FeedForwardConfig
    from rxt_edge.export.presets import preset_config

    cfg = preset_config("rxt-beta")
    dec = cfg.decoder
    small = [dataclasses.replace(b, ffn=FeedForwardConfig(128, bias=False)) for b in dec.memory_layers]
    # turns here are short: a 1024-token limit keeps the KV cache small (8192 would not change the update)
    dec = dataclasses.replace(dec, memory_layers=small, layers_before=[], layers_after=[], max_seq_len=1024)
    return dataclasses.replace(cfg, decoder=dec, encoder=dataclasses.replace(cfg.encoder, max_seq_len=1024))


def build(workdir: Path) -> Path:
    from .fixtures import export_checkpoint, random_checkpoint

    pkg, ckpt = workdir / "fp32", workdir / "checkpoint"
    if (pkg / "manifest.json").is_file():
        return pkg
    random_checkpoint(beta_stm_config(), ckpt)
    t = time.perf_counter()
    export_checkpoint(ckpt, pkg, progress=log)
    log(f"exported in {time.perf_counter() - t:.0f} s")
    return pkg


def _turn(conv, text: str, max_new: int) -> list[int]:
    return conv.interact_ids(conv.engine.package.tokenizer.encode(text)[:200], max_new_tokens=max_new)


def fp16_agreement(session, max_new: int, save_after: tuple[int, ...] = (1, 3, 5)) -> dict:
    """Greedy tokens of the same conversation continued from a float32 and from a float16 snapshot."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in save_after:
            conv = session.conversation()
            for q in DEFAULT_QUERIES[:k]:
                _turn(conv, q, max_new)
            paths = {d: Path(tmp) / f"{d}.rxtsnap" for d in ("float32", "float16")}
            for d, p in paths.items():
                conv.save(p, dtype=d)
            answers = {}
            for d, p in paths.items():
                c = session.restore(p)
                answers[d] = [_turn(c, q, max_new) for q in FOLLOW_UPS]
                c.wait_memory()
            stm32 = session.restore(paths["float32"]).stm().astype(np.float64)
            stm16 = session.restore(paths["float16"]).stm().astype(np.float64)
            rel = float(np.abs(stm16 - stm32).max() / np.abs(stm32).max())
            agree = [
                positional_agreement(a, b)
                for a, b in zip(answers["float32"], answers["float16"], strict=True)
            ]
            rows.append(
                {
                    "saved_after_turns": k,
                    "follow_up_turns": len(FOLLOW_UPS),
                    "identical_turns": sum(
                        a == b for a, b in zip(answers["float32"], answers["float16"], strict=True)
                    ),
                    "token_agreement": float(np.mean(agree)),
                    "tokens": sum(len(a) for a in answers["float32"]),
                    "stm_max_rel_diff": rel,
                }
            )
    return {"rows": rows}


def snapshot_costs(session, max_new: int, repeats: int = 3) -> dict:
    """Bytes, save and restore seconds (restore: read, check, cast, install) per dtype, best of `repeats`."""
    conv = session.conversation()
    _turn(conv, DEFAULT_QUERIES[0], max_new)
    conv.wait_memory()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float16"):
            path = Path(tmp) / f"{dtype}.rxtsnap"
            save, restore = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                conv.save(path, dtype=dtype)
                save.append(time.perf_counter() - t)
                t = time.perf_counter()
                session.restore(path)
                restore.append(time.perf_counter() - t)
            out[dtype] = {"bytes": path.stat().st_size, "save_s": min(save), "restore_s": min(restore)}
    return out


def memory_update_time(session, max_new: int) -> dict:
    conv = session.conversation()
    times, tokens = [], []
    for q in DEFAULT_QUERIES:
        answer = _turn(conv, q, max_new)
        conv.wait_memory()
        times.append(conv.last_update_s)
        tokens.append(conv.last_stats.prompt_tokens + len(answer))
    return {"update_s": times, "median_s": float(np.median(times[1:])), "interaction_tokens": tokens}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rxt-stmbench"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument(
        "--demo", type=Path, default=None, help="also measure fp16 snapshot agreement on this package"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from rxt_edge.session import RxTSession

    result: dict = {"threads": args.threads}
    pkg = build(args.workdir)
    with RxTSession.load(pkg, threads=args.threads) as s:
        result["stm_shape"] = list(s.package.stm_shape)
        log("memory update")
        result["memory_update"] = memory_update_time(s, args.max_new_tokens)
        log("snapshots")
        result["snapshots"] = snapshot_costs(s, args.max_new_tokens)
        log("fp16 agreement (Beta-STM random model)")
        result["fp16_agreement_beta_stm"] = fp16_agreement(s, args.max_new_tokens, save_after=(1, 3))
    if args.demo:
        with RxTSession.load(args.demo, threads=args.threads) as s:
            log("fp16 agreement (demo)")
            result["fp16_agreement_demo"] = fp16_agreement(s, 32)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
