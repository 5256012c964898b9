"""The CUDA-graph memory update's padded path (rxt_edge/captured_update.py), run uncaptured on the CPU: padding an
interaction to its length bucket writes the same STM as the engine's unpadded update, the copies go through the
runtime's hand-written Identity graph, and the conversation's buffers swap as before. (The capture itself needs a
GPU: docs/benchmarks.md has the H200 figures.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from rxt_edge import RxTSession
from rxt_edge.captured_update import PaddedMemoryUpdate, bucket_length, identity_model


@pytest.mark.parametrize(
    ("n", "limit", "expected"),
    [
        (1, 1024, 64),
        (64, 1024, 64),
        (65, 1024, 128),
        (70, 1024, 128),
        (513, 1024, 1024),
        (700, 768, 768),
        (900, 768, 900),
    ],
)
def test_bucket_is_the_next_power_of_two_within_max_seq_len(n, limit, expected):
    assert bucket_length(n, limit) == expected


@pytest.mark.parametrize(("elem_type", "dtype"), [(1, np.float32), (10, np.float16)])
def test_identity_model_is_valid_onnx_and_copies_into_a_bound_output(elem_type, dtype):
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(identity_model(elem_type))
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(identity_model(elem_type), options, providers=["CPUExecutionProvider"])
    src = np.arange(24, dtype=dtype).reshape(2, 1, 3, 4)
    dst = np.zeros_like(src)
    binding = sess.io_binding()
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(src))
    binding.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(dst))
    sess.run_with_iobinding(binding)
    np.testing.assert_array_equal(dst, src)  # written in place: the bound buffer, not a new one


def test_padded_update_writes_the_engines_stm(tiny_package: Path):
    session = RxTSession.load(tiny_package, threads=1)
    engine = session.engine
    padded = PaddedMemoryUpdate(
        engine.graphs, engine.buffers, engine.dims, engine.new_memory(), capture=False
    )
    rng = np.random.default_rng(0)
    shape = (engine.dims.memory_layers, 1, engine.dims.stm_slots, engine.dims.dim)
    stm0 = rng.standard_normal(shape).astype(engine.buffers.dtype)
    ref, ours = engine.new_memory(), engine.new_memory()
    engine.install_stm(ref, stm0)
    engine.install_stm(ours, stm0)
    for n in (5, 64, 65, 200):  # inside a bucket, exactly one, one over, a longer one
        interaction = [int(t) for t in rng.integers(4, engine.dims.vocab_size, n)]
        before = ours.active
        engine.update_memory(ref, interaction)
        spare = padded(ours, interaction)
        assert spare == 1 - before and ours.active == before  # written to the spare set, not swapped
        ours.active = spare
        want, got = ref.stm[ref.active].numpy(), ours.stm[ours.active].numpy()
        assert np.abs(want).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert sorted(padded._buckets) == [64, 128, 256]
    session.close()
