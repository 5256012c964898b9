"""An rxlm model holding exactly our model's weights: the reference row of `rxt-edge bench` (rxt_edge.bench.eager).

It inverts this package's rxlm reader (`rxlm.py`): for a model built here (a preset), `rxlm_config` writes the
rxlm constructor arguments of our config, checked by translating them back with the reader; for a model read
from an rxlm checkpoint, the checkpoint's own config is used, so every architecture the reader accepts gets a
twin. Weights are copied through the reader's name map, every rxlm tensor accounted for. rxlm is imported
lazily (an optional, non-commercial dependency: read to learn, never copied).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..model import RxTModel
from .rxlm import COMPONENT_DIRS, _ignorable, rxlm_names, translate_config

PREFIXES = {c: f"{c}.model." for c in COMPONENT_DIRS}


def component_args(cfg) -> dict[str, Any]:
    """The rxlm constructor arguments its decoder and encoder configs share (SQA self-attention)."""
    sa = cfg.decoder.memory_layers[0].self_attn
    return {
        "num_layers": cfg.memory_layers,
        "vocab_size": cfg.vocab_size,
        "embed_dim": cfg.dim,
        "att_heads": cfg.dim // sa.head_dim,
        "seq_len": cfg.decoder.max_seq_len,
        "stm_size": cfg.stm_slots,
        "use_flash_attention": False,
        "self_att_type": "sqa",
        "use_attention_output_bias": sa.out_bias,
        "rope_base": cfg.decoder.rope_base,
    }


def memory_attention_config(cfg) -> dict[str, Any]:
    """rxlm's `memory_attention_config` for `cfg.memory` (the grouped variants add `num_groups`)."""
    mc, gate = cfg.memory, cfg.memory.residual_gate
    out = {
        "num_layers": mc.num_layers,
        "embed_dim": cfg.dim,
        "att_heads": cfg.dim // cfg.decoder.memory_layers[0].self_attn.head_dim,
        "seq_len": cfg.decoder.max_seq_len,
        "stm_size": cfg.stm_slots,
        "use_flash_attention": False,
        "att_type": "sqa",
        "att_groups": mc.attn.kv_heads,
        "att_query_groups": mc.attn.q_heads,
        "interlayer_att_type": "sqa",
        "interlayer_att_groups": mc.aux_attn.kv_heads,
        "interlayer_att_query_groups": mc.aux_attn.q_heads,
        "norm_type": mc.norm.kind,
        "use_gated_residual": True,
        "residual_gate_type": gate.mode,
        "use_tanh_residual_gate": gate.activation == "tanh",
        "residual_per_slot_gate": gate.per_slot,
        "rope_base": mc.rope_base,
    }
    if mc.variant.startswith("grouped"):
        out["num_groups"] = mc.num_groups
    return out


def rxlm_config(cfg) -> dict[str, Any] | None:
    """rxlm (0.3.92) constructor arguments for a dense, SQA-style RxT config like the Alpha presets, or None when
    the config uses something this mapping does not cover (MoE, memory-free layers, gated attention...)."""
    dec_blk, enc_blk = cfg.decoder.memory_layers[0], cfg.encoder.layers[0]
    sa, ca, ff, ef = dec_blk.self_attn, dec_blk.cross_attn, dec_blk.ffn, enc_blk.ffn
    mc = cfg.memory
    if (
        ff.is_moe
        or cfg.decoder.layers_before
        or cfg.decoder.layers_after
        or sa.gated
        or ca.gated
        or mc.variant != "self-interlayer"
        or mc.norm.kind != "classic-rms"
        or mc.residual_gate.mode != "elementwise"
    ):
        return None
    common = {
        **component_args(cfg),
        "att_groups": sa.kv_heads,
        "att_query_groups": sa.q_heads,
    }
    return {
        "decoder_config": {
            **common,
            "ff_dim": ff.hidden_dim,
            "use_gated": ff.gated,
            "ff_activation": ff.activation,
            "cross_att_type": "sqa",
            "cross_att_groups": ca.kv_heads,
            "cross_att_query_groups": ca.q_heads,
            "skip_memory_cross_attention": False,
            "stateless_layers_config": [],
            "use_head_norm": False,
        },
        "encoder_config": {
            **common,
            "ff_dim": ef.hidden_dim,
            "use_gated": ef.gated,
            "ff_activation": ef.activation,
            "skip_memory_cross_attention": True,
        },
        "memory_attention_config": memory_attention_config(cfg),
        "memory_attention_variant": "self-interlayer",
    }


