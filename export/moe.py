"""Routed experts of a Mixture-of-Experts layer: computed sparsely, eagerly and in the exported graphs.

Semantics (rxlm's): softmax over the router logits (in >= float32), the top-k experts, their weights divided by
their sum (+1e-9), each selected expert a (gated) MLP, outputs summed with those weights. Only the selected
experts are computed and read:

- eager (torch): tokens are grouped by expert and each expert that received tokens runs once on its group;
- exported with contrib ops (inside `contrib_export`, what `rxt-edge export` does by default): `torch.export`
  sees one opaque node (the custom op `rxt_edge::routed_experts`: no data-dependent shapes to trace), which the
  translation in export/moe_onnx.py turns into onnxruntime's contrib op `com.microsoft.MoE` (CPU and CUDA
  kernels; the same routing: softmax over all experts, top-k, renormalised; tokens grouped by expert);
- exported for standard ONNX only (`rxt-edge export --no-fuse`), or with an activation the contrib op does not
  compute exactly (its "gelu" is the tanh approximation; its gated form is SwiGLU only): every expert on every
  token, combined with the sparse routing weights. Exact, static shapes, but E/k times the work.

The contrib op wants fc1 as [E, 2H, D] with the gate and linear rows interleaved (g0, l0, g1, l1, ...) and fc2
as [E, D, H]; the canonical weights are [E, D, 2H] (linear half first) and [E, H, D]. The translation writes
the re-layout as Reshape/Gather/Transpose of the weights and `fold_expert_layouts` folds it into new
initializers after export, so the saved graph holds each expert weight once, in the op's layout.

The `+1e-9` of the renormalisation is left out by the contrib op: the sum of the top-k probabilities is at
least k/E, so the difference is below 1e-9 * E/k relative (4e-8 at 384 experts, top-10): under float32 rounding.

A layer's several shared experts (rxlm: every one on every token, weighted by a softmax over a small gate's
logits, no renormalisation) are the same computation with k = E and `normalize=False`: the contrib op's
`normalize_routing_weights=0` takes the top-k softmax probabilities as they are, and with k = E those are all of
them. So they export as a second `MoE` node (and quantize as `QMoE`), not as stacked fp32 MatMuls.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch

# Set while exporting graphs that may use contrib ops (`contrib_export`); otherwise the exported graph holds the
# standard-op formulation, so a plain `torch.onnx.export` needs no translation table.
_CONTRIB = contextvars.ContextVar("rxt_edge_moe_contrib", default=False)

# activations the contrib op computes exactly as torch does (its "gelu" is the tanh approximation: not exact)
_CONTRIB_PLAIN = {"relu": "relu", "silu": "silu", "swish": "silu", "linear": "identity"}
_CONTRIB_GATED = {"silu", "swish"}  # its SwiGLU with alpha 1, beta 0, no limit: silu(gate) * linear


def _act(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    from .layers import activation  # layers imports this module

    return activation(name)


def routing(logits: torch.Tensor, top_k: int, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, E] -> (weights [N, k] in >= float32, expert ids [N, k]): softmax, top-k, renormalised
    (normalize=False: the softmax probabilities themselves, what shared experts take with k = E)."""
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    top_w, top_i = probs.topk(top_k, dim=-1)
    return (top_w / (top_w.sum(-1, keepdim=True) + 1e-9) if normalize else top_w), top_i


def expert_mlp(x, w1, b1, w2, b2, activation: str, gated: bool) -> torch.Tensor:
    """x [..., N, D] through expert weights w1 [..., D, H'] w2 [..., H, D] (leading dims broadcast)."""
    h = torch.matmul(x, w1)
    if b1 is not None:
        h = h + b1.unsqueeze(-2)
    act = _act(activation)
    if gated:
        lin, gate = h.chunk(2, dim=-1)  # first half linear, second half through the activation
        h = lin * act(gate)
    else:
        h = act(h)
    out = torch.matmul(h, w2)
    return out + b2.unsqueeze(-2) if b2 is not None else out


