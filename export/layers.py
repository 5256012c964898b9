"""Building blocks of the canonical RxT model, written to export cleanly to ONNX.

No hidden state, no data-dependent Python control flow: every shape decision is made from the config at
construction time, so one traced graph serves any number of tokens. Numerics follow the reference
implementation: RMSNorm with the machine epsilon of its compute dtype (float32: ~1.19e-7, not 1e-6),
interleaved (GPT-J style) RoPE with angles formed in float32, SwiGLU with the linear half first, softmax top-k
routing with renormalised weights. Norms, softmaxes and RoPE compute in at least float32 (a float16 model
upcasts; a float64 one stays float64, which lets tests check the math itself, free of rounding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import Activation, AttentionConfig, FeedForwardConfig, NormKind
from .moe import routed_experts


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision for norms, softmax and RoPE: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def activation(name: Activation):
    return {
        "silu": F.silu,
        "swish": F.silu,
        "gelu": F.gelu,
        "relu": F.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "linear": lambda x: x,
    }[name]


class RMSNorm(nn.Module):
    """eps None: the machine epsilon of the compute dtype, as nn.RMSNorm(eps=None) (fp32: ~1.19e-7)."""

    def __init__(self, dim: int, eps: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out (not F.rms_norm) so every exporter and opset handles it; computed in >= fp32.
        wide = compute_dtype(x.dtype)
        eps = torch.finfo(wide).eps if self.eps is None else self.eps
        xf = x.to(wide)
        # x / sqrt(.): the pattern onnxruntime fuses into one SimplifiedLayerNormalization node
        y = xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return (y * self.weight.to(wide)).to(x.dtype)


def make_norm(kind: NormKind, dim: int) -> nn.Module:
    return RMSNorm(dim) if kind == "rms" else nn.LayerNorm(dim)


# --- RoPE ------------------------------------------------------------------------------------------
def rope_inv_freq(head_dim: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """Always float32 and computed where used, never a module buffer: `model.half()` would round a buffer to
    float16, and cos/sin of late positions would drift (by up to ~0.16 within 1k tokens, head_dim 64)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))  # [hd/2]


