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
    RxTConfig,
)
from .model import RxTModel

SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "query": 3, "answer": 4}


def _build(
    *,
    dim: int,
    layers: int,
    heads: int,
    q_heads: int,
    kv_heads: int,
    ff: int,
    vocab: int,
    slots: int,
    experts: int = 0,
    top_k: int = 1,
    shared: int = 0,
    stateless: int = 0,
    max_seq_len: int = 1024,
    variant: str = "self-interlayer",
    gated_attention: bool = False,
    enc_ff: int | None = None,
) -> RxTConfig:
    hd = dim // heads
    attn = AttentionConfig(q_heads, kv_heads, hd, gated=gated_attention)
    dense = FeedForwardConfig(hidden_dim=enc_ff or ff)
    ffn = (
        FeedForwardConfig(
            hidden_dim=ff, num_experts=experts, top_k=top_k, num_shared_experts=shared, shared_hidden_dim=ff
        )
        if experts
        else FeedForwardConfig(hidden_dim=ff)
    )
    mem_block = BlockConfig(self_attn=attn, ffn=ffn, cross_attn=AttentionConfig(q_heads, kv_heads, hd))
    plain = BlockConfig(self_attn=attn, ffn=FeedForwardConfig(hidden_dim=ff))
    gate = GateConfig(mode="elementwise", activation="sigmoid")
    return RxTConfig(
        vocab_size=vocab,
        dim=dim,
        stm_slots=slots,
        decoder=DecoderConfig(
            memory_layers=[mem_block] * layers,
            layers_before=[plain] * stateless,
            layers_after=[plain] * stateless,
            head_norm="rms" if stateless else None,
            max_seq_len=max_seq_len,
        ),
        encoder=EncoderConfig(
            layers=[BlockConfig(self_attn=attn, ffn=dense)] * layers, max_seq_len=max_seq_len
        ),
        memory=MemoryAttentionConfig(
            variant=variant,
            num_layers=layers,
            attn=AttentionConfig(q_heads, kv_heads, hd),
            aux_attn=AttentionConfig(q_heads, kv_heads, hd),
            residual_gate=gate,
            aux_residual_gate=gate,
            mix_gate=gate,
            num_groups=max(1, layers // 4) if variant == "grouped-self-interlayer" else 1,
        ),
        special_tokens=dict(SPECIAL),
    )


PRESETS = {
    # ~26M: 6 memory layers, STM 6 x 256 slots x 256 dim
    "alpha-micro": lambda: _build(
        dim=256, layers=6, heads=16, q_heads=8, kv_heads=4, ff=1408, vocab=20000, slots=256
    ),
    # ~100M: 8 memory layers, STM 8 x 1024 slots x 512 dim
    "alpha-mini": lambda: _build(
        dim=512, layers=8, heads=16, q_heads=8, kv_heads=4, ff=2304, vocab=32000, slots=1024, enc_ff=1536
    ),
    # ~270M total, MoE with shared experts, memory-free layers, gated attention, grouped-self-interlayer
    "beta-like-moe": lambda: _build(
        dim=512,
        layers=12,
        heads=16,
        q_heads=8,
        kv_heads=4,
        ff=512,
        vocab=32000,
        slots=1024,
        experts=20,
        top_k=4,
        shared=1,
        stateless=1,
        gated_attention=True,
        variant="grouped-self-interlayer",
    ),
    # tiny, for CI
    "tiny": lambda: _build(
        dim=64, layers=2, heads=4, q_heads=4, kv_heads=2, ff=128, vocab=512, slots=16, max_seq_len=128
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
        m = RxTModel(preset_config(name))
        print(f"{name:16s} {param_count(m) / 1e6:8.1f}M params")
