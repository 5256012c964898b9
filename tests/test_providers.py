"""Execution providers: CPU sessions work, unavailable providers explain how to get them, options per provider."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import onnxruntime as ort
import pytest
from rxt_edge.runtimes import providers
from rxt_edge.runtimes.providers import (
    ProviderUnavailableError,
    canonical_name,
    check_session_provider,
    device_for,
    make_session_options,
    resolve_provider,
)


def _add_model() -> bytes:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "add", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_cpu_session_runs():
    provs, opts = resolve_provider("CPU")
    assert provs == ["CPUExecutionProvider"] and opts == [{}]
    so = make_session_options("cpu", threads=1)
    sess = ort.InferenceSession(_add_model(), sess_options=so, providers=provs, provider_options=opts)
    (y,) = sess.run(None, {"x": np.array([1.0, 2.5], np.float32)})
    np.testing.assert_array_equal(y, [2.0, 5.0])
    check_session_provider(sess, "cpu")
    dev, idx = device_for("cpu")
    v = ort.OrtValue.ortvalue_from_shape_and_type([2], np.float32, dev, idx)
    assert v.device_name().lower() == "cpu"


@pytest.mark.parametrize(
    "name, ort_name, extra", [("cuda", "CUDA", "rxt-edge[gpu]"), ("directml", "Dml", "rxt-edge[directml]")]
)
def test_unavailable_provider_explains(monkeypatch, name, ort_name, extra):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["AzureExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.raises(ProviderUnavailableError) as e:
        resolve_provider(name)
    msg = str(e.value)
    assert f"{ort_name}ExecutionProvider" in msg
    assert "available: AzureExecutionProvider, CPUExecutionProvider" in msg
    assert f"pip install {extra}" in msg


def test_available_gpu_provider_keeps_cpu_fallback(monkeypatch):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    provs, opts = resolve_provider("cuda", device_id=1)
    assert provs == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert opts == [{"device_id": "1"}, {}]


def test_names():
    assert canonical_name(" DirectML ") == "dml"
    with pytest.raises(ValueError, match="cpu, cuda, dml"):
        canonical_name("tpu")
    assert device_for("cuda", 1) == ("cuda", 1)
    assert device_for("directml", 2) == ("dml", 2)
    assert device_for("cpu", 3) == ("cpu", 0)


def test_session_options_per_provider():
    cpu = make_session_options("cpu", threads=3)
    assert cpu.intra_op_num_threads == 3
    assert cpu.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert cpu.enable_mem_pattern and not cpu.enable_profiling
    dml = make_session_options("dml")  # options only: DirectML need not be installed
    assert not dml.enable_mem_pattern
    assert dml.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    basic = make_session_options("cuda", optimization="basic", enable_profiling=True)
    assert basic.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert basic.enable_profiling
    with pytest.raises(ValueError, match="optimization"):
        make_session_options("cpu", optimization="max")
    with pytest.raises(ValueError, match="threads"):
        make_session_options("cpu", threads=0)


def test_check_session_provider_detects_fallback():
    class FellBack:
        def get_providers(self):
            return ["CPUExecutionProvider"]

    with pytest.raises(ProviderUnavailableError, match="runs on CPUExecutionProvider"):
        check_session_provider(FellBack(), "cuda")


def test_bottom_layer_imports_nothing_from_rxt_edge():
    tree = ast.parse(inspect.getsource(providers))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("rxt_edge"), ast.dump(node)
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("rxt_edge") for a in node.names)