def routed_experts_sparse(
    x: torch.Tensor,
    logits: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    top_k: int,
    activation: str,
    gated: bool,
    normalize: bool = True,
) -> torch.Tensor:
    """x [N, D], logits [N, E] -> [N, D]: each expert that received tokens runs once, on those tokens only."""
    top_w, top_i = routing(logits, top_k, normalize)
    out = torch.zeros(x.shape, dtype=top_w.dtype, device=x.device)
    order = top_i.flatten().argsort(stable=True)  # routes grouped by expert, tokens in order within each
    experts, counts = torch.unique_consecutive(top_i.flatten()[order], return_counts=True)
    start = 0
    for e, n in zip(experts.tolist(), counts.tolist(), strict=True):
        routes = order[start : start + n]
        start += n
        rows = routes // top_k
        # one expert's weights in x's dtype (a reference may keep the stacks in the checkpoint's bf16)
        y = expert_mlp(
            x[rows],
            w1[e].to(x.dtype),
            None if b1 is None else b1[e].to(x.dtype),
            w2[e].to(x.dtype),
            None if b2 is None else b2[e].to(x.dtype),
            activation,
            gated,
        )
        out.index_add_(0, rows, y.to(out.dtype) * top_w.flatten()[routes, None])
    return out.to(x.dtype)


def routed_experts_dense(
    x, logits, w1, b1, w2, b2, top_k: int, activation: str, gated: bool, normalize: bool = True
):
    """The same result with static shapes: every expert on every token, combined with the sparse weights."""
    top_w, top_i = routing(logits, top_k, normalize)
    route = torch.zeros_like(logits, dtype=top_w.dtype).scatter(1, top_i, top_w).to(x.dtype)  # [N, E]
    every = expert_mlp(x.unsqueeze(0), w1, b1, w2, b2, activation, gated)  # [E, N, D]
    return torch.einsum("ne,end->nd", route, every)


# The sparse path as an opaque custom op for `torch.export` (its output is a new tensor: nothing aliases)
_routed_experts_op = torch.library.custom_op("rxt_edge::routed_experts", mutates_args=())(
    routed_experts_sparse
)


@_routed_experts_op.register_fake
def _(x, logits, w1, b1, w2, b2, top_k, activation, gated, normalize=True):
    return torch.empty_like(x)


def routed_experts(
    x: torch.Tensor,
    logits: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    top_k: int,
    activation: str,
    gated: bool,
    normalize: bool = True,
) -> torch.Tensor:
    """Sum over the top-k routed experts of x [N, D] with router logits [N, E]: [N, D] in x's dtype.

    normalize=False with top_k = E is a layer's several shared experts: every one on every token, weighted by
    the softmax of their gate logits (rxlm's learned mean), through the same op as the routed experts.

    Eagerly: plain torch, which autograd follows. Under `torch.export`: inside `contrib_export()` one opaque node
    that its translation table turns into the contrib op, otherwise the static standard-op formulation."""
    args = (x, logits, w1, b1, w2, b2, top_k, activation, gated, normalize)
    if not torch.compiler.is_exporting():
        return routed_experts_sparse(*args)
    if _CONTRIB.get() and contrib_activation(activation, gated) is not None:
        return _routed_experts_op(*args)
    return routed_experts_dense(*args)


def contrib_activation(activation: str, gated: bool) -> str | None:
    """The contrib MoE op's activation_type computing exactly this expert MLP, or None."""
    if gated:
        return "swiglu" if activation in _CONTRIB_GATED else None
    return _CONTRIB_PLAIN.get(activation)


@contextlib.contextmanager
def contrib_export(enabled: bool = True) -> Iterator[dict | None]:
    """Export routed experts as `com.microsoft.MoE` where it is exact; yields the `custom_translation_table`
    for `torch.onnx.export` (None when disabled). Run `fold_expert_layouts` on the exported model after."""
    token = _CONTRIB.set(enabled)
    try:
        if not enabled:
            yield None
        else:
            from .moe_onnx import translation_table

            yield translation_table()
    finally:
        _CONTRIB.reset(token)
