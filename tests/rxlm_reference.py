"""Reference side of the parity tests: small random-weight models built with `rxlm` 0.3.92.

`rxlm` (PyPI, RAFL non-commercial licence) is used here only as an external test oracle: this module
builds its models, saves them with its own `save_pretrained`, and runs its own forward paths. No rxlm
code is copied into rxt_edge. rxlm is imported lazily, so importing this module needs only torch;
tests that call into it use `pytest.importorskip("rxlm")`.

Install (Python 3.11; rxlm declares >=3.12 but runs on 3.11 for inference):
    pip install --no-deps --ignore-requires-python rxlm==0.3.92
    pip install transformers huggingface-hub tokenizers

Every reference computation runs under `torch.no_grad()` in the model's dtype (fp32 as built; parity
tests also convert both sides to fp64, where only the math, not rounding, can differ) and starts from an
STM given by the caller (`[L, 1, S, D]`), loaded into the model before running, so results never depend
on rxlm's random STM.

rxlm 0.3.92 behaviour this module works around (checked by tests/test_rxlm_reference.py):
- `share_components()` re-registers the STM as fresh N(0, 1) noise;
- `save_pretrained` keeps one name per shared tensor (the lexicographically smallest): the shared
  embedding survives only as `decoder.model.embedding.weight`, the STM only as `decoder.model.stm.memory`,
  so `from_pretrained` + `share_components()` installs the never-loaded encoder embedding;
- `reset_self_attn_cache()` skips the final memory-free layers: a second `interact()` on such a model
  fails, so this module resets every attention cache itself;
- the self-attention KV cache requires an attention mask, and is sized by `seq_len`.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

VOCAB_SIZE = 300
SEQ_LEN = 64

# Special-token ids of every parity config (RxTBeta's tokenizer_config; Alpha uses the first five).
TOKEN_IDS: dict[str, int] = {
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
ALPHA_TOKEN_KEYS = ("bos_token_id", "eos_token_id", "query_token_id", "answer_token_id", "pad_token_id")
FIRST_PLAIN_TOKEN = 16  # ids below this are reserved for special tokens in generated test inputs


def tokenizer_config(model_class: str) -> dict[str, int]:
    """The tokenizer_config rxlm expects for `RxTAlpha` (5 ids) or `RxTBeta` (9 ids)."""
    if model_class == "RxTBeta":
        return dict(TOKEN_IDS)
    if model_class == "RxTAlpha":
        return {k: TOKEN_IDS[k] for k in ALPHA_TOKEN_KEYS}
    raise ValueError(f"model_class must be 'RxTAlpha' or 'RxTBeta', got {model_class!r}")


# ---------------------------------------------------------------------------------------------------
# Configurations. Keys are passed verbatim to rxlm, so they are also what lands in config.json.
# Some configs rely on rxlm defaults on purpose (e.g. ff_activation 'swish', use_gated True,
# use_attention_output_bias True, num_shared_experts 1): a checkpoint reader must apply rxlm's defaults.
# ---------------------------------------------------------------------------------------------------

_COMMON = {"vocab_size": VOCAB_SIZE, "seq_len": SEQ_LEN, "use_flash_attention": False}


def _decoder(**kw: Any) -> dict[str, Any]:
    return {**_COMMON, "skip_memory_cross_attention": False, "stateless_layers_config": [], **kw}


def _encoder(**kw: Any) -> dict[str, Any]:
    return {**_COMMON, "skip_memory_cross_attention": True, **kw}


def _memory(**kw: Any) -> dict[str, Any]:
    return {"seq_len": SEQ_LEN, "use_flash_attention": False, **kw}


def _many_experts(top_k: int, shared: int, bias: str, shared_bias: str, weighted: bool) -> dict[str, Any]:
    """RxTBeta with 64 SwiGLU experts of 16 in every decoder layer (and in one memory-free layer before and after)."""
    common = dict(embed_dim=32, att_heads=4, att_groups=2, att_query_groups=2, stm_size=8, rope_base=100_000)
    return {
        "model_class": "RxTBeta",
        "memory_attention_variant": "self-interlayer",
        "decoder_config": _decoder(
            num_layers=2,
            ff_dim=16,
            self_att_type="sqa",
            cross_att_type="sqa",
            use_moe=True,
            num_experts=64,
            moe_top_k=top_k,
            num_shared_experts=shared,
            shared_expert_dim=24,
            moe_bias_mode=bias,
            moe_shared_experts_bias_mode=shared_bias,
            moe_use_weighted_shared_experts=weighted,
            moe_grouped_gemm=False,
            use_gated_attention=True,
            use_attention_output_bias=False,
            use_head_norm=True,
            head_norm_type="rms_norm",
            stateless_layers_config=["moe"],
            final_stateless_layers_config=["moe"],
            **common,
        ),
        "encoder_config": _encoder(num_layers=2, ff_dim=64, self_att_type="sqa", **common),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=32,
            att_heads=4,
            stm_size=8,
            att_type="sqa",
            att_groups=2,
            att_query_groups=2,
            interlayer_att_type="sqa",
            interlayer_att_groups=2,
            interlayer_att_query_groups=2,
            norm_type="classic-rms",
            use_gated_residual=True,
            residual_gate_type="elementwise",
            use_tanh_residual_gate=False,
            residual_per_slot_gate=True,  # rxlm's default, written out: the coverage test reads every gated config
        ),
    }


PARITY_CONFIGS: dict[str, dict[str, Any]] = {
    # Plain MHA everywhere, rxlm defaults for the FFN (gated, 'swish') and output bias (on), no gate.
    "alpha_mha_dense": {
        "model_class": "RxTAlpha",
        "memory_attention_variant": "self-interlayer",
        "decoder_config": _decoder(
            num_layers=3,
            embed_dim=32,
            ff_dim=64,
            att_heads=4,
            stm_size=8,
            self_att_type="mha",
            cross_att_type="mha",
        ),
        "encoder_config": _encoder(
            num_layers=3, embed_dim=32, ff_dim=64, att_heads=4, stm_size=8, self_att_type="mha"
        ),
        "memory_attention_config": _memory(
            num_layers=3,
            embed_dim=32,
            att_heads=4,
            stm_size=8,
            att_type="mha",
            interlayer_att_type="mha",
            norm_type="classic-rms",
            use_gated_residual=False,
        ),
    },
    # GQA self-attn, forward SQA cross-attn, non-gated ReLU FFN, no output bias, LayerNorm head norm,
    # RoPE base 1e5, and 'interlayer' which rxlm silently builds as self-interlayer.
    "alpha_gqa_relu_interlayer": {
        "model_class": "RxTAlpha",
        "memory_attention_variant": "interlayer",
        "decoder_config": _decoder(
            num_layers=2,
            embed_dim=64,
            ff_dim=96,
            att_heads=8,
            att_groups=2,
            stm_size=16,
            self_att_type="gqa",
            cross_att_type="sqa",
            cross_att_groups=2,
            cross_att_query_groups=4,
            use_gated=False,
            ff_activation="relu",
            use_attention_output_bias=False,
            use_head_norm=True,
            head_norm_type="layer_norm",
            rope_base=100_000,
        ),
        "encoder_config": _encoder(
            num_layers=2,
            embed_dim=64,
            ff_dim=96,
            att_heads=8,
            att_groups=2,
            stm_size=16,
            self_att_type="gqa",
            use_gated=False,
            ff_activation="relu",
            use_attention_output_bias=False,
            rope_base=100_000,
        ),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=64,
            att_heads=8,
            stm_size=16,
            att_type="gqa",
            att_groups=2,
            interlayer_att_type="sqa",
            interlayer_att_groups=2,
            interlayer_att_query_groups=4,
            norm_type="rms",
            use_gated_residual=True,
            residual_gate_type="static",
            use_tanh_residual_gate=True,
            residual_per_slot_gate=True,
            rope_base=100_000,
        ),
    },
    # MQA self-attn, GQA cross-attn, non-gated GELU MoE (local expert bias, global shared bias, one
    # shared expert), gated attention, RMS head norm, one dense memory-free layer before.
    "alpha_mqa_gelu_moe": {
        "model_class": "RxTAlpha",
        "memory_attention_variant": "self-interlayer",
        "decoder_config": _decoder(
            num_layers=2,
            embed_dim=32,
            ff_dim=48,
            att_heads=4,
            att_groups=2,
            stm_size=8,
            self_att_type="mqa",
            cross_att_type="gqa",
            cross_att_groups=2,
            use_gated=False,
            ff_activation="gelu",
            use_moe=True,
            num_experts=4,
            moe_top_k=2,
            num_shared_experts=1,
            moe_bias_mode="local",
            moe_shared_experts_bias_mode="global",
            moe_grouped_gemm=False,
            use_gated_attention=True,
            use_head_norm=True,
            head_norm_type="rms_norm",
            stateless_layers_config=["dense"],
            dense_layer_dim=64,
        ),
        "encoder_config": _encoder(
            num_layers=2,
            embed_dim=32,
            ff_dim=64,
            att_heads=4,
            stm_size=8,
            self_att_type="mqa",
            use_gated=False,
            ff_activation="gelu",
        ),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=32,
            att_heads=4,
            stm_size=8,
            att_type="mqa",
            interlayer_att_type="gqa",
            interlayer_att_groups=2,
            norm_type="layer",
            use_gated_residual=True,
            residual_gate_type="elementwise",
            use_tanh_residual_gate=False,
            residual_per_slot_gate=False,
        ),
    },
    # Forward SQA self-attn (4 query heads over 2 kv heads), reverse SQA cross-attn (2 query heads tiled
    # over 4 kv heads), gated MoE with 2 weighted shared experts and no expert bias, one MoE layer after.
    # Head dim 16: the decoder exports with the static KV cache (GroupQueryAttention), checked against rxlm.
    "alpha_sqa_moe_shared2": {
        "model_class": "RxTAlpha",
        "memory_attention_variant": "self-interlayer",
        "decoder_config": _decoder(
            num_layers=2,
            embed_dim=128,
            ff_dim=64,
            att_heads=8,
            att_groups=2,
            att_query_groups=4,
            stm_size=16,
            self_att_type="sqa",
            cross_att_type="sqa",
            cross_att_groups=4,
            cross_att_query_groups=2,
            use_gated=True,
            ff_activation="silu",
            use_moe=True,
            num_experts=4,
            moe_top_k=2,
            num_shared_experts=2,
            moe_bias_mode="off",
            moe_shared_experts_bias_mode="local",
            moe_use_weighted_shared_experts=True,
            moe_grouped_gemm=False,
            final_stateless_layers_config=["moe"],
        ),
        "encoder_config": _encoder(
            num_layers=2,
            embed_dim=128,
            ff_dim=128,
            att_heads=8,
            att_groups=2,
            att_query_groups=4,
            stm_size=16,
            self_att_type="sqa",
            use_gated=True,
            ff_activation="silu",
        ),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=128,
            att_heads=8,
            stm_size=16,
            att_type="sqa",
            att_groups=2,
            att_query_groups=4,
            interlayer_att_type="mha",
            norm_type="adaptive",
            use_gated_residual=True,
            residual_gate_type="linear",
            residual_gate_slot_status_type="linear",
            use_tanh_residual_gate=True,
            residual_per_slot_gate=True,
        ),
    },
    # Reverse SQA self-attn, MQA cross-attn, gated self-attn but ungated cross-attn, no output bias,
    # gated MoE (global expert bias, shared bias off), dense+moe layers before and a dense layer after.
    "alpha_revsqa_gated_moe": {
        "model_class": "RxTAlpha",
        "memory_attention_variant": "self-interlayer",
        "decoder_config": _decoder(
            num_layers=3,
            embed_dim=32,
            ff_dim=48,
            att_heads=4,
            att_groups=4,
            att_query_groups=2,
            stm_size=8,
            self_att_type="sqa",
            cross_att_type="mqa",
            use_gated_attention=True,
            use_gated_cross_attention=False,
            use_attention_output_bias=False,
            use_moe=True,
            num_experts=4,
            moe_top_k=2,
            num_shared_experts=1,
            moe_bias_mode="global",
            moe_shared_experts_bias_mode="off",
            moe_grouped_gemm=False,
            stateless_layers_config=["dense", "moe"],
            final_stateless_layers_config=["dense"],
            dense_layer_dim=64,
        ),
        "encoder_config": _encoder(
            num_layers=3,
            embed_dim=32,
            ff_dim=64,
            att_heads=4,
            att_groups=4,
            att_query_groups=2,
            stm_size=8,
            self_att_type="sqa",
            use_attention_output_bias=False,
        ),
        "memory_attention_config": _memory(
            num_layers=3,
            embed_dim=32,
            att_heads=4,
            stm_size=8,
            att_type="sqa",
            att_groups=4,
            att_query_groups=2,
            interlayer_att_type="sqa",
            interlayer_att_groups=4,
            interlayer_att_query_groups=2,
            norm_type="positional",
            use_gated_residual=True,
            residual_gate_type="linear",
            residual_gate_slot_status_type="mean",
            use_tanh_residual_gate=False,
            residual_per_slot_gate=False,
        ),
    },
    # RxT-Beta in miniature: MoE + 2 weighted shared experts of their own width, memory-free layers
    # before and after, gated attention, RMS head norm, RoPE 1e5, grouped-self-interlayer (2 groups).
    "beta_like": {
        "model_class": "RxTBeta",
        "memory_attention_variant": "grouped-self-interlayer",
        "decoder_config": _decoder(
            num_layers=4,
            embed_dim=32,
            ff_dim=32,
            att_heads=4,
            att_groups=1,
            att_query_groups=2,
            stm_size=8,
            self_att_type="sqa",
            cross_att_type="sqa",
            use_gated=True,
            ff_activation="silu",
            use_moe=True,
            num_experts=4,
            moe_top_k=2,
            num_shared_experts=2,
            shared_expert_dim=48,
            moe_bias_mode="global",
            moe_shared_experts_bias_mode="local",
            moe_use_weighted_shared_experts=True,
            moe_grouped_gemm=False,
            use_gated_attention=True,
            use_attention_output_bias=False,
            use_head_norm=True,
            head_norm_type="rms_norm",
            stateless_layers_config=["dense", "moe"],
            final_stateless_layers_config=["moe"],
            dense_layer_dim=48,
            rope_base=100_000,
        ),
        "encoder_config": _encoder(
            num_layers=4,
            embed_dim=32,
            ff_dim=64,
            att_heads=4,
            att_groups=1,
            att_query_groups=2,
            stm_size=8,
            self_att_type="sqa",
            use_gated=True,
            ff_activation="silu",
            use_attention_output_bias=False,
            rope_base=100_000,
        ),
        "memory_attention_config": _memory(
            num_layers=4,
            num_groups=2,
            embed_dim=32,
            att_heads=4,
            stm_size=8,
            att_type="sqa",
            att_groups=1,
            att_query_groups=2,
            interlayer_att_type="sqa",
            interlayer_att_groups=1,
            interlayer_att_query_groups=2,
            norm_type="classic-rms",
            use_gated_residual=True,
            residual_gate_type="elementwise",
            residual_gate_slot_status_type="linear",
            use_tanh_residual_gate=True,
            residual_per_slot_gate=True,
            rope_base=100_000,
        ),
    },
    # RxTBeta with a dense SwiGLU decoder, one dense layer after, LayerNorm head norm and a static
    # scalar sigmoid gate (default variant of RxTBeta: self-interlayer).
    "beta_dense_static": {
        "model_class": "RxTBeta",
        "memory_attention_variant": "self-interlayer",
        "decoder_config": _decoder(
            num_layers=2,
            embed_dim=32,
            ff_dim=64,
            att_heads=4,
            att_groups=2,
            stm_size=12,
            self_att_type="gqa",
            cross_att_type="mha",
            use_gated=True,
            ff_activation="silu",
            use_head_norm=True,
            head_norm_type="layer_norm",
            final_stateless_layers_config=["dense"],
            dense_layer_dim=64,
        ),
        "encoder_config": _encoder(
            num_layers=2, embed_dim=32, ff_dim=64, att_heads=4, att_groups=2, stm_size=12, self_att_type="gqa"
        ),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=32,
            att_heads=4,
            stm_size=12,
            att_type="gqa",
            att_groups=2,
            interlayer_att_type="mqa",
            norm_type="rms",
            use_gated_residual=True,
            residual_gate_type="static",
            use_tanh_residual_gate=False,
            residual_per_slot_gate=False,
        ),
    },
    **{
        # Many small experts, as RxT-Beta routes (384 experts, top-10): 64 experts, top-k >= 4, shared experts,
        # each bias mode. Routing then picks a different expert set for nearly every token (prompt and decode).
        f"beta_moe64_{name}": _many_experts(**kw)
        for name, kw in {
            "global": dict(top_k=6, shared=2, bias="global", shared_bias="global", weighted=False),
            "local": dict(top_k=4, shared=1, bias="local", shared_bias="local", weighted=True),
            "off": dict(top_k=5, shared=2, bias="off", shared_bias="off", weighted=True),
        }.items()
    },
}

# Per-component layout: `decoder/`, `encoder/`, `memory_attention/`, each saved by the component class.
# These cover the memory-attention variants that RxTAlpha/RxTBeta cannot build ('simple', 'self' and
# the real 'interlayer').
PER_COMPONENT_CONFIGS: dict[str, dict[str, Any]] = {
    "comp_simple": {
        "memory_attention_class": "RxTSimpleMemoryAttention",
        "decoder_config": _decoder(
            num_layers=2,
            embed_dim=32,
            ff_dim=64,
            att_heads=4,
            att_groups=2,
            stm_size=8,
            self_att_type="gqa",
            cross_att_type="gqa",
        ),
        "encoder_config": _encoder(
            num_layers=2, embed_dim=32, ff_dim=64, att_heads=4, att_groups=2, stm_size=8, self_att_type="gqa"
        ),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=32,
            att_heads=4,
            stm_size=8,
            att_type="gqa",
            att_groups=2,
            norm_type="classic-rms",
            use_gated_residual=True,
            residual_gate_type="static",
            use_tanh_residual_gate=True,
            residual_per_slot_gate=True,
        ),
    },
    "comp_self": {
        "memory_attention_class": "RxTSelfMemoryAttention",
        "decoder_config": _decoder(
            num_layers=3,
            embed_dim=32,
            ff_dim=48,
            att_heads=4,
            att_groups=1,
            att_query_groups=2,
            stm_size=8,
            self_att_type="sqa",
            cross_att_type="sqa",
            use_gated_attention=True,
            use_head_norm=True,
            head_norm_type="rms_norm",
        ),
        "encoder_config": _encoder(
            num_layers=3,
            embed_dim=32,
            ff_dim=64,
            att_heads=4,
            att_groups=1,
            att_query_groups=2,
            stm_size=8,
            self_att_type="sqa",
        ),
        "memory_attention_config": _memory(
            num_layers=3,
            embed_dim=32,
            att_heads=4,
            stm_size=8,
            att_type="sqa",
            att_groups=1,
            att_query_groups=2,
            self_att_type="gqa",
            self_att_groups=2,
            use_gate_for_self_attention=True,
            norm_type="layer",
            use_gated_residual=True,
            residual_gate_type="elementwise",
            use_tanh_residual_gate=True,
            residual_per_slot_gate=True,
        ),
    },
    "comp_interlayer": {
        "memory_attention_class": "RxTInterlayerMemoryAttention",
        "decoder_config": _decoder(
            num_layers=2,
            embed_dim=64,
            ff_dim=64,
            att_heads=8,
            att_groups=2,
            stm_size=16,
            self_att_type="gqa",
            cross_att_type="mqa",
            use_moe=True,
            num_experts=4,
            moe_top_k=2,
            num_shared_experts=1,
            moe_grouped_gemm=False,
            rope_base=100_000,
        ),
        "encoder_config": _encoder(
            num_layers=2,
            embed_dim=64,
            ff_dim=96,
            att_heads=8,
            att_groups=2,
            stm_size=16,
            self_att_type="gqa",
            rope_base=100_000,
        ),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=64,
            att_heads=8,
            stm_size=16,
            att_type="mha",
            interlayer_att_type="sqa",
            interlayer_att_groups=2,
            interlayer_att_query_groups=4,
            norm_type="rms",
            use_gated_residual=True,
            residual_gate_type="linear",
            residual_gate_slot_status_type="linear",
            use_tanh_residual_gate=False,
            residual_per_slot_gate=True,
            rope_base=100_000,
        ),
    },
    # Edge cases of the construction rules: LayerNorm blocks, a sigmoid FFN, gated cross-attention with
    # ungated self-attention, and `disable_residual`, which makes the write replace the STM while rxlm
    # still builds the (then unused) static gate parameters.
    "comp_simple_replace": {
        "memory_attention_class": "RxTSimpleMemoryAttention",
        "decoder_config": _decoder(
            num_layers=2,
            embed_dim=32,
            ff_dim=48,
            att_heads=4,
            stm_size=8,
            self_att_type="mha",
            cross_att_type="mha",
            use_rms_norm=False,
            use_gated=False,
            ff_activation="sigmoid",
            use_gated_cross_attention=True,
        ),
        "encoder_config": _encoder(
            num_layers=2,
            embed_dim=32,
            ff_dim=48,
            att_heads=4,
            stm_size=8,
            self_att_type="mha",
            use_rms_norm=False,
            use_gated=False,
            ff_activation="sigmoid",
        ),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=32,
            att_heads=4,
            stm_size=8,
            att_type="mha",
            norm_type="adaptive",
            use_gated_residual=True,
            residual_gate_type="static",
            disable_residual=True,
        ),
    },
    # Self variant whose self-attention gate is off while the main gate uses a linear slot status: rxlm
    # still builds the (unused) slot-status linears of the ungated self gates. Positional memory norm
    # with a per-dimension scale, one scalar linear gate (per_slot False).
    "comp_self_ungated": {
        "memory_attention_class": "RxTSelfMemoryAttention",
        "decoder_config": _decoder(
            num_layers=2,
            embed_dim=64,
            ff_dim=64,
            att_heads=8,
            att_groups=1,
            stm_size=8,
            self_att_type="mqa",
            cross_att_type="sqa",
            cross_att_groups=2,
            cross_att_query_groups=4,
        ),
        "encoder_config": _encoder(
            num_layers=2, embed_dim=64, ff_dim=64, att_heads=8, att_groups=1, stm_size=8, self_att_type="mqa"
        ),
        "memory_attention_config": _memory(
            num_layers=2,
            embed_dim=64,
            att_heads=8,
            stm_size=8,
            att_type="mqa",
            self_att_type="mha",
            use_gate_for_self_attention=False,
            norm_type="positional",
            norm_per_dim_scale=True,
            use_gated_residual=True,
            residual_gate_type="linear",
            residual_gate_slot_status_type="linear",
            use_tanh_residual_gate=True,
            residual_per_slot_gate=False,
        ),
    },
}

ALL_CONFIG_NAMES: tuple[str, ...] = tuple(PARITY_CONFIGS) + tuple(PER_COMPONENT_CONFIGS)

MEMORY_ATTENTION_CLASSES = (
    "RxTSimpleMemoryAttention",
    "RxTSelfMemoryAttention",
    "RxTInterlayerMemoryAttention",
    "RxTSelfInterlayerMemoryAttention",
    "RxTGroupedSelfInterlayerMemoryAttention",
)


def config_for(name: str) -> dict[str, Any]:
    """A deep copy of one configuration (combined or per-component) by name."""
    if name in PARITY_CONFIGS:
        return copy.deepcopy(PARITY_CONFIGS[name])
    if name in PER_COMPONENT_CONFIGS:
        return copy.deepcopy(PER_COMPONENT_CONFIGS[name])
    raise KeyError(f"unknown rxlm reference config {name!r}; expected one of {ALL_CONFIG_NAMES}")


# ---------------------------------------------------------------------------------------------------
# Model construction
# ---------------------------------------------------------------------------------------------------


def _rxlm_models():
    """rxlm's model module, imported on first use only."""
    from rxlm.rxt import models

    return models


