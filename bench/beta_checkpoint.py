"""A random-weight checkpoint in rxlm's own format at RxT-Beta's real size, written without holding it in memory.

`python -m rxt_edge.bench.beta_checkpoint OUT [--preset rxt-beta] [--dtype bf16] [--seed 0]`

What rxlm's `save_pretrained` writes for an RxTBeta (config.json with decoder_config / encoder_config /
memory_attention_config / tokenizer_config / memory_attention_variant, plus model.safetensors with keys under
`decoder.model.`, `encoder.model.`, `memory_attention.model.`), with a small byte-level tokenizer.json beside it
(rxlm writes none; exporting needs one). The tensor names and shapes come from a `meta`-device model (no
memory) and the rxlm reader's own name map (`export/checkpoints/rxlm.py`), and the config is checked by
translating it back with that reader, so the checkpoint is exactly what `rxt-edge export` reads. Tensors are
made and written one at a time (`safetensors_stream.write_safetensors`): peak memory is one expert tensor.

bf16 on disk (the default) halves the file (~5.9 GB for rxt-beta instead of ~11.7 GB) and the reading; the
reader widens to fp32, exactly. Values: matrices N(0, 0.02) (routed experts too), norm weights 1, other
vectors 0, the initial STM N(0, 1); seeded per tensor. Random weights: the model answers gibberish.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rxt_edge.export.checkpoints.rxlm import rxlm_names, translate_config
from rxt_edge.export.checkpoints.rxlm_twin import component_args, memory_attention_config
from rxt_edge.export.checkpoints.safetensors_stream import write_safetensors
from rxt_edge.export.config import RxTConfig
from rxt_edge.export.model import RxTModel
from rxt_edge.export.presets import preset_config

from .fixtures import write_bench_tokenizer

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# RxTBeta's tokenizer_config (its nine special ids); the bench tokenizer has its specials at these ids too
TOKEN_IDS = {
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "query_token_id": 3,
    "answer_token_id": 4,
    "think_token_id": 5,
    "tool_call_token_id": 6,
    "tool_use_token_id": 7,
    "internal_token_id": 8,
}


def rxlm_beta_config(cfg: RxTConfig) -> dict[str, Any]:
    """rxlm (0.3.92) constructor arguments of a Beta-shaped config (presets.rxt-beta*): MoE decoder with
    memory-free layers before/after, gated self-attention, SQA, grouped-self-interlayer memory, elementwise
    sigmoid gates. Checked by the caller by translating back (`check_round_trip`)."""
    dec, enc, mc = cfg.decoder, cfg.encoder, cfg.memory
    blk, eblk = dec.memory_layers[0], enc.layers[0]
    sa, ca, moe, ef = blk.self_attn, blk.cross_attn, blk.ffn, eblk.ffn
    dense = next((b.ffn for b in dec.all_layers if not b.ffn.is_moe), None)
    common = {**component_args(cfg), "use_gated": True, "ff_activation": moe.activation}
    kind = lambda b: "moe" if b.ffn.is_moe else "dense"  # noqa: E731
    return {
        "decoder_config": {
            **common,
            "att_groups": sa.kv_heads,
            "att_query_groups": sa.q_heads,
            "cross_att_type": "sqa",
            "cross_att_groups": ca.kv_heads,
            "cross_att_query_groups": ca.q_heads,
            "skip_memory_cross_attention": False,
            "ff_dim": moe.hidden_dim,
            "use_moe": True,
            "use_vectorized_moe": True,
            "num_experts": moe.num_experts,
            "moe_top_k": moe.top_k,
            "num_shared_experts": moe.num_shared_experts,
            "shared_expert_dim": moe.shared_hidden_dim,
            "moe_bias_mode": moe.expert_bias,
            "moe_shared_experts_bias_mode": moe.shared_bias,
            "moe_use_weighted_shared_experts": moe.weighted_shared,
            "stateless_layers_config": [kind(b) for b in dec.layers_before],
            "final_stateless_layers_config": [kind(b) for b in dec.layers_after],
            "dense_layer_dim": dense.hidden_dim if dense else 1536,
            "use_head_norm": dec.head_norm is not None,
            "head_norm_type": {"rms": "rms_norm", "layer": "layer_norm"}.get(dec.head_norm, "rms_norm"),
            "use_gated_attention": sa.gated,
            "use_gated_cross_attention": ca.gated,
        },
        "encoder_config": {
            **common,
            "num_layers": len(enc.layers),
            "att_groups": eblk.self_attn.kv_heads,
            "att_query_groups": eblk.self_attn.q_heads,
            "ff_dim": ef.hidden_dim,
            "ff_activation": ef.activation,
            "skip_memory_cross_attention": True,
            "use_gated_attention": eblk.self_attn.gated,
            "rope_base": enc.rope_base,
        },
        "memory_attention_config": memory_attention_config(cfg),
        "memory_attention_variant": mc.variant,
        "tokenizer_config": dict(TOKEN_IDS),
    }


def check_round_trip(cfg: RxTConfig, rx: dict[str, Any]) -> RxTConfig:
    """The reader's translation of `rx`; raises unless it is `cfg`'s architecture. Allowed differences: biases
    rxlm always builds (dense feed-forward layers, memory-attention output projections), the presets none."""
    special = {k.removesuffix("_token_id"): v for k, v in rx["tokenizer_config"].items()}
    back = translate_config(
        rx["decoder_config"], rx["encoder_config"], rx["memory_attention_config"],
        rx["memory_attention_variant"], special, "rxlm beta config",
    )  # fmt: skip

    def shape(c: RxTConfig) -> dict:
        d = json.loads(json.dumps(c.to_dict()))
        d.pop("special_tokens", None)
        for part in (d["decoder"], d["encoder"]):
            for key in ("memory_layers", "layers_before", "layers_after", "layers"):
                for b in part.get(key) or []:
                    b["ffn"].pop("bias", None)
        for key in ("attn", "aux_attn"):
            (d["memory"].get(key) or {}).pop("out_bias", None)
        return d

    if shape(back) != shape(cfg):
        raise ValueError("the rxlm config does not translate back to the preset's architecture")
    return back


def rxlm_specs(model: RxTModel, variant: str) -> list[tuple[str, tuple[int, ...]]]:
    """(rxlm key, shape) of every tensor rxlm saves for `model`, in our state-dict order. `save_pretrained`
    keeps one name of each shared tensor: the embedding and the STM under the decoder's names."""
    names = rxlm_names(model, variant, {c: f"{c}.model." for c in ("decoder", "encoder", "memory_attention")})
    seen: set[int] = set()
    out = []
    for key, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            out.append((names(key)[-1 if key == "initial_stm" else 0], tuple(t.shape)))
    return out


