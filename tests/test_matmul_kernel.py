"""rxt-edge's 4-bit product kernel (runtimes/native/matmul_int4.cc) and its ONNX function (export/matmul_kernel.py):
the kernel against onnxruntime's MatMulNBits (the function's body) and a float64 reference, at decode rows,
prompts and batches; its errors; the CPU rule that turns it on; and an int4 package with and without it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from kernel_checks import teacher_forced_logits
from onnx import TensorProto, helper, numpy_helper
from rxt_edge.export import matmul_kernel
from rxt_edge.export.quantize import quantize_package
from rxt_edge.runtimes import native_kernels
from rxt_edge.runtimes.operators import MS_DOMAIN

pytestmark = pytest.mark.skipif(
    native_kernels.unsupported_reason() is not None, reason=str(native_kernels.unsupported_reason())
)


def _weights(rng: np.random.Generator, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits' layout: uint8 [N, K/32, 16] (element 2j in the low nibble of byte j) and float scales."""
    q = rng.integers(0, 16, (n, k // 32, 32), dtype=np.uint8)
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).astype(np.uint8)
    return packed, rng.uniform(0.001, 0.02, (n, k // 32)).astype(np.float32)


def _dequantized(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    q = np.empty((*packed.shape[:2], 32), np.float64)
    q[:, :, 0::2], q[:, :, 1::2] = packed & 15, packed >> 4
    return ((q - 8) * scales[:, :, None]).reshape(packed.shape[0], -1)  # [N, K]


def _product_model(
    k: int, n: int, weights_as_inputs: bool = False, packed=None, scales=None, bias=None
) -> onnx.ModelProto:
    """One MatMulNBits as the int4 scheme writes it (then a bias Add, if given), rewritten into the function's
    call (which takes the Add in)."""
    product = "P" if bias is not None else "Y"
    node = helper.make_node(
        "MatMulNBits", ["A", "B", "scales"], [product], domain=MS_DOMAIN, K=k, N=n, **matmul_kernel.ATTRIBUTES
    )
    nodes = [node] + ([helper.make_node("Add", [product, "bias"], ["Y"])] if bias is not None else [])
    inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, None)]
    inits = []
    if weights_as_inputs:
        inputs += [
            helper.make_tensor_value_info("B", TensorProto.UINT8, None),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, None),
        ]
    else:
        inits = [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales.reshape(-1), "scales")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
    graph = helper.make_graph(nodes, "product", inputs, [helper.make_tensor_value_info("Y", 1, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    if not weights_as_inputs:
        assert matmul_kernel.rewrite(model) == 1
        (call,) = model.graph.node  # the Add, if any, taken in
        assert list(call.input) == ["A", "B", "scales"] + (["bias"] if bias is not None else [])
        assert call.op_type == (matmul_kernel.FUNCTION_BIAS if bias is not None else matmul_kernel.FUNCTION)
        assert [f.name for f in model.functions] == [call.op_type]  # only the functions used are declared
    else:  # (the rewrite needs float scales as initializers; the call is made by hand here)
        call = model.graph.node[0]
        call.op_type, call.domain = matmul_kernel.FUNCTION, native_kernels.DOMAIN
        del call.attribute[:]
        call.attribute.extend([helper.make_attribute("K", k), helper.make_attribute("N", n)])
        matmul_kernel.declare(model)
    return model


def _run(model: onnx.ModelProto, feeds: dict, library: Path | None, kernel: str = "1", threads: int = 1):
    return _run_profiled(model, feeds, library, kernel, threads)[0]


def _run_profiled(
    model: onnx.ModelProto,
    feeds: dict,
    library: Path | None,
    kernel: str = "1",
    threads: int = 1,
    profile=None,
) -> tuple[np.ndarray, set[str]]:
    """The output, and (with `profile`, a path prefix) the op types onnxruntime's profiler saw run."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profile is not None:
        options.enable_profiling, options.profile_file_prefix = True, str(profile)
    if library is not None:
        options.add_session_config_entry(native_kernels.MATMUL_CONFIG_KEY, kernel)
        options.register_custom_ops_library(str(library))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out = session.run(None, feeds)[0]
    if profile is None:
        return out, set()
    events = json.loads(Path(session.end_profiling()).read_text())
    return out, {
        e["args"]["op_name"] for e in events if e.get("cat") == "Node" and "op_name" in e.get("args", {})
    }


# (K, N, A's leading dims, a bias): a decode row; an odd number of blocks with rows not a multiple of four; prompts
# of three and five rows; a batch of 2 x 3 rows (a tile of four and one of two)
SHAPES = [
    (512, 36, (1, 1), True),
    (96, 7, (1, 1), False),
    (64, 9, (1, 3), True),
    (2304, 40, (1, 5), False),
    (256, 130, (2, 3), True),
]


@pytest.mark.parametrize(("k", "n", "lead", "with_bias"), SHAPES)
def test_kernel_matches_matmulnbits_and_float(
    kernel_library: Path, tmp_path: Path, k: int, n: int, lead: tuple, with_bias: bool
) -> None:
    rng = np.random.default_rng(k + n)
    packed, scales = _weights(rng, k, n)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    model = _product_model(k, n, packed=packed, scales=scales, bias=bias)
    a = rng.standard_normal((*lead, k)).astype(np.float32)
    own, ran = _run_profiled(model, {"A": a}, kernel_library, threads=2, profile=tmp_path / "own")
    body, body_ran = _run_profiled(model, {"A": a}, None, profile=tmp_path / "body")
    call = matmul_kernel.FUNCTION_BIAS if with_bias else matmul_kernel.FUNCTION
    assert ran == {call} and call not in body_ran and "MatMulNBits" in body_ran  # our kernel, else the body
    want = a.astype(np.float64) @ _dequantized(packed, scales).T + (0 if bias is None else bias)
    assert own.shape == body.shape == want.shape == (*lead, n)
    spread = np.abs(want).max()
    # the same arithmetic as MatMulNBits at accuracy level 4 (int8 activations per block): float rounding apart
    assert np.abs(own - body).max() < 1e-5 * spread
    assert np.abs(own - want).max() < 2e-2 * spread


def test_kernel_refuses_mismatched_inputs_and_is_off_when_asked(kernel_library: Path) -> None:
    rng = np.random.default_rng(0)
    packed, scales = _weights(rng, 64, 8)
    model = _product_model(64, 8, weights_as_inputs=True)
    feeds = {"A": rng.standard_normal((1, 64)).astype(np.float32), "B": packed, "scales": scales.reshape(-1)}
    assert _run(model, feeds, kernel_library).shape == (1, 8)
    with pytest.raises(Exception, match="MatMulInt4: B must be uint8"):
        _run(model, {**feeds, "B": packed[:7]}, kernel_library)
    with pytest.raises(Exception, match="MatMulInt4: scales must hold"):
        _run(model, {**feeds, "scales": scales.reshape(-1)[:-1]}, kernel_library)
    with pytest.raises(Exception, match="MatMulInt4: A's last dimension must be K = 64"):
        _run(model, {**feeds, "A": feeds["A"][:, :32]}, kernel_library)
    # with the entry "0" the library leaves the products to the function's body (onnxruntime's own error)
    with pytest.raises(Exception) as refused:
        _run(model, {**feeds, "B": packed[:7]}, kernel_library, kernel="0")
    assert "MatMulInt4:" not in str(refused.value)


def test_choice_follows_the_cpu_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native_kernels.MATMUL_ENV, raising=False)
    for flags, want in ((frozenset({"avx2", "fma"}), True), (frozenset({"avx2", "avx512_vnni"}), False),
                        (frozenset({"avx2", "avx_vnni"}), False), (None, False)):  # fmt: skip
        monkeypatch.setattr(native_kernels, "_cpu_flags", lambda flags=flags: flags)
        assert native_kernels.matmul_int4_choice()[0] is want
    monkeypatch.setenv(native_kernels.MATMUL_ENV, "on")
    assert native_kernels.matmul_int4_choice() == (True, f"{native_kernels.MATMUL_ENV}=on")
    monkeypatch.setenv(native_kernels.MATMUL_ENV, "off")
    assert native_kernels.matmul_int4_choice()[0] is False
    monkeypatch.setenv(native_kernels.MATMUL_ENV, "fast")
    with pytest.raises(native_kernels.KernelLibraryError, match="use on, off or auto"):
        native_kernels.matmul_int4_choice()


def test_int4_package_calls_the_kernel_and_answers_alike(
    kernel_library: Path,
    tiny_package: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every 4-bit product of an int4 package is a call of the function; its decoder through the runtime's
    loader with our products on and off: teacher-forced logits equal to float rounding."""
    pkg = tmp_path_factory.mktemp("matmul_pkg") / "int4"
    quantize_package(tiny_package, pkg, "int4")
    decoder = onnx.load(str(pkg / "decoder.onnx"), load_external_data=False)
    assert matmul_kernel.uses_kernel(decoder) > 0
    assert not [n for n in decoder.graph.node if n.op_type == "MatMulNBits"]
    lib = str(kernel_library)
    logits = teacher_forced_logits(pkg, monkeypatch, {
        "off": {native_kernels.ENV: lib, native_kernels.MATMUL_ENV: "off"},
        "on": {native_kernels.ENV: lib, native_kernels.MATMUL_ENV: "on"},
    })  # fmt: skip
    off, on = logits["off"], logits["on"]
    assert float(np.abs(on - off).max()) < 1e-4 * float(np.abs(off).max())


def test_rewrite_takes_in_only_a_bias_add_that_alone_reads_the_product() -> None:
    """The Add is taken in only where it is the product's one reader and adds a constant float [N]."""
    rng = np.random.default_rng(3)
    packed, scales = _weights(rng, 64, 8)

    def model(extra_reader: bool, bias_shape: tuple) -> onnx.ModelProto:
        nodes = [
            helper.make_node("MatMulNBits", ["A", "B", "scales"], ["P"], domain=MS_DOMAIN, K=64, N=8,
                             **matmul_kernel.ATTRIBUTES),
            helper.make_node("Add", ["P", "bias"], ["Y"]),
        ] + ([helper.make_node("Relu", ["P"], ["R"])] if extra_reader else [])  # fmt: skip
        inits = [
            numpy_helper.from_array(packed, "B"),
            numpy_helper.from_array(scales.reshape(-1), "scales"),
            numpy_helper.from_array(np.ones(bias_shape, np.float32), "bias"),
        ]
        outs = [helper.make_tensor_value_info(o, 1, None) for o in ("Y", "R")[: 1 + extra_reader]]
        ins = [helper.make_tensor_value_info("A", TensorProto.FLOAT, None)]
        return helper.make_model(helper.make_graph(nodes, "g", ins, outs, inits), ir_version=10)

    for extra_reader, shape, taken in ((False, (8,), True), (True, (8,), False), (False, (1, 8), False)):
        m = model(extra_reader, shape)
        assert matmul_kernel.rewrite(m) == 1
        assert any(n.op_type == "Add" for n in m.graph.node) is not taken
        assert len(m.graph.node[0].input) == 3 + taken
        assert m.graph.node[0].op_type == (matmul_kernel.FUNCTION_BIAS if taken else matmul_kernel.FUNCTION)
