"""Routed experts (export/moe.py): sparse eagerly and in the exported graphs, the same numbers as dense dispatch.

Sparsity is checked by poisoning: the experts no token selects get NaN weights. Dense dispatch multiplies their
outputs by a zero routing weight, and NaN * 0 is NaN; a computation that never reads them stays finite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rxt_edge.export import moe
from rxt_edge.export.config import FeedForwardConfig
from rxt_edge.export.layers import MoEFeedForward

DIM = 32
EXPERTS = 64


def _layer(seed: int, **kw) -> MoEFeedForward:
    cfg = FeedForwardConfig(16, num_experts=EXPERTS, shared_hidden_dim=24, **kw)
    layer = MoEFeedForward(cfg, DIM).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return layer


def _poison_unselected(layer: MoEFeedForward, x: torch.Tensor) -> int:
    """NaN into every routed expert that no token of x selects; returns how many were poisoned."""
    with torch.no_grad():
        _, top_i = moe.routing(layer.router(x.reshape(-1, DIM)), layer.cfg.top_k)
        unused = sorted(set(range(EXPERTS)) - set(top_i.flatten().tolist()))
        for p in (layer.w1, layer.w2, layer.b1, layer.b2):
            if p is not None:
                p[unused] = float("nan")
    return len(unused)


CASES = [
    dict(top_k=6, num_shared_experts=2, expert_bias="global", shared_bias="global"),
    dict(top_k=4, num_shared_experts=1, expert_bias="local", shared_bias="local", weighted_shared=True),
    dict(top_k=5, expert_bias="off", gated=False, activation="gelu"),  # no contrib op: dense formulation
    dict(top_k=4, expert_bias="local", gated=False, activation="relu"),
]


@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("tokens", [1, 3, 40])
def test_sparse_equals_dense_dispatch_in_fp64(kw, tokens):
    layer = _layer(1, **kw).double()
    x = torch.randn(tokens, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    args = (x, layer.router(x), layer.w1, layer.b1, layer.w2, layer.b2, layer.cfg.top_k)
    args += (layer.cfg.activation, layer.cfg.gated)
    with torch.no_grad():
        torch.testing.assert_close(
            moe.routed_experts_sparse(*args), moe.routed_experts_dense(*args), rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("gated", [True, False])
def test_shared_experts_are_weighted_by_their_gate_softmax_in_fp64(gated):
    """rxlm's several shared experts: all of them on every token, weights softmax(gate logits) as they are
    (no renormalisation, no +1e-9): what k = E with normalize=False computes, eager and dense dispatch alike."""
    kw = dict(top_k=4, num_shared_experts=3, expert_bias="off", shared_bias="local", gated=gated)
    layer = _layer(13, **kw).double()
    x = torch.randn(7, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        logits = layer.shared_gate(x) * 4  # far from uniform: a renormalisation or a missing softmax shows
        weights = torch.softmax(logits, dim=-1)
        per = [
            moe.expert_mlp(x, layer.shared_w1[s], layer.shared_b1[s], layer.shared_w2[s], layer.shared_b2[s],
                           layer.cfg.activation, gated)
            for s in range(3)
        ]  # fmt: skip
        expected = sum(weights[:, s : s + 1] * per[s] for s in range(3))
        args = (x, logits, layer.shared_w1, layer.shared_b1, layer.shared_w2, layer.shared_b2, 3)
        args += (layer.cfg.activation, gated, False)
        for fn in (moe.routed_experts_sparse, moe.routed_experts_dense):
            torch.testing.assert_close(fn(*args), expected, rtol=0, atol=1e-12)


def test_eager_reads_only_the_selected_experts():
    layer = _layer(3, **CASES[0])
    x = torch.randn(1, 5, DIM, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = layer(x)
        assert _poison_unselected(layer, x) > EXPERTS // 2
        got = layer(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def _export(layer: MoEFeedForward, contrib: bool, path):
    from rxt_edge.export.moe_onnx import fold_expert_layouts
    from torch.export import Dim

    example = torch.randn(2, 3, DIM)
    with torch.no_grad(), moe.contrib_export(contrib) as table:
        program = torch.onnx.export(
            layer,
            (example,),
            dynamic_shapes=({0: Dim("batch", max=64), 1: Dim("seq", max=4096)},),
            custom_translation_table=table,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    if contrib:
        fold_expert_layouts(program.model)
    program.save(str(path))
    import onnx
    import onnxruntime as ort

    ops = {(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node}
    return ops, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kw", CASES[:2])
def test_exported_graph_is_sparse_and_equals_torch(kw, tmp_path):
    """The contrib op, weights stored once in its layout; prompt and single-token inputs; poisoned experts
    stay out of the result."""
    layer = _layer(5, **kw)
    ops, session = _export(layer, True, tmp_path / "moe.onnx")
    assert ("com.microsoft", "MoE") in ops
    _assert_shared_experts_in_the_op(tmp_path / "moe.onnx", layer.cfg.top_k, layer.cfg.num_shared_experts)
    routed_bytes = (layer.w1.numel() + layer.w2.numel()) * 4
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 1.5 * routed_bytes  # no second copy
    gen = torch.Generator().manual_seed(6)
    for shape in [(1, 1), (3, 1), (1, 40)]:
        x = torch.randn(*shape, DIM, generator=gen)
        with torch.no_grad():
            expected = layer(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    x = torch.randn(1, 2, DIM, generator=gen)
    with torch.no_grad():
        expected = layer(x).numpy()
    _poison_unselected(layer, x)
    _, session = _export(layer, True, tmp_path / "poisoned.onnx")
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def _assert_shared_experts_in_the_op(path, top_k: int, shared: int) -> None:
    """Several shared experts are a MoE node of their own (k = their number, weights not renormalised); no
    MatMul over stacked [E, K, N] expert weights is left for the quantizers to skip."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path)).graph
    stacked = {t.name for t in graph.initializer if len(t.dims) == 3}
    assert not [n for n in graph.node if n.op_type == "MatMul" and stacked & set(n.input)]
    nodes = [
        {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in graph.node if n.op_type == "MoE"
    ]
    want = [(top_k, 1)] + ([(shared, 0)] if shared > 1 else [])  # (k, normalize_routing_weights)
    assert sorted((a["k"], a["normalize_routing_weights"]) for a in nodes) == sorted(want)


def test_standard_onnx_export_has_no_contrib_op_and_equals_torch(tmp_path):
    layer = _layer(7, **CASES[0])
    ops, session = _export(layer, False, tmp_path / "moe.onnx")
    assert not any(domain == "com.microsoft" for domain, _ in ops)
    x = torch.randn(2, 4, DIM, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = layer(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_activation_without_an_exact_contrib_op_exports_standard_ops(tmp_path):
    """onnxruntime's MoE "gelu" is the tanh approximation: gelu experts stay standard ops even when fused."""
    layer = _layer(9, **CASES[2])
    ops, session = _export(layer, True, tmp_path / "moe.onnx")
    assert ("com.microsoft", "MoE") not in ops
    x = torch.randn(1, 3, DIM, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        expected = layer(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
