"""Small random-weight canonical configurations used across tests (native format, no rxlm needed)."""

from __future__ import annotations

from rxt_edge.export.config import RxTConfig, build_config

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
    """Dense layers of 2*dim; `moe`: 4 experts of dim (top 2, one shared); memory attention with `heads`
    query and K/V heads whatever the decoder's GQA; grouped memory in 2 groups."""
    return build_config(
        vocab=vocab,
        dim=dim,
        layers=layers,
        heads=heads,
        q_heads=q_heads,
        kv_heads=kv_heads,
        ffn=dim * 2,
        slots=slots,
        special_tokens=SPECIAL,
        experts=4 if moe else 0,
        top_k=2,
        shared_experts=1,
        expert_ffn=dim,
        stateless=stateless,
        variant=variant,
        memory_heads=(heads, heads),
        groups=2 if variant == "grouped-self-interlayer" else 1,
        max_seq_len=max_seq_len,
    )