def rxlm_twin(model: RxTModel, source: str | Path | None = None) -> tuple[Any, str | None]:
    """An rxlm RxTAlpha/RxTBeta with exactly our model's weights, or (None, reason).

    `source`: the rxlm checkpoint directory `model` was read from (the package's manifest source, format
    "rxlm"); its own config builds the twin. Otherwise the config comes from `rxlm_config`."""
    try:
        from rxlm.rxt import models
    except ImportError:
        return None, "rxlm is not installed"
    if source is not None:
        args, why = _source_args(Path(source))
        if args is None:
            return None, why
    else:
        args = rxlm_config(model.cfg)
        if args is None:
            return (
                None,
                "this configuration (MoE / memory-free layers / gated attention / other memory variant) "
                "has no rxlm mapping here",
            )
        sp = model.cfg.special_tokens
        args["tokenizer_config"] = {f"{k}_token_id": sp[k] for k in ("bos", "eos", "query", "answer", "pad")}
        args["model_class"] = "RxTAlpha"
    cls = getattr(models, args.pop("model_class"))
    requested = args["memory_attention_variant"]
    variant = {"interlayer": "self-interlayer"}.get(requested, requested)  # what rxlm builds for it
    back = translate_config(
        args["decoder_config"], args["encoder_config"], args["memory_attention_config"], variant,
        dict(model.cfg.special_tokens), "rxlm twin",
    )  # fmt: skip
    if back.to_dict() != {**model.cfg.to_dict(), "shared_embedding": back.shared_embedding}:
        return None, "the rxlm config does not translate back to this model's architecture"
    with torch.random.fork_rng(devices=[]):
        rx = cls(**args)
    rx.share_components()
    rx.eval()
    why = _copy_weights(model, rx, variant, _ignorable(model, args["memory_attention_config"]))
    return (None, why) if why else (rx, None)


def _source_args(source: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Constructor arguments of the rxlm model saved in `source` (combined layout), or (None, reason)."""
    path = source / "config.json"
    if all((source / d).is_dir() for d in COMPONENT_DIRS):
        return None, f"{source} has rxlm's per-component layout: no rxlm model is assembled from it here"
    try:
        top = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"the source checkpoint's rxlm config could not be read ({path}: {e})"
    tok = dict(top.get("tokenizer_config") or {})
    beta = "think_token_id" in tok  # as the reader infers the model class
    return {
        "decoder_config": top["decoder_config"],
        "encoder_config": top["encoder_config"],
        "memory_attention_config": top["memory_attention_config"],
        "memory_attention_variant": top.get("memory_attention_variant")
        or ("self-interlayer" if beta else "interlayer"),
        "tokenizer_config": tok,
        "model_class": "RxTBeta" if beta else "RxTAlpha",
    }, None


def _copy_weights(model: RxTModel, rx, variant: str, ignorable) -> str | None:
    """Copy our weights into `rx` through the reader's name map; the reason when one does not fit."""
    names = rxlm_names(model, variant, PREFIXES)
    theirs = rx.state_dict(keep_vars=True)
    done: set[str] = set()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            for cand in names(key):
                if cand in theirs:
                    if tuple(theirs[cand].shape) != tuple(value.shape):
                        return f"rxlm tensor {cand} has shape {tuple(theirs[cand].shape)}, ours {tuple(value.shape)}"
                    theirs[cand].copy_(value)
                    done.add(cand)
    left = [k for k in theirs if k not in done and ".rope." not in k and not ignorable(k)]
    return f"rxlm tensors without a counterpart: {left[:5]}" if left else None


def reset_rxlm_caches(rx) -> None:
    """Drop every self-attention cache of an rxlm model: its own `reset_self_attn_cache()` skips the final
    memory-free layers, whose stale cache would leak into the next generation."""
    for module in rx.modules():
        if hasattr(module, "reset_inner_cache"):
            module.reset_inner_cache()


def rxlm_version() -> str:
    """The installed rxlm's version, for report labels ("?" when unknown)."""
    try:
        from importlib.metadata import version

        return version("rxlm")
    except Exception:  # noqa: BLE001 - a label only
        return "?"
