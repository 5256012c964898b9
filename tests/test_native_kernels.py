"""rxt-edge's own CPU kernel (`rxt-edge kernels build`, runtimes/native/memory_attention.cc) and the ONNX function
that names it (export/memory_kernel.py): the kernel against a float64 reference and against the function's body
(what onnxruntime runs without the library), a decoder with and without it, its errors, and the loader's rules.

The library is built once per run (g++ and Debian's onnxruntime headers: .ci/run installs g++; the headers are
downloaded once, checked against their SHA-256)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from kernel_checks import teacher_forced_logits
from onnx import TensorProto, helper
from rxt_edge.export import memory_kernel
from rxt_edge.export.quantize import quantize_package
from rxt_edge.runtimes import kernel_build, native_kernels

pytestmark = pytest.mark.skipif(
    native_kernels.unsupported_reason() is not None, reason=str(native_kernels.unsupported_reason())
)


@pytest.fixture
def library(kernel_library: Path) -> Path:
    return kernel_library


def _attention_model(heads: int, group: int, head_dim: int) -> onnx.ModelProto:
    """One function call over [B, T, heads * group * head_dim] queries, as the quantizer writes it."""
    inputs = [
        helper.make_tensor_value_info("query", TensorProto.FLOAT, ["B", "T", heads * group * head_dim]),
        helper.make_tensor_value_info("key", TensorProto.INT8, ["B", heads, head_dim, "S"]),
        helper.make_tensor_value_info("key_scale", TensorProto.FLOAT, ["S"]),
        helper.make_tensor_value_info("value", TensorProto.INT8, ["B", heads, "S", head_dim]),
        helper.make_tensor_value_info("value_scale", TensorProto.FLOAT, [head_dim]),
    ]
    node = memory_kernel.call(*memory_kernel.INPUTS, "heads", name="attention")
    graph = helper.make_graph([node], "attention", inputs, [helper.make_tensor_value_info("heads", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    memory_kernel.declare(model, heads, head_dim)
    return model


def _feeds(rng, batch: int, tokens: int, heads: int, group: int, head_dim: int, slots: int) -> dict:
    return {
        "query": rng.standard_normal((batch, tokens, heads * group * head_dim)).astype(np.float32) * 0.7,
        "key": rng.integers(-63, 64, (batch, heads, head_dim, slots)).astype(np.int8),
        "key_scale": rng.uniform(0.01, 0.04, slots).astype(np.float32),
        "value": rng.integers(-63, 64, (batch, heads, slots, head_dim)).astype(np.int8),
        "value_scale": rng.uniform(0.01, 0.04, head_dim).astype(np.float32),
    }


def _reference(f: dict, heads: int, head_dim: int) -> np.ndarray:
    batch = f["query"].shape[0]
    q = f["query"].astype(np.float64).reshape(batch, -1, heads, head_dim).transpose(0, 2, 1, 3)
    k = f["key"].astype(np.float64) * f["key_scale"]
    v = f["value"].astype(np.float64) * f["value_scale"]
    s = q @ k
    p = np.exp(s - s.max(-1, keepdims=True))
    return ((p / p.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3)


def _run(model: onnx.ModelProto, feeds: dict, library: Path | None, threads: int = 1) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if library is not None:
        options.register_custom_ops_library(str(library))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


# (batch, tokens, K/V heads, query heads per K/V head, head dim, slots): a decode step, a prompt with slots that
# are not a multiple of 16, a batch of two, head dims the vector code takes (16, 32, 64) and one it does not (8)
SHAPES = [(1, 1, 4, 2, 32, 1024), (1, 5, 2, 2, 16, 67), (2, 3, 2, 1, 64, 130), (1, 2, 2, 2, 8, 33)]


@pytest.mark.parametrize(("batch", "tokens", "heads", "group", "head_dim", "slots"), SHAPES)
def test_kernel_is_closer_to_float_than_the_function_body(
    library: Path, batch: int, tokens: int, heads: int, group: int, head_dim: int, slots: int
) -> None:
    model = _attention_model(heads, group, head_dim)
    feeds = _feeds(np.random.default_rng(slots), batch, tokens, heads, group, head_dim, slots)
    want = _reference(feeds, heads, head_dim)
    own, body = _run(model, feeds, library, threads=2), _run(model, feeds, None)
    assert own.shape == body.shape == want.shape == (batch, tokens * group, heads, head_dim)
    spread = np.abs(want).max()
    own_error, body_error = np.abs(own - want).max() / spread, np.abs(body - want).max() / spread
    assert own_error < 1e-2 and body_error < 8e-2  # 14/11-bit against DynamicQuantizeMatMul's 8-bit
    assert own_error < body_error  # the kernel really ran (the body's 8-bit error is larger)


def test_kernel_refuses_mismatched_inputs_with_a_clear_error(library: Path) -> None:
    model = _attention_model(2, 2, 16)
    feeds = _feeds(np.random.default_rng(0), 1, 1, 2, 2, 16, 32)
    feeds["value"] = feeds["value"][:, :, :31]  # 31 slots of values for 32 of keys
    with pytest.raises(Exception, match="MemoryAttentionInt8: value must be"):
        _run(model, feeds, library)
    feeds = _feeds(np.random.default_rng(0), 1, 1, 2, 2, 16, 32)
    feeds["key_scale"] = feeds["key_scale"][:16]
    with pytest.raises(Exception, match="key_scale needs one scale per slot"):
        _run(model, feeds, library)


def test_decoder_answers_alike_with_and_without_the_kernel(
    library: Path,
    tiny_package: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The int8 package's decoder through the runtime's own loading path (RXT_EDGE_KERNELS), the kernel on and off:
    teacher-forced logits within the int8 form's error, and not identical (the kernel ran)."""
    pkg = tmp_path_factory.mktemp("kernel_pkg") / "int8"
    quantize_package(tiny_package, pkg, "int8", memory_kv="int8")
    assert memory_kernel.uses_kernel(onnx.load(str(pkg / "decoder.onnx"), load_external_data=False)) > 0
    logits = teacher_forced_logits(
        pkg, monkeypatch, {"off": {native_kernels.ENV: "off"}, "on": {native_kernels.ENV: str(library)}}
    )
    off, on = logits["off"], logits["on"]
    assert 0 < float(np.abs(on - off).max()) < 0.05 * float(np.abs(off).max())


