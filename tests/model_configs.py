"""Small random-weight canonical configurations used across tests (native format, no rxlm needed)."""

from __future__ import annotations

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

SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "query": 3, "answer": 4}


def tiny_config(
    *,
    dim: int = 32,
    layers: int = 2,
    heads: int = 4,
    q_heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 97,
    slots: int = 8,
    moe: bool = False,
    variant: str = "self-interlayer",
    stateless: int = 0,
    max_seq_len: int = 64,
) -> RxTConfig:
    hd = dim // heads
    attn = AttentionConfig(q_heads=q_heads, kv_heads=kv_heads, head_dim=hd)
    dense = FeedForwardConfig(hidden_dim=dim * 2)
    ffn = (
        FeedForwardConfig(hidden_dim=dim, num_experts=4, top_k=2, num_shared_experts=1, shared_hidden_dim=dim)
        if moe
        else dense
    )
    mem_block = BlockConfig(self_attn=attn, ffn=ffn, cross_attn=AttentionConfig(q_heads, kv_heads, hd))
    plain = BlockConfig(self_attn=attn, ffn=dense)
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
        encoder=EncoderConfig(layers=[plain] * layers, max_seq_len=max_seq_len),
        memory=MemoryAttentionConfig(
            variant=variant,
            num_layers=layers,
            attn=AttentionConfig(heads, heads, hd),
            aux_attn=None if variant == "simple" else AttentionConfig(heads, heads, hd),
            norm=MemoryNormConfig("classic-rms"),
            residual_gate=gate,
            aux_residual_gate=gate,
            mix_gate=gate,
            num_groups=2 if variant == "grouped-self-interlayer" else 1,
        ),
        special_tokens=dict(SPECIAL),
    )
