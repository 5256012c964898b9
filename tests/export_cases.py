"""Random-weight checkpoints for the export and runtime tests: native configurations and rxlm-saved ones.

A case is written as a checkpoint directory (the way a user has one: config + safetensors + tokenizer.json),
then loaded back with `load_checkpoint`, so export and verify always start from what is on disk.

Weights are scaled so greedy answers vary from token to token and from turn to turn (an N(0, 0.02) init gives
one repeated token, which would make token equality a weak check): embeddings N(0, 1), projections
N(0, 1/fan_in), norm weights around 1, biases and gate parameters of order 0.1-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from model_configs import tiny_config
from tiny_tokenizer import write_tokenizer

VOCAB = 300  # matches the tiny byte-level BPE tokenizer, so verify's text queries keep all their tokens


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # "native" | "rxlm"
    options: dict[str, Any] = field(default_factory=dict)  # tiny_config kwargs, or {"config": rxlm name}
    precision: str = "fp32"
    seed: int = 0
    kv_cache: str = "auto"  # the decoder's cache layout (auto: static wherever the attention allows it)


CASES = {
    c.name: c
    for c in (
        # MoE decoder layers, memory-free layers before/after (+ head norm), reverse SQA (fewer query heads
        # than K/V heads: queries tiled), grouped-self-interlayer memory attention
        Case(
            "moe_stateless_revsqa",
            "native",
            dict(moe=True, stateless=1, heads=4, q_heads=2, kv_heads=4, variant="grouped-self-interlayer"),
        ),
        # head dim 16: the static KV cache (the others have head dim 8: dynamic)
        Case("simple", "native", dict(variant="simple", layers=3, heads=2, q_heads=2, kv_heads=1), seed=1),
        Case("self", "native", dict(variant="self"), seed=2),
        Case("interlayer", "native", dict(variant="interlayer", q_heads=4, kv_heads=4), seed=3),
        Case("self_interlayer_fp16", "native", dict(variant="self-interlayer"), precision="fp16", seed=4),
        Case("rxlm_alpha_sqa_moe", "rxlm", dict(config="alpha_sqa_moe_shared2"), seed=5),
        Case("rxlm_beta_like", "rxlm", dict(config="beta_like"), seed=6),
        Case("rxlm_comp_self", "rxlm", dict(config="comp_self"), seed=7),  # per-component layout
    )
}


def randomize_native_(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights of a useful scale for every parameter and the initial STM of a canonical model."""
    gen = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("embed.weight"):
                p.copy_(normal(p, 1.0))
            elif leaf == "gate":
                p.copy_(normal(p, 1.5))
            elif p.dim() >= 2:  # Linear [out, in] and experts [E, in, out]: fan-in is dim 1 for both
                p.copy_(normal(p, p.shape[1] ** -0.5))
            elif leaf == "weight":  # norms
                p.copy_(normal(p, 0.1, 1.0))
            else:  # biases
                p.copy_(normal(p, 0.1))
        model.initial_stm.copy_(normal(model.initial_stm, 1.0))


def write_checkpoint(case: Case, directory: Path) -> Path:
    """Write the case's checkpoint (weights + config + tokenizer.json) into `directory`."""
    if case.source == "native":
        from rxt_edge.export.checkpoints import save_native
        from rxt_edge.export.model import RxTModel

        model = RxTModel(tiny_config(vocab=VOCAB, **case.options)).eval()
        randomize_native_(model, case.seed)
        save_native(model, directory)
    else:
        import rxlm_reference as ref

        ref.save_rxlm_checkpoint(ref.build_rxlm_model(case.options["config"], seed=case.seed), directory)
    write_tokenizer(directory / "tokenizer.json", vocab_size=VOCAB)
    return directory


@dataclass
class Exported:
    """A checkpoint on disk, its package, and the canonical model read back from the checkpoint (fp32)."""

    case: Case
    checkpoint: Path
    package: Path
    model: Any  # RxTModel