class ComponentRxT(nn.Module):
    """Decoder, encoder and memory attention built as separate rxlm components and wired the way
    rxlm's training wires them (shared embedding, shared STM), for the per-component layout.
    Exposes the same `.decoder` / `.encoder` / `.memory_attention` attributes as RxTAlpha."""

    def __init__(self, decoder: nn.Module, encoder: nn.Module, memory_attention: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder
        self.memory_attention = memory_attention
        self.share_components()

    def share_components(self) -> None:
        self.decoder.load_shared_embedding(self.encoder.model.embedding)
        self.decoder.load_shared_memory(self.memory_attention.model.stm)


def _construct(name: str) -> nn.Module:
    cfg = config_for(name)
    models = _rxlm_models()
    if name in PARITY_CONFIGS:
        cls = getattr(models, cfg["model_class"])
        model = cls(
            decoder_config=cfg["decoder_config"],
            encoder_config=cfg["encoder_config"],
            memory_attention_config=cfg["memory_attention_config"],
            tokenizer_config=tokenizer_config(cfg["model_class"]),
            memory_attention_variant=cfg["memory_attention_variant"],
        )
        # What a user does before inference. Pitfall: it re-registers the STM as fresh N(0,1) noise.
        model.share_components()
        return model
    mem_cls = getattr(models, cfg["memory_attention_class"])
    return ComponentRxT(
        models.RxTDecoder(**cfg["decoder_config"]),
        models.RxTEncoder(**cfg["encoder_config"]),
        mem_cls(**cfg["memory_attention_config"]),
    )


def _is_skipped(qualified_name: str) -> bool:
    """RoPE tables stay as computed; the STM is data, set separately."""
    return ".rope." in qualified_name or qualified_name.endswith("stm.memory")


def _normal(shape: torch.Size, std: float, gen: torch.Generator, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen) * std + mean


def _value_for(
    module: nn.Module, leaf: str, t: torch.Tensor, gen: torch.Generator, gate_linears: set[int]
) -> torch.Tensor:
    """A seeded random value of sensible scale for one parameter or persistent buffer.

    `gate_linears` holds the ids of the `Linear(S, S|1)` gates of 'linear' residual gates fed by slot
    means: that input is small, so they get a larger gain and bias than other linears."""
    kind = type(module).__name__
    shape = t.shape
    if isinstance(module, nn.Embedding):
        return _normal(shape, 1.0, gen)
    if isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
        return _normal(shape, 0.25, gen, 1.0) if leaf == "weight" else _normal(shape, 0.1, gen)
    if kind == "ResidualGate" and leaf == "gate":
        if module.gate_type == "static":
            return _normal(shape, 1.5, gen)
        # elementwise: the parameter multiplies a mean of (old + new) over D (per slot) or over S*D (one
        # scalar), which is small for an N(0, 1) STM; scale it up so the gate does not sit at its midpoint
        return _normal(shape, 3.0 if module.per_slot_gate else 12.0, gen)
    if kind in {
        "MemoryLayerNorm",
        "SimpleRMSMemoryNorm",
        "AdaptiveRMSMemoryNorm",
        "AdaptivePositionalMemoryNorm",
    }:
        if leaf == "scale":
            return _normal(shape, 0.25, gen, 1.0)
        if leaf == "gate":
            return _normal(shape, 1.0, gen)
        if leaf == "ema_rms":
            return torch.rand(shape, generator=gen) * 1.5 + 0.5
    if isinstance(module, nn.Linear):
        fan_in = module.in_features
        is_gate = id(module) in gate_linears
        if leaf == "bias":
            return _normal(shape, 0.5 if is_gate else 0.1, gen)
        return _normal(shape, (4.0 if is_gate else 1.0) / fan_in**0.5, gen)
    if kind.startswith("Vectorized") and "MoeFeedForward" in kind:
        if leaf in {"w1", "shared_w1", "w2", "shared_w2"}:
            return _normal(shape, 1.0 / shape[-2] ** 0.5, gen)  # [E, in, out]: scale by fan-in
        if leaf in {"b1", "b2", "shared_b1", "shared_b2", "global_bias", "shared_experts_bias"}:
            return _normal(shape, 0.1, gen)
    raise ValueError(f"no random-init rule for {kind}.{leaf} {tuple(shape)}; extend _value_for")


def randomize_(model: nn.Module, seed: int) -> None:
    """Overwrite every parameter and persistent buffer (RoPE tables and STM excepted) with seeded
    random values, so biases, gates, norms and EMA statistics are all non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    gate_linears = {
        id(m.gate)
        for m in model.modules()
        if type(m).__name__ == "ResidualGate"
        and isinstance(m.gate, nn.Linear)
        and m.slot_status_type == "mean"  # a linear slot status is not small: no extra gain there
    }
    done: set[int] = set()
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            own = list(module.named_parameters(recurse=False))
            own += [
                (n, b)
                for n, b in module.named_buffers(recurse=False)
                if n not in module._non_persistent_buffers_set
            ]
            for leaf, t in own:
                qualified = f"{mod_name}.{leaf}" if mod_name else leaf
                if _is_skipped(qualified) or id(t) in done:
                    continue
                t.copy_(_value_for(module, leaf, t, gen, gate_linears).to(t.dtype))
                done.add(id(t))
    missing = [n for n, t in _persistent_state(model).items() if not _is_skipped(n) and id(t) not in done]
    if missing:
        raise AssertionError(f"tensors left at rxlm's init: {missing}")


def _persistent_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers by name, aliases included (what state_dict holds)."""
    return dict(model.state_dict(keep_vars=True))


def build_rxlm_model(name: str, seed: int = 0) -> nn.Module:
    """An rxlm model for one config, every weight seeded-random, STM set to seeded N(0, 1), eval mode.

    Combined configs give RxTAlpha / RxTBeta after `share_components()` (decoder and encoder share the
    encoder's embedding; decoder and memory attention share one STM); per-component configs give a
    `ComponentRxT` wired the same way.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _construct(name)
    randomize_(model, seed)
    stm_module = model.memory_attention.model.stm
    gen = torch.Generator().manual_seed(seed + 7919)
    stm_module.update_all(torch.randn(stm_module.memory.shape, generator=gen))
    model.eval()
    return model


def stm_shape(model: nn.Module) -> tuple[int, int, int, int]:
    """`(L, 1, S, D)` of the model's STM."""
    return tuple(model.memory_attention.model.stm.memory.shape)  # type: ignore[return-value]


def random_stm(model: nn.Module, seed: int) -> torch.Tensor:
    """A seeded N(0, 1) STM of the model's shape (rxlm's 'standard' STM init distribution)."""
    return torch.randn(stm_shape(model), generator=torch.Generator().manual_seed(seed))


def random_token_ids(n: int, seed: int) -> list[int]:
    """n plain (non-special) token ids."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_PLAIN_TOKEN, VOCAB_SIZE, (n,), generator=gen).tolist()


def make_prompt(query_ids: Sequence[int]) -> list[int]:
    """Decoder prompt `[BOS][Q] query [A]` (what interact() feeds after appending [A])."""
    return [TOKEN_IDS["bos_token_id"], TOKEN_IDS["query_token_id"], *query_ids, TOKEN_IDS["answer_token_id"]]


def make_interaction(query_ids: Sequence[int], answer_ids: Sequence[int]) -> list[int]:
    """Encoder input `[BOS][Q] query [A] answer [EOS]`."""
    return [*make_prompt(query_ids), *answer_ids, TOKEN_IDS["eos_token_id"]]


# ---------------------------------------------------------------------------------------------------
# Saving and loading (rxlm's own save_pretrained / from_pretrained)
# ---------------------------------------------------------------------------------------------------

COMPONENT_DIRS = ("decoder", "encoder", "memory_attention")


def save_rxlm_checkpoint(model: nn.Module, directory: str | Path) -> Path:
    """Save with rxlm's own `save_pretrained`: one `config.json` + `model.safetensors` for RxTAlpha /
    RxTBeta; `decoder/`, `encoder/`, `memory_attention/` (each its own pair) for a ComponentRxT."""
    directory = Path(directory)
    if isinstance(model, ComponentRxT):
        for sub in COMPONENT_DIRS:
            getattr(model, sub).save_pretrained(directory / sub)
    else:
        model.save_pretrained(directory)
    return directory


def _safetensors_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def memory_attention_class_for(directory: str | Path) -> str:
    """Which rxlm memory-attention class wrote a per-component `memory_attention/` directory.

    The class name is not stored. Memory-attention classes have explicit signatures, so their
    config.json holds every argument (defaults included): `disable_residual` only on the simple one,
    `self_att_type` only on the self one, `num_groups` only on the grouped one. Interlayer and
    self-interlayer have identical configs; only self-interlayer has `interlayer_gate_layers` weights.
    """
    directory = Path(directory)
    cfg = json.loads((directory / "config.json").read_text())
    if "disable_residual" in cfg:
        return "RxTSimpleMemoryAttention"
    if "self_att_type" in cfg:
        return "RxTSelfMemoryAttention"
    if "num_groups" in cfg:
        return "RxTGroupedSelfInterlayerMemoryAttention"
    keys = _safetensors_keys(directory / "model.safetensors")
    if any(k.startswith("model.interlayer_gate_layers.") for k in keys):
        return "RxTSelfInterlayerMemoryAttention"
    return "RxTInterlayerMemoryAttention"


def load_rxlm_checkpoint(directory: str | Path) -> nn.Module:
    """Reload a checkpoint written by `save_rxlm_checkpoint` through rxlm's `from_pretrained`.

    Combined layout: `from_pretrained` loads non-strictly, and the file lacks the aliased encoder
    embedding, so the encoder keeps a random one; the decoder's (saved) embedding is copied over before
    `share_components()`, and the saved STM is restored after it (sharing resets the STM).
    Raises if any tensor of the rebuilt model is neither in the file nor an alias of one that is.
    """
    directory = Path(directory)
    models = _rxlm_models()
    if (directory / "decoder").is_dir():
        mem_cls = getattr(models, memory_attention_class_for(directory / "memory_attention"))
        loaded = {}
        for sub, cls in zip(COMPONENT_DIRS, (models.RxTDecoder, models.RxTEncoder, mem_cls), strict=True):
            loaded[sub] = cls.from_pretrained(str(directory / sub))
            _check_all_loaded(loaded[sub], _safetensors_keys(directory / sub / "model.safetensors"))
        model = ComponentRxT(**loaded)
        model.eval()
        return model
    cfg = json.loads((directory / "config.json").read_text())
    cls = models.RxTBeta if "think_token_id" in cfg.get("tokenizer_config", {}) else models.RxTAlpha
    model = cls.from_pretrained(str(directory))
    with torch.no_grad():
        model.encoder.model.embedding.weight.copy_(model.decoder.model.embedding.weight)
    saved_stm = model.decoder.model.stm.memory.detach().clone()  # 'decoder.model.stm.memory' in the file
    model.share_components()
    model.load_stm_state(saved_stm)
    model.eval()
    _check_all_loaded(model, _safetensors_keys(directory / "model.safetensors"))
    return model


def _check_all_loaded(model: nn.Module, file_keys: set[str]) -> None:
    state = _persistent_state(model)
    stored = {state[k].data_ptr() for k in file_keys if k in state}
    orphans = [k for k, t in state.items() if k not in file_keys and t.data_ptr() not in stored]
    if orphans:
        raise AssertionError(f"tensors neither saved nor aliased to a saved one: {orphans}")


# ---------------------------------------------------------------------------------------------------
# Reference computations (model dtype, no grad, explicit STM)
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch single-threaded: these models are tiny, and on a shared 2-core machine torch's
    thread pool makes them 10-50x slower and erratic under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ids(token_ids: Sequence[int] | torch.Tensor, field: str) -> torch.Tensor:
    t = torch.as_tensor(token_ids, dtype=torch.long)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.size(0) != 1 or t.size(1) == 0:
        raise ValueError(
            f"{field} must be a non-empty 1-D id sequence or a [1, T] tensor, got shape {tuple(t.shape)}"
        )
    return t


def _check_fits(component: nn.Module, ids: torch.Tensor, field: str) -> None:
    """rxlm silently grows a component's RoPE table (a saved buffer) past `seq_len`; refuse instead, so
    a reference run never changes the model it is checking."""
    limit = component.model.layers[0].attention.rope.max_seq_len
    if ids.size(1) > limit:
        raise ValueError(f"{field} has {ids.size(1)} tokens, more than the model's seq_len {limit}")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype the model computes in (fp32 unless a test converted it, e.g. to fp64)."""
    return model.decoder.model.embedding.weight.dtype


def load_stm(model: nn.Module, stm: torch.Tensor) -> None:
    """Put a `[L, 1, S, D]` STM into the model (rxlm's `load_stm_state` where the model has it).

    The decoder reads the STM through the module it shares with the memory attention; if it holds a
    separate one (components never shared) that one is set as well.
    """
    expected = stm_shape(model)
    if tuple(stm.shape) != expected:
        raise ValueError(f"stm must have shape {expected} ([L, 1, S, D]), got {tuple(stm.shape)}")
    value = stm.detach().to(model_dtype(model)).clone()
    if hasattr(model, "load_stm_state"):
        model.load_stm_state(value)
    else:
        model.memory_attention.model.stm.update_all(value)
    if model.decoder.model.stm is not model.memory_attention.model.stm:
        model.decoder.model.stm.update_all(value.clone())


def reset_attention_caches(model: nn.Module) -> None:
    """Drop every self-attention KV cache. rxlm's `reset_self_attn_cache()` skips the final memory-free
    layers, so after one cached generation their stale cache would leak into the next."""
    for module in model.modules():
        if hasattr(module, "reset_inner_cache"):
            module.reset_inner_cache()


@torch.no_grad()
@one_thread()
def ref_prefill_logits(
    model: nn.Module, stm: torch.Tensor, prompt_ids: Sequence[int] | torch.Tensor, cached: bool = False
) -> torch.Tensor:
    """Decoder logits `[T, V]` for every prompt position.

    `cached=False`: one plain forward (no caches, no mask). `cached=True`: rxlm's generation prefill,
    i.e. the STM K/V pre-cache from `prepare_stm_kv_cache()` plus `use_self_attn_cache=True` (which
    requires an attention mask).
    """
    ids = _ids(prompt_ids, "prompt_ids")
    _check_fits(model.decoder, ids, "prompt_ids")
    load_stm(model, stm)
    reset_attention_caches(model)
    decoder = model.decoder.model
    if cached:
        kv = decoder.prepare_stm_kv_cache()
        logits = decoder(ids, attention_mask=torch.ones_like(ids), stm_kv_cache=kv, use_self_attn_cache=True)
        reset_attention_caches(model)
    else:
        logits = decoder(ids)
    return logits[0]


@torch.no_grad()
@one_thread()
def ref_decode_logits(
    model: nn.Module, stm: torch.Tensor, prompt_ids: Sequence[int] | torch.Tensor, steps: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy generation through rxlm's cached path, step by step as `interact()` drives it.

    `prompt_ids` is the full decoder prompt (`make_prompt`: it already ends with [A]). Step 0 runs the
    prompt with the STM K/V pre-cache and the self-attention cache; each later step feeds the last
    token alone with `current_positions=[[len - 1]]`. Returns (`[steps, V]` logits of each step,
    `[steps]` argmax ids). EOS does not stop it: exactly `steps` tokens are produced.
    """
    ids = _ids(prompt_ids, "prompt_ids")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    limit = model.decoder.model.layers[0].attention.rope.max_seq_len
    if ids.size(1) + steps - 1 > limit:
        raise ValueError(f"prompt length {ids.size(1)} + steps {steps} exceeds the decoder's seq_len {limit}")
    load_stm(model, stm)
    reset_attention_caches(model)
    decoder = model.decoder.model
    kv = decoder.prepare_stm_kv_cache()
    mask = torch.ones_like(ids)
    all_logits, tokens = [], []
    for step in range(steps):
        if step == 0:
            out = decoder(ids, attention_mask=mask, stm_kv_cache=kv, use_self_attn_cache=True)
        else:
            positions = torch.tensor([[ids.size(1) - 1]])
            out = decoder(
                ids[:, -1:],
                attention_mask=mask[:, -1:],
                stm_kv_cache=kv,
                use_self_attn_cache=True,
                current_positions=positions,
            )
        step_logits = out[0, -1]
        token = int(step_logits.argmax())
        all_logits.append(step_logits)
        tokens.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], dim=1)
    reset_attention_caches(model)
    return torch.stack(all_logits), torch.tensor(tokens, dtype=torch.long)


@torch.no_grad()
@one_thread()
def ref_encoder_hidden(
    model: nn.Module, ids: Sequence[int] | torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Encoder hidden state of every layer, `[L, 1, T, D]` (what memory layer i writes from)."""
    ids = _ids(ids, "ids")
    _check_fits(model.encoder, ids, "ids")
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    _, hidden = model.encoder(ids, attention_mask=mask)
    return hidden


@torch.no_grad()
@one_thread()
def ref_memory_update(
    model: nn.Module,
    stm: torch.Tensor,
    interaction_ids: Sequence[int] | torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """New STM `[L, 1, S, D]` after encoder + memory attention over the full interaction
    (`make_interaction`), attention mask of ones unless given. Leaves the new STM in the model."""
    ids = _ids(interaction_ids, "interaction_ids")
    _check_fits(model.encoder, ids, "interaction_ids")
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    load_stm(model, stm)
    _, hidden = model.encoder(ids, attention_mask=mask)
    new_stm = model.memory_attention(hidden, attention_mask=mask)
    return new_stm.detach().clone()