def _value(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if name.endswith("stm.memory"):
        return torch.randn(shape, generator=gen).to(dtype)
    if len(shape) >= 2:
        return torch.randn(shape, generator=gen).mul_(0.02).to(dtype)
    fill = 1.0 if "norm" in name else 0.0
    return torch.full(shape, fill, dtype=dtype)


def write_beta_checkpoint(
    out: Path,
    preset: str | RxTConfig = "rxt-beta",
    dtype: str = "bf16",
    seed: int = 0,
    progress: Callable[[str], None] = print,
) -> Path:
    """Write config.json, model.safetensors and tokenizer.json of a random `preset` (a preset name, or a
    Beta-shaped config) into `out`."""
    cfg = preset_config(preset) if isinstance(preset, str) else preset
    rx = rxlm_beta_config(cfg)
    back = check_round_trip(cfg, rx)
    back.shared_embedding = True
    with torch.device("meta"):
        model = RxTModel(back)
    specs = [
        (name, shape, DTYPES[dtype]) for name, shape in rxlm_specs(model, rx["memory_attention_variant"])
    ]
    total = sum(torch.Size(s).numel() for _, s, _ in specs)
    label = preset if isinstance(preset, str) else "config"
    progress(f"{label}: {len(specs)} tensors, {total / 1e9:.3f}B values, {dtype} -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    t0, done = time.perf_counter(), [0]

    def make(name: str, shape: tuple[int, ...], dt: torch.dtype) -> torch.Tensor:
        done[0] += torch.Size(shape).numel()
        return _value(name, shape, dt, seed * 1_000_003 + len(name) * 7919 + hash_name(name))

    def step(i: int, n: int, name: str) -> None:
        if i == n or i % 25 == 0:
            pct = 100 * done[0] / total
            progress(f"  {i}/{n} tensors, {pct:5.1f}% of values, {time.perf_counter() - t0:6.1f} s ({name})")

    size = write_safetensors(out / "model.safetensors", specs, make, {"format": "pt"}, step)
    (out / "config.json").write_text(json.dumps(rx, indent=2))
    write_bench_tokenizer(out / "tokenizer.json")
    progress(f"wrote {out} ({size / 1e9:.2f} GB of weights) in {time.perf_counter() - t0:.1f} s")
    return out


def hash_name(name: str) -> int:
    """A stable per-tensor seed part (Python's str hash is salted per process)."""
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) % 2_147_483_647
    return h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m rxt_edge.bench.beta_checkpoint", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "out", type=Path, help="directory to write (config.json, model.safetensors, tokenizer.json)"
    )
    ap.add_argument("--preset", default="rxt-beta", help="a Beta-shaped preset: rxt-beta or rxt-beta-mini")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weights on disk (default bf16)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        write_beta_checkpoint(args.out, args.preset, args.dtype, args.seed, lambda s: print(s, flush=True))
    except (KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