def test_loader_follows_the_environment(
    library: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(native_kernels.ENV, raising=False)
    assert native_kernels.chosen_library() is None and "not built" in native_kernels.status()
    monkeypatch.setenv(native_kernels.ENV, str(library))
    assert native_kernels.chosen_library() == library and native_kernels.status().startswith("on:")
    options = ort.SessionOptions()
    assert native_kernels.register(options) == library
    monkeypatch.setenv(native_kernels.ENV, "off")
    assert native_kernels.register(ort.SessionOptions()) is None and native_kernels.status().startswith("off")
    monkeypatch.setenv(native_kernels.ENV, str(tmp_path / "missing.so"))
    with pytest.raises(native_kernels.KernelLibraryError, match="no such file"):
        native_kernels.chosen_library()
    not_a_library = tmp_path / "junk.so"
    not_a_library.write_bytes(b"not a shared library")
    monkeypatch.setenv(native_kernels.ENV, str(not_a_library))
    with pytest.raises(native_kernels.KernelLibraryError, match="cannot load"):
        native_kernels.register(ort.SessionOptions())


def test_a_built_library_in_the_cache_is_used_and_a_broken_one_skipped(
    library: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(native_kernels.ENV, raising=False)
    for cache, content in (("good", library.read_bytes()), ("broken", b"truncated")):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / cache))  # (a path onnxruntime has not loaded yet)
        target = native_kernels.default_library()
        target.parent.mkdir(parents=True)
        target.write_bytes(content)
        registered = native_kernels.register(ort.SessionOptions())
        # a broken build is skipped: CPU sessions run the function bodies instead
        assert registered == (target if cache == "good" else None)


def test_build_explains_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(kernel_build.KernelBuildError, match="does not hold"):
        kernel_build.build(tmp_path / "lib.so", headers=tmp_path)
    with pytest.raises(kernel_build.KernelBuildError, match="not a Debian package"):
        kernel_build.unpack_headers(b"<html>not found</html>", tmp_path / "h")
    monkeypatch.setenv("CXX", "")
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on it
    with pytest.raises(kernel_build.KernelBuildError, match="no C\\+\\+ compiler"):
        kernel_build.compiler()


def test_cli_builds_to_a_path_and_reports_status(library: Path, tmp_path: Path) -> None:
    headers = native_kernels.cache_dir() / "headers-1.21"  # fetched by the fixture's build
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), native_kernels.ENV: ""}
    if not (headers / "onnxruntime_c_api.h").is_file():
        pytest.skip("the fixture's build used another cache directory")
    out = tmp_path / "k.so"
    cli = [sys.executable, "-m", "rxt_edge.apps.cli", "kernels"]
    done = subprocess.run(
        [*cli, "build", "--headers", str(headers), "-o", str(out)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file() and f"RXT_EDGE_KERNELS={out}" in done.stdout
    status = subprocess.run(
        [*cli, "status"], capture_output=True, text=True, env={**env, native_kernels.ENV: str(out)}
    )
    assert status.returncode == 0 and f"kernels: on: {out}" in status.stdout
