"""Random-weight configurations shaped like the released RxT sizes, for benchmarks and quantization studies.

Parameter counts are printed by `python -m rxt_edge.export.presets`; shapes follow the published STM sizes
(Alpha Micro 6 layers x 256 slots x 128... scaled where the paper gives only totals). Not trained: speed only.
"""

from __future__ import annotations

import torch

from .config import (
    AttentionConfig,
    BlockConfig,
    DecoderConfig,
    EncoderConfig,
    FeedForwardConfig,
    GateConfig,
    MemoryAttentionConfig,
    MemoryNormConfig,
    RxTConfig,
    build_config,
)
from .model import RxTModel

SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "query": 3, "answer": 4}


def _build(**shape) -> RxTConfig:
    return build_config(special_tokens=SPECIAL, **shape)


def _rxt_beta(layers: int, groups: int) -> RxTConfig:
    """RxT-Beta's shapes (its public hub configs: decoder RxT-Beta-Supervised, encoder RxT-Beta-Encoder-SMAT,
    memory attention RxT-Beta-Memory-Attention-SMAT) with `layers` memory layers in `groups` memory groups.

    Decoder: dim 512, SQA 8 query / 4 K/V heads of 32 (self and cross), gated self-attention only, no output
    bias, RoPE 1e5; memory layers and the memory-free layers after them are MoE of 384 SwiGLU experts of 192,
    top-10, with 2 shared experts of 384 (global biases); memory-free layers before: one dense (1536), one MoE.
    Encoder: SQA 8/8 gated attention, dense SwiGLU 1536. Memory: SQA 8/8, classic RMS norm, elementwise
    sigmoid residual gates. STM: `layers` x 4096 slots x 512."""
    dim, hd, rope = 512, 32, 100_000.0
    moe = FeedForwardConfig(
        192,
        num_experts=384,
        top_k=10,
        num_shared_experts=2,
        shared_hidden_dim=384,
        expert_bias="global",
        shared_bias="global",
    )
    self_attn = AttentionConfig(8, 4, hd, gated=True, out_bias=False)
    cross = AttentionConfig(8, 4, hd, out_bias=False)
    moe_block = BlockConfig(self_attn, moe)
    dense_block = BlockConfig(self_attn, FeedForwardConfig(1536, bias=False))
    enc_block = BlockConfig(
        AttentionConfig(8, 8, hd, gated=True, out_bias=False), FeedForwardConfig(1536, bias=False)
    )
    gate = GateConfig(mode="elementwise", activation="sigmoid")
    mem_attn = AttentionConfig(8, 8, hd, out_bias=False)
    return RxTConfig(
        vocab_size=65536,
        dim=dim,
        stm_slots=4096,
        decoder=DecoderConfig(
            memory_layers=[BlockConfig(self_attn, moe, cross_attn=cross)] * layers,
            layers_before=[dense_block, moe_block],
            layers_after=[moe_block, moe_block],
            head_norm="rms",
            rope_base=rope,
            max_seq_len=8192,
        ),
        encoder=EncoderConfig(layers=[enc_block] * layers, rope_base=rope, max_seq_len=8192),
        memory=MemoryAttentionConfig(
            variant="grouped-self-interlayer",
            num_layers=layers,
            attn=mem_attn,
            aux_attn=mem_attn,
            norm=MemoryNormConfig("classic-rms"),
            residual_gate=gate,
            aux_residual_gate=gate,
            mix_gate=gate,
            num_groups=groups,
            rope_base=rope,
        ),
        special_tokens=dict(SPECIAL),
    )


PRESETS = {
    # ~26M: 6 memory layers, STM 6 x 256 slots x 256 dim
    "alpha-micro": lambda: _build(
        dim=256, layers=6, heads=16, q_heads=8, kv_heads=4, ffn=1408, vocab=20000, slots=256
    ),
    # ~100M: 8 memory layers, STM 8 x 1024 slots x 512 dim
    "alpha-mini": lambda: _build(
        dim=512,
        layers=8,
        heads=16,
        q_heads=8,
        kv_heads=4,
        ffn=2304,
        encoder_ffn=1536,
        vocab=32000,
        slots=1024,
    ),
    # ~270M total, MoE with shared experts, memory-free layers, gated attention, grouped-self-interlayer
    "beta-like-moe": lambda: _build(
        dim=512,
        layers=12,
        heads=16,
        q_heads=8,
        kv_heads=4,
        ffn=512,
        vocab=32000,
        slots=1024,
        experts=20,
        top_k=4,
        shared_experts=1,
        stateless=1,
        gated_attention=True,
        variant="grouped-self-interlayer",
        groups=3,  # 12 layers in groups of 4
    ),
    # RxT-Beta at its released shapes: ~2.93B parameters (~0.16B of the decoder active per token), STM 21 x 4096 x 512
    "rxt-beta": lambda: _rxt_beta(layers=21, groups=3),
    # the same per-layer shapes (384 experts, top-10), 3 memory layers in 3 groups: ~0.77B, STM 3 x 4096 x 512
    "rxt-beta-mini": lambda: _rxt_beta(layers=3, groups=3),
    # tiny, for CI
    "tiny": lambda: _build(
        dim=64, layers=2, heads=4, q_heads=4, kv_heads=2, ffn=128, vocab=512, slots=16, max_seq_len=128
    ),
}


def preset_config(name: str) -> RxTConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]()


def random_model(name: str, seed: int = 0, scale: float = 0.02) -> RxTModel:
    """A preset with seeded random weights (norm weights 1, gates 0) and a random initial STM."""
    torch.manual_seed(seed)
    model = RxTModel(preset_config(name)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, scale)
        model.initial_stm.normal_(0.0, 1.0)
    return model


def param_count(model: RxTModel) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


if __name__ == "__main__":
    for name in PRESETS:
        with torch.device("meta"):  # shapes only: rxt-beta would take 12 GB in float32
            m = RxTModel(preset_config(name))
        print(f"{name:16s} {param_count(m) / 1e6:8.1f}M params")
