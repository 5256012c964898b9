"""Torch modules whose flat signatures are exactly the graph contract (rxt_edge/contract.py).

Each wrapper takes and returns tensors in the contract's order, so `torch.onnx.export` can name every input and
output from the contract and nothing else decides the I/O layout.
"""

from __future__ import annotations

import torch
from torch import nn

from rxt_edge import contract
from rxt_edge.contract import ModelDims

from .model import RxTModel


def model_dims(model: RxTModel) -> ModelDims:
    cfg = model.cfg
    sa = cfg.decoder.all_layers[0].self_attn
    ca = cfg.decoder.memory_layers[0].cross_attn
    return ModelDims(
        vocab_size=cfg.vocab_size,
        dim=cfg.dim,
        decoder_layers=len(cfg.decoder.all_layers),
        memory_layers=cfg.memory_layers,
        stm_slots=cfg.stm_slots,
        head_dim=sa.head_dim,
        self_kv_heads=sa.kv_heads,
        cross_kv_heads=ca.kv_heads,
        max_seq_len=cfg.decoder.max_seq_len,
    )


def _interleave(ks: list[torch.Tensor], vs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t for pair in zip(ks, vs, strict=True) for t in pair]


class DecoderGraph(nn.Module):
    """(input_ids, past_key.0, past_value.0, ..., memory_key.0, memory_value.0, ...) -> (logits, new_key.0, ...)."""

    def __init__(self, model: RxTModel):
        super().__init__()
        self.model = model
        self.n = len(model.decoder.blocks)

    def forward(self, input_ids: torch.Tensor, *state: torch.Tensor):
        past, mem = state[: 2 * self.n], state[2 * self.n :]
        logits, nk, nv = self.model.decoder(
            input_ids, list(past[0::2]), list(past[1::2]), list(mem[0::2]), list(mem[1::2])
        )
        return (logits, *_interleave(nk, nv))


class StaticDecoderGraph(nn.Module):
    """(input_ids, seqlens_k, past_key.0, past_value.0, ..., memory_key.0, ...) -> (logits, present_key.0, ...):
    the static-cache decoder (export/cached_attention.py); present_* are past_* with this run's rows written."""

    def __init__(self, model: RxTModel):
        super().__init__()
        self.model = model
        self.n = len(model.decoder.blocks)

    def forward(self, input_ids: torch.Tensor, seqlens_k: torch.Tensor, *state: torch.Tensor):
        cache, mem = state[: 2 * self.n], state[2 * self.n :]
        logits, ks, vs = self.model.decoder.forward_static(
            input_ids, seqlens_k, list(cache[0::2]), list(cache[1::2]), list(mem[0::2]), list(mem[1::2])
        )
        return (logits, *_interleave(ks, vs))


class EncoderGraph(nn.Module):
    def __init__(self, model: RxTModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(input_ids, attention_mask)


class MemoryUpdateGraph(nn.Module):
    """(stm, encoded, attention_mask) -> (new_stm, memory_key.0, memory_value.0, ...): the K/V for the next turn
    come out of the same run, so the decoder never projects the STM per token."""

    def __init__(self, model: RxTModel):
        super().__init__()
        self.model = model

    def forward(self, stm: torch.Tensor, encoded: torch.Tensor, attention_mask: torch.Tensor):
        new_stm = self.model.memory(stm, encoded, attention_mask)
        ks, vs = self.model.memory_kv(new_stm)
        return (new_stm, *_interleave(ks, vs))


class MemoryKVGraph(nn.Module):
    """stm -> (memory_key.0, memory_value.0, ...): for a fresh, restored or user-given STM."""

    def __init__(self, model: RxTModel):
        super().__init__()
        self.model = model

    def forward(self, stm: torch.Tensor):
        ks, vs = self.model.memory_kv(stm)
        return tuple(_interleave(ks, vs))


WRAPPERS = {
    contract.DECODER: DecoderGraph,
    contract.ENCODER: EncoderGraph,
    contract.MEMORY_UPDATE: MemoryUpdateGraph,
    contract.MEMORY_KV: MemoryKVGraph,
}

# Example sizes for tracing: never 0 or 1 for a dynamic dimension (the exporter would freeze it).
EXAMPLE_SIZES = {"batch": 2, "seq": 3, "past_seq": 5}


def wrapper(model: RxTModel, graph: str, kv_cache: str = "dynamic") -> nn.Module:
    """The module whose signature is `graph`'s contract (the decoder's for its `kv_cache` layout)."""
    if graph == contract.DECODER and kv_cache == "static":
        return StaticDecoderGraph(model)
    return WRAPPERS[graph](model)


def example_inputs(
    dims: ModelDims, graph: str, dtype: torch.dtype, kv_cache: str = "dynamic"
) -> tuple[torch.Tensor, ...]:
    ins, _ = contract.graph_io(dims, graph, kv_cache=kv_cache)
    out = []
    for spec in ins:
        shape = [EXAMPLE_SIZES[s] if isinstance(s, str) else s for s in spec.shape]
        if spec.name == "input_ids":
            out.append(torch.randint(0, dims.vocab_size, shape))
        elif spec.name == contract.SEQLENS:  # a prompt of `seq` tokens after a few cached ones
            out.append(torch.full(shape, EXAMPLE_SIZES["seq"] + 1, dtype=torch.int32))
        elif spec.name == "attention_mask":
            out.append(torch.ones(shape, dtype=torch.int64))
        else:
            out.append(torch.randn(shape, dtype=dtype))
    return tuple(out)