def rope_angles(
    positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [T, 1, hd] for positions [T] (broadcast over batch and heads of [B, T, H, hd]), each
    angle repeated for its interleaved pair (x[2i], x[2i+1]).

    Angles are formed in float32 (the reference's cached table), cos/sin taken in the compute dtype of `dtype`."""
    freqs = _rope_freqs(positions, head_dim, base, dtype).repeat_interleave(2, dim=-1)
    return freqs.cos()[:, None, :], freqs.sin()[:, None, :]


def rope_tables(
    max_len: int, head_dim: int, base: float, dtype: torch.dtype, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [max_len, hd/2] (one angle per interleaved pair) in `dtype`: the tables GroupQueryAttention rotates
    with. The angles are `rope_angles`' (float32), so both decoder variants rotate by the same numbers."""
    freqs = _rope_freqs(torch.arange(max_len, device=device), head_dim, base, dtype)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def _rope_freqs(positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype) -> torch.Tensor:
    """Angles [T, hd/2] of positions [T]: formed in float32, then in the compute dtype of `dtype`."""
    freqs = positions.float()[:, None] * rope_inv_freq(head_dim, base, positions.device)[None, :]
    return freqs.to(compute_dtype(dtype))


def _pair_swap(head_dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """R with (x @ R)[2i] = -x[2i+1] and (x @ R)[2i+1] = x[2i]: a constant, exact (entries 0 and +-1)."""
    r = torch.zeros(head_dim, head_dim, dtype=dtype, device=device)
    idx = torch.arange(0, head_dim, 2, device=device)
    r[idx + 1, idx] = -1.0
    r[idx, idx + 1] = 1.0
    return r


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x [B, T, H, hd] and write them back interleaved:
    out[2i] = x[2i] cos - x[2i+1] sin, out[2i+1] = x[2i+1] cos + x[2i] sin. The pair swap is one MatMul with a
    constant signed permutation (4 graph nodes instead of a reshape/split/stack chain; same result bit for bit)."""
    swapped = torch.matmul(x, _pair_swap(x.shape[-1], x.dtype, x.device))
    return x * cos.to(x.dtype) + swapped * sin.to(x.dtype)


# --- Attention -------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head attention covering MHA / GQA / MQA / SQA (incl. reverse SQA) through q_heads vs kv_heads."""

    def __init__(self, cfg: AttentionConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(dim, cfg.q_heads * hd, bias=False)
        self.k_proj = nn.Linear(dim, cfg.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(dim, cfg.kv_heads * hd, bias=False)
        self.out_proj = nn.Linear(cfg.out_heads * hd, dim, bias=cfg.out_bias)
        self.gate_proj = nn.Linear(dim, cfg.out_heads * hd, bias=False) if cfg.gated else None

    def queries(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, T, Hq, hd]
        b, t, _ = x.shape
        return self.q_proj(x).view(b, t, self.cfg.q_heads, self.cfg.head_dim)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # -> 2 x [B, S, Hkv, hd]
        b, s, _ = x.shape
        shape = (b, s, self.cfg.kv_heads, self.cfg.head_dim)
        return self.k_proj(x).view(shape), self.v_proj(x).view(shape)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        gate_input: torch.Tensor,
    ) -> torch.Tensor:
        """q [B, T, Hq, hd]; k, v [B, Hkv, S, hd]; bias additive: causal [T, S] or padding [B, 1, 1, S]."""
        return self.project_out(mix_heads(q, k, v, bias), gate_input)

    def project_out(self, out: torch.Tensor, gate_input: torch.Tensor) -> torch.Tensor:
        """Heads' output [B, T, out_heads * hd] -> [B, T, D]: the gate (gated attention), then out_proj."""
        if self.gate_proj is not None:
            out = out * activation(self.cfg.gate_activation)(self.gate_proj(gate_input))
        return self.out_proj(out)


def mix_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot-product attention of q [B, T, Hq, hd] over k, v [B, Hkv, S, hd] -> [B, T, Hq' * hd] (Hq' =
    max(Hq, Hkv)); query head h reads K/V head h // (Hq / Hkv). bias additive: causal [T, S] or [B, 1, 1, S]."""
    b, t, hq, hd = q.shape
    hkv = k.shape[1]
    if hq < hkv:  # reverse SQA: tile the whole query-head block up to the K/V head count
        q = q.repeat(1, 1, hkv // hq, 1)
    groups = q.shape[2] // hkv
    # Query heads h = kv * groups + g share K/V head kv: fold the group into the query rows, so one
    # matrix product per K/V head reads K and V once for all its G query heads (no K/V repeat).
    qg = q.reshape(b, t, hkv, groups, hd).permute(0, 2, 3, 1, 4).reshape(b, hkv, groups * t, hd)
    scores = torch.matmul(qg, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))  # [B, Hkv, G*T, S]
    if bias is not None:  # a causal [T, S] bias gets one copy per query head of the group (rows are g, t)
        scores = scores + (bias.repeat(groups, 1) if bias.dim() == 2 else bias)
    probs = torch.softmax(scores.to(compute_dtype(q.dtype)), dim=-1).to(q.dtype)
    out = torch.matmul(probs, v).reshape(b, hkv, groups, t, hd)  # [B, Hkv, G, T, hd]
    return out.permute(0, 3, 1, 2, 4).reshape(b, t, hkv * groups * hd)


def heads_first(x: torch.Tensor) -> torch.Tensor:  # [B, S, H, hd] -> [B, H, S, hd]
    return x.transpose(1, 2)


def padding_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, S] of 0/1 -> additive [B, 1, 1, S] (-inf on padding), broadcast over heads and query rows."""
    zero = torch.zeros((), dtype=dtype)
    return torch.where(mask[:, None, None, :] > 0, zero, torch.full((), float("-inf"), dtype=dtype))


# --- Feed-forward ----------------------------------------------------------------------------------
class DenseFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, act: Activation, gated: bool, bias: bool):
        super().__init__()
        self.act, self.gated = activation(act), gated
        self.fc1 = nn.Linear(dim, hidden * 2 if gated else hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.gated:
            lin, gate = h.chunk(2, dim=-1)  # first half linear, second half through the activation
            h = lin * self.act(gate)
        else:
            h = self.act(h)
        return self.fc2(h)


class MoEFeedForward(nn.Module):
    """Top-k routed experts plus optional shared experts.

    Only the routed experts of each token are computed, eagerly and in the exported graphs (export/moe.py).
    Several shared experts go through the same op with k = their number and their gate's softmax as weights
    (one more MoE node in the graph, which quantizes like the routed one).
    """

    def __init__(self, cfg: FeedForwardConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        e, h = cfg.num_experts, cfg.hidden_dim
        width = 2 * h if cfg.gated else h
        self.router = nn.Linear(dim, e, bias=False)
        self.w1 = nn.Parameter(torch.zeros(e, dim, width))
        self.w2 = nn.Parameter(torch.zeros(e, h, dim))
        local = cfg.expert_bias == "local"
        self.b1 = nn.Parameter(torch.zeros(e, width)) if local else None
        self.b2 = nn.Parameter(torch.zeros(e, dim)) if local else None
        self.global_bias = nn.Parameter(torch.zeros(dim)) if cfg.expert_bias == "global" else None
        ns, sh = cfg.num_shared_experts, cfg.shared_hidden_dim or h
        self.shared = None
        self.shared_w1 = self.shared_w2 = self.shared_b1 = self.shared_b2 = self.shared_gate = None
        if ns == 1:
            self.shared = DenseFeedForward(
                dim, sh, cfg.activation, cfg.gated, bias=cfg.shared_bias == "local"
            )
        elif ns > 1:
            sw = 2 * sh if cfg.gated else sh
            self.shared_w1 = nn.Parameter(torch.zeros(ns, dim, sw))
            self.shared_w2 = nn.Parameter(torch.zeros(ns, sh, dim))
            if cfg.shared_bias == "local":
                self.shared_b1 = nn.Parameter(torch.zeros(ns, sw))
                self.shared_b2 = nn.Parameter(torch.zeros(ns, dim))
            self.shared_gate = nn.Linear(dim, ns, bias=False)
        self.shared_global_bias = (
            nn.Parameter(torch.zeros(dim)) if ns > 0 and cfg.shared_bias == "global" else None
        )

    # the per-expert weight stacks [E, ...]: the bulk of a MoE model, read one selected expert at a time
    EXPERT_STACKS = ("w1", "b1", "w2", "b2", "shared_w1", "shared_b1", "shared_w2", "shared_b2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [N, D]
        out = routed_experts(
            x, self.router(x), self.w1, self.b1, self.w2, self.b2, cfg.top_k, cfg.activation, cfg.gated
        )
        if cfg.weighted_shared:  # the outputs are linear in the routing weights: scale the sum
            out = out * (cfg.top_k / (cfg.top_k + cfg.num_shared_experts))
        if self.global_bias is not None:
            out = out + self.global_bias
        if cfg.num_shared_experts > 0:
            if self.shared is not None:
                shared = self.shared(x)
            else:  # every shared expert, weighted by the softmax of its gate: k = all, no renormalisation
                shared = routed_experts(
                    x,
                    self.shared_gate(x),
                    self.shared_w1,
                    self.shared_b1,
                    self.shared_w2,
                    self.shared_b2,
                    cfg.num_shared_experts,
                    cfg.activation,
                    cfg.gated,
                    normalize=False,
                )
            if self.shared_global_bias is not None:
                shared = shared + self.shared_global_bias
            if cfg.weighted_shared:
                shared = shared * (cfg.num_shared_experts / (cfg.top_k + cfg.num_shared_experts))
            out = out + shared
        return out.reshape(shape)


def make_ffn(cfg: FeedForwardConfig, dim: int) -> nn.Module:
    if cfg.is_moe:
        return MoEFeedForward(cfg, dim)
    return DenseFeedForward(dim, cfg.hidden_dim, cfg.activation, cfg.gated, cfg.bias)


def expert_stack_names(model: nn.Module) -> set[str]:
    """State-dict keys of every MoE layer's expert weight stacks (see MoEFeedForward.EXPERT_STACKS)."""
    return {
        f"{prefix}.{name}"
        for prefix, module in model.named_modules()
        if isinstance(module, MoEFeedForward)
        for name in MoEFeedForward.EXPERT_STACKS
        if getattr(module, name) is not None
    }


def float_except_experts(model: nn.Module) -> nn.Module:
    """model in float32, its expert stacks left as they are (widened per selected expert when used)."""
    keep = expert_stack_names(model)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if name not in keep and tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor.data = tensor.data.float()
    return model
