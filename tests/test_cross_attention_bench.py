"""bench/cross_attention_cuda.py times four formulations of one decode step's memory attention on CUDA; each must
compute the same attention, or the table compares different math. Checked here on the CPU provider (the same
graphs in float32): every layout, against numpy, for grouped shapes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rxt_edge.bench import cross_attention_cuda as bench


@pytest.mark.parametrize("variant", ["mha-fold", "mha-expand", "attn-4d", "attn-3d"])
@pytest.mark.parametrize("shape", [(8, 4, 16, 64), (6, 2, 8, 48)])
def test_every_formulation_computes_grouped_attention(variant: str, shape: tuple[int, int, int, int]) -> None:
    hq, hkv, hd, s = shape
    rng = np.random.default_rng(hq * s)
    q = rng.standard_normal((hq, hd)).astype(np.float32)
    k, v = (rng.standard_normal((hkv, s, hd)).astype(np.float32) for _ in range(2))
    model, _, _ = bench._model(variant, hq, hkv, hd, s)
    for value in (*model.graph.input, *model.graph.output):  # the CPU provider's kernels are float32
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {name: np.ascontiguousarray(a) for name, a in bench._inputs(variant, q, k, v).items()}
    got = bench._output_heads(variant, session.run(None, feed)[0], hq, hkv, hd)
    group = hq // hkv  # query head h reads K/V head h // group
    scores = np.einsum("hd,hsd->hs", q, np.repeat(k, group, 0)) / np.sqrt(hd)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    want = np.einsum("hs,hsd->hd", p / p.sum(-1, keepdims=True), np.repeat(v, group, 0))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.abs(want[:group] - want[group : 2 * group]).max() > 1e-3  # groups differ: a mix-up would show
