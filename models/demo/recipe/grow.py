"""Widen a trained demo model's feed-forward layers without changing what it computes (issue 19, stage 11).

The 3.8M-parameter demo learned the generator's phrasings but not the meaning behind them; more feed-forward
width is the cheapest capacity to add (the STM, attention and tokenizer stay as they are, so every tensor the
runtime keeps per conversation is unchanged). Training from scratch again would cost the ~40 GPU-minutes of the
seven earlier stages; growing keeps what they learned.

A gated FFN computes fc2(lin * act(gate)) with fc1's output split into [lin | gate]. Growing hidden H to H' puts
the old rows first in each half, new rows after them (small random, as a fresh layer would get), and fc2's new
columns at zero: the new units' output is multiplied by zero, so the grown model gives the same logits and
memory states, and the gradient reaches the new fc2 columns at once because the new units are active.
"""

from __future__ import annotations

import dataclasses

import torch
from rxt_edge.export.model import RxTModel


def _widened_block(block, hidden: int):
    if block.ffn.num_experts:
        raise ValueError(
            "widen_ffn grows dense feed-forward layers only (this block is a mixture of experts)"
        )
    if not block.ffn.gated:
        raise ValueError("widen_ffn expects gated (SwiGLU) feed-forward layers")
    if hidden < block.ffn.hidden_dim:
        raise ValueError(f"widen_ffn: hidden {hidden} is narrower than the model's {block.ffn.hidden_dim}")
    return dataclasses.replace(block, ffn=dataclasses.replace(block.ffn, hidden_dim=hidden))


def widen_ffn(model: RxTModel, hidden: int, generator: torch.Generator, std: float = 0.02) -> RxTModel:
    """A copy of `model` whose decoder and encoder FFNs have `hidden` units, computing the same function."""
    cfg = model.cfg
    decoder = dataclasses.replace(
        cfg.decoder,
        memory_layers=[_widened_block(b, hidden) for b in cfg.decoder.memory_layers],
        layers_before=[_widened_block(b, hidden) for b in cfg.decoder.layers_before],
        layers_after=[_widened_block(b, hidden) for b in cfg.decoder.layers_after],
    )
    encoder = dataclasses.replace(cfg.encoder, layers=[_widened_block(b, hidden) for b in cfg.encoder.layers])
    grown = RxTModel(dataclasses.replace(cfg, decoder=decoder, encoder=encoder))
    old = model.state_dict()
    new = grown.state_dict()
    for name, value in old.items():
        target = new[name]
        if target.shape == value.shape:
            target.copy_(value)
        elif name.endswith("ffn.fc1.weight") or name.endswith("ffn.fc1.bias"):
            h = value.shape[0] // 2  # [lin | gate] halves of the old layer
            fresh = (
                torch.randn(target.shape, generator=generator) * std
                if value.dim() == 2
                else torch.zeros(target.shape)
            )
            target.copy_(fresh)
            target[:h] = value[:h]
            target[hidden : hidden + h] = value[h:]
        elif name.endswith("ffn.fc2.weight"):
            target.zero_()
            target[:, : value.shape[1]] = value
        else:
            raise ValueError(
                f"widen_ffn: unexpected shape change for {name}: {tuple(value.shape)} -> {tuple(target.shape)}"
            )
    grown.load_state_dict(new)
    return grown
