"""bench/gemv_cuda.py times one-row products in several weight layouts on CUDA; each graph must compute x @ W for
every one of its weight copies, or the table compares different math. Checked here on the CPU provider (float16
graphs as the bench builds them): the exact layouts to float16 rounding, the 8-bit one to its quantization."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from rxt_edge.bench import gemv_cuda as bench


@pytest.mark.parametrize("variant", bench.VARIANTS)
def test_every_layout_computes_each_product(variant: str) -> None:
    rng = np.random.default_rng(3)
    k, n = 256, 96
    ws = [(rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float16) for _ in range(3)]
    x = rng.standard_normal((1, k)).astype(np.float16)
    session = ort.InferenceSession(
        bench._model(variant, ws).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    outs = session.run(None, {"x": x if variant == "gemm-tb" else x[None]})
    assert len(outs) == len(ws)
    tol = 0.03 if variant == "nbits8" else 2e-3  # 8-bit weights, 127 steps of the block's largest value
    for w, y in zip(ws, outs, strict=True):
        want = x.astype(np.float32) @ w.astype(np.float32)
        np.testing.assert_allclose(y.astype(np.float32).reshape(want.shape), want, rtol=0, atol=tol)
    assert np.abs(outs[0].astype(np.float32) - outs[1].astype(np.float32)).max() > 0.1  # distinct copies


def test_the_8_bit_blocks_round_trip() -> None:
    w = np.random.default_rng(4).standard_normal((256, 40)).astype(np.float16)
    q, scales, block = bench._quantize8(w)
    assert (q.shape, scales.shape, block) == ((40, 2, 128), (80,), 128)
    back = (q.astype(np.float32) - 128) * scales.astype(np.float32).reshape(40, 2, 1)
    np.testing.assert_allclose(
        back.reshape(40, 256).T, w, rtol=0, atol=float(np.abs(w).max()) / 127 * 0.51 + 1e-3
    )
