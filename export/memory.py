"""Memory attention: how a finished interaction is written into the STM (one call per turn).

Per STM layer i: an optional pre-step over the slots (self-attention, attention to the mean of all layers, or a
gated mix of both), then the core write Attn(q=norm(STM[i]), k=v=norm(ED[i])) with RoPE on the keys only,
then a residual gate between the old and the new layer state.
"""

from __future__ import annotations

import torch
from torch import nn

from . import turn_attention
from .config import GateConfig, MemoryAttentionConfig, MemoryNormConfig
from .layers import (
    Attention,
    RMSNorm,
    activation,
    apply_rope,
    padding_bias,
    rope_angles,
)

MEMORY_NORM_EPS = 1e-6


class MemoryNorm(nn.Module):
    """Normalisation of an STM layer [B, S, D] before attention (the reference's five kinds, inference form)."""

    def __init__(self, cfg: MemoryNormConfig, dim: int, slots: int):
        super().__init__()
        self.kind = cfg.kind
        if cfg.kind == "classic-rms":
            self.norm = RMSNorm(dim)
            return
        if cfg.kind == "layer":
            self.norm = nn.LayerNorm(dim)
        scale_shape = (dim,) if cfg.kind != "positional" or cfg.per_dim_scale else (slots, 1)
        self.scale = nn.Parameter(torch.ones(scale_shape))
        self.gate = nn.Parameter(torch.zeros((slots, 1) if cfg.kind == "positional" else (1,)))
        if cfg.kind == "positional":  # inference normalises by the running RMS learned in training
            self.register_buffer("ema_rms", torch.ones(slots, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "classic-rms":
            return self.norm(x)
        if self.kind == "layer":
            y = self.norm(x)
        elif self.kind == "positional":
            y = x * torch.rsqrt(self.ema_rms + MEMORY_NORM_EPS)
        else:  # "rms" and "adaptive": x / sqrt(rms + eps), rms per slot
            rms = x.pow(2).mean(-1, keepdim=True).sqrt()
            y = x * torch.rsqrt(rms + MEMORY_NORM_EPS)
        y = y * self.scale
        g = torch.sigmoid(self.gate)
        return g * y + (1 - g) * x


class ResidualGate(nn.Module):
    """Combines old and new STM layer state; see GateConfig."""

    def __init__(self, cfg: GateConfig, dim: int, slots: int):
        super().__init__()
        self.cfg = cfg
        self.gate = self.gate_linear = self.slot_status = None
        if cfg.mode == "linear":
            self.gate_linear = nn.Linear(slots, slots if cfg.per_slot else 1)
        elif cfg.mode in ("static", "elementwise"):
            self.gate = nn.Parameter(torch.zeros((slots, 1) if cfg.per_slot else (1,)))
        if cfg.mode in ("linear", "elementwise") and cfg.slot_status == "linear":
            self.slot_status = nn.Linear(dim, 1)

    def _status(self, s: torch.Tensor) -> torch.Tensor:
        if self.cfg.mode == "linear":  # -> [B, S]
            return self.slot_status(s).squeeze(-1) if self.slot_status is not None else s.mean(-1)
        if self.cfg.per_slot and self.slot_status is not None:  # -> [B, S, 1]
            return self.slot_status(s)
        return s.mean(-1, keepdim=True) if self.cfg.per_slot else s.mean(dim=(1, 2), keepdim=True)

    def forward(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        mode = self.cfg.mode
        if mode == "replace":
            return new
        if mode == "add":
            return new + old
        act = activation(self.cfg.activation)
        if mode == "static":
            g = act(self.gate)
        elif mode == "elementwise":
            g = act(self.gate * self._status(new + old))
        else:
            g = act(self.gate_linear(self._status(new + old))).unsqueeze(-1)
        if self.cfg.activation == "tanh":
            return (1 + g) * new + (1 - g) * old
        return g * new + (1 - g) * old


class MemoryAttention(nn.Module):
    """STM_new = f(STM_old, ED) for all layers; ED is the encoder's per-layer hidden state of the interaction."""

    def __init__(self, cfg: MemoryAttentionConfig, dim: int, slots: int):
        super().__init__()
        self.cfg = cfg
        n = cfg.num_layers
        self.stm_norms = nn.ModuleList(MemoryNorm(cfg.norm, dim, slots) for _ in range(n))
        self.input_norms = nn.ModuleList(RMSNorm(dim) for _ in range(n))
        self.attn = nn.ModuleList(Attention(cfg.attn, dim) for _ in range(n))
        self.gates = nn.ModuleList(ResidualGate(cfg.residual_gate, dim, slots) for _ in range(n))
        if cfg.variant != "simple":
            self.aux_norms = nn.ModuleList(MemoryNorm(cfg.norm, dim, slots) for _ in range(n))
            self.aux_attn = nn.ModuleList(Attention(cfg.aux_attn, dim) for _ in range(n))
            self.aux_gates = nn.ModuleList(ResidualGate(cfg.aux_residual_gate, dim, slots) for _ in range(n))
        if cfg.variant in ("interlayer", "self-interlayer", "grouped-self-interlayer"):
            self.mean_norm = MemoryNorm(cfg.norm, dim, slots)
        if cfg.variant in ("self-interlayer", "grouped-self-interlayer"):
            self.mix_gates = nn.ModuleList(ResidualGate(cfg.mix_gate, dim, slots) for _ in range(n))

    def _layer_means(self, stm: torch.Tensor) -> list[torch.Tensor]:
        """Normalised mean STM each layer attends to in the interlayer variants, indexed by layer."""
        n = self.cfg.num_layers
        if self.cfg.variant == "grouped-self-interlayer":
            groups = [self.mean_norm(g.mean(dim=0)) for g in stm.chunk(self.cfg.num_groups, dim=0)]
            per_group = n // self.cfg.num_groups
            return [groups[i // per_group] for i in range(n)]
        mean = self.mean_norm(stm.mean(dim=0))
        return [mean] * n

    def _pre_step(self, i: int, layer: torch.Tensor, means: list[torch.Tensor] | None) -> torch.Tensor:
        variant = self.cfg.variant
        if variant == "simple":
            return layer
        pre = self.aux_norms[i](layer)
        if variant == "self":
            source = pre
        elif variant == "interlayer":
            source = means[i]
        else:
            source = self.mix_gates[i](pre, means[i])
        attn = self.aux_attn[i]
        k, v = attn.keys_values(source)
        update = turn_attention.attend(attn, attn.queries(pre), k, v, None, None, pre)
        return self.aux_gates[i](layer, update)

    def forward(self, stm: torch.Tensor, encoded: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """stm [L, B, S, D], encoded [L, B, T, D], attention_mask [B, T] -> new stm [L, B, S, D]."""
        t = encoded.shape[2]
        positions = torch.arange(t, device=encoded.device)
        cos, sin = rope_angles(positions, self.cfg.attn.head_dim, self.cfg.rope_base, encoded.dtype)
        bias = padding_bias(attention_mask, stm.dtype)
        means = self._layer_means(stm) if self.cfg.variant not in ("simple", "self") else None
        new_layers = []
        for i in range(self.cfg.num_layers):
            layer = self._pre_step(i, stm[i], means)
            data = self.input_norms[i](encoded[i])
            q_in = self.stm_norms[i](layer)
            attn = self.attn[i]
            k, v = attn.keys_values(data)
            k = apply_rope(k, cos, sin)  # RoPE on the keys only (token positions of ED)
            update = turn_attention.attend(attn, attn.queries(q_in), k, v, bias, attention_mask, q_in)
            new_layers.append(self.gates[i](layer, update))
        return torch.stack(new_layers, dim=0)
