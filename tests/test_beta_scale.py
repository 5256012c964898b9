"""The pieces that let a Beta-sized model go through export on a 24 GB machine, checked at tiny sizes:
streamed safetensors (writer and lazy reader), the Beta-shaped rxlm checkpoint writer, the lazy expert layout
fold (the same bytes as the eager one), and an export that releases the torch weights before the onnxruntime
checks (the same package). No test builds a Beta-sized model."""

from __future__ import annotations

import filecmp
import json
import struct
from pathlib import Path

import pytest
import torch
from model_configs import tiny_config
from rxt_edge.export.checkpoints import CheckpointError, load_checkpoint
from rxt_edge.export.checkpoints.safetensors_stream import LazyTensors, write_safetensors


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 5, generator=g),
        "b.bf16": torch.randn(4, 2, 3, generator=g).to(torch.bfloat16),
        "c.half": torch.randn(7, generator=g).half(),
        "d.ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e.mask": torch.tensor([True, False, True]),
        "f.scalar": torch.tensor(2.5),
        "g.empty": torch.zeros(0, 4),
    }


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    specs = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    return write_safetensors(path, specs, lambda name, shape, dtype: tensors[name].clone())


def test_streamed_safetensors_round_trip_and_interoperate(tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = _tensors()
    ours = tmp_path / "ours.safetensors"
    assert _write(ours, tensors) == ours.stat().st_size
    lazy = LazyTensors(ours)
    assert sorted(lazy) == sorted(tensors) and len(lazy) == len(tensors)
    theirs = load_file(str(ours))  # the reference implementation reads what we stream out
    for name, t in tensors.items():
        assert lazy.shape(name) == tuple(t.shape)
        assert torch.equal(lazy[name], t) and lazy[name].dtype == t.dtype
        assert torch.equal(theirs[name], t)
    ref = tmp_path / "ref.safetensors"
    save_file(tensors, str(ref))
    prefixed = LazyTensors(ref, prefix="model.")  # and we read what it writes
    assert "model.a.weight" in prefixed and "a.weight" not in prefixed
    for name, t in tensors.items():
        assert torch.equal(prefixed["model." + name], t)


def test_writer_refuses_a_tensor_unlike_its_header_and_leaves_no_file(tmp_path):
    out = tmp_path / "w.safetensors"
    with pytest.raises(ValueError, match="x: made torch.float32"):
        write_safetensors(out, [("x", (2, 2), torch.float16)], lambda n, s, d: torch.zeros(s))
    assert list(tmp_path.iterdir()) == []


def _corrupt(path: Path, how: str) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    if how == "truncated":
        path.write_bytes(raw[:-10])
    elif how == "short":
        path.write_bytes(raw[:5])
    elif how == "header_too_long":
        path.write_bytes(struct.pack("<Q", len(raw) * 2) + raw[8:])
    elif how == "not_json":
        path.write_bytes(raw[:8] + b"{" * n + raw[8 + n :])
    elif how == "offsets":
        header["a.weight"]["data_offsets"][1] += 4
        body = json.dumps(header, separators=(",", ":")).encode().ljust(n)
        path.write_bytes(raw[:8] + body[:n] + raw[8 + n :])
    elif how == "dtype":
        header["a.weight"]["dtype"] = "F8_E9"
        body = json.dumps(header, separators=(",", ":")).encode().ljust(n)
        path.write_bytes(raw[:8] + body[:n] + raw[8 + n :])


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", r"tensor 'g.empty'|tensor '.*' ends at byte .* \(file truncated\?\)"),
        ("short", "shorter than its 8-byte header"),
        ("header_too_long", "header of .* bytes in a file of"),
        ("not_json", "header is not JSON"),
        ("offsets", r"tensor 'a.weight': data_offsets .* do not fit F32 \[3, 5\]"),
        ("dtype", "malformed header entry for tensor 'a.weight'"),
    ],
)
def test_malformed_safetensors_is_a_checkpoint_error_naming_the_file(tmp_path, how, message):
    path = tmp_path / "model.safetensors"
    _write(path, _tensors())
    _corrupt(path, how)
    with pytest.raises(CheckpointError, match=rf"{path}.*{message}"):
        LazyTensors(path)


def test_truncated_checkpoint_fails_loading_with_the_file_named(tmp_path):
    from rxt_edge.export.checkpoints import save_native
    from rxt_edge.export.model import RxTModel

    save_native(RxTModel(tiny_config()).eval(), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=rf"{weights}: tensor .* \(file truncated\?\)"):
        load_checkpoint(tmp_path)


def test_beta_checkpoint_is_what_rxlm_and_our_reader_load(tmp_path, monkeypatch):
    """The streamed Beta-shaped checkpoint (tiny dims) is rxlm's own format: rxlm's from_pretrained finds every
    tensor in it but the RoPE tables (which rxlm computes when it builds the model and we ignore), and our
    reader gives the same weights (bf16 on disk, widened exactly)."""
    pytest.importorskip("rxlm", reason="rxlm (test oracle) is not installed")
    import rxlm_reference as ref

    state = ref._persistent_state
    monkeypatch.setattr(
        ref, "_persistent_state", lambda m: {k: v for k, v in state(m).items() if ".rope." not in k}
    )
    from rxt_edge.bench.beta_checkpoint import write_beta_checkpoint
    from rxt_edge.export.checkpoints.rxlm import rxlm_names
    from rxt_edge.export.checkpoints.rxlm_twin import PREFIXES

    cfg = tiny_config(moe=True, stateless=1, variant="grouped-self-interlayer")
    out = write_beta_checkpoint(tmp_path / "ckpt", cfg, dtype="bf16", seed=3, progress=lambda s: None)
    ours, source = load_checkpoint(out)
    assert source.format == "rxlm" and source.tokenizer_file == out / "tokenizer.json"
    rx = ref.load_rxlm_checkpoint(out)  # raises if any rxlm tensor is neither in the file nor an alias
    theirs = rx.state_dict()
    names = rxlm_names(ours, "grouped-self-interlayer", PREFIXES)
    checked = 0
    for key, value in ours.state_dict().items():
        cand = next((c for c in names(key) if c in theirs), None)
        if cand is not None and key != "initial_stm":  # rxlm's from_pretrained + share_components resets it
            assert torch.equal(theirs[cand].float(), value), key
            checked += 1
    assert checked > 50
    assert torch.equal(
        ours.initial_stm, LazyTensors(out / "model.safetensors")["decoder.model.stm.memory"].float()
    )


def test_narrow_experts_reference_keeps_bf16_stacks_and_computes_the_same(tmp_path):
    """verify's reference (load_checkpoint(narrow_experts=True)) keeps a bf16 checkpoint's expert stacks in bf16
    (half their memory) and still computes exactly what the widened model computes: answers, step logits and the
    memory update, bit for bit (each selected expert is widened to fp32 before use)."""
    from rxt_edge.bench.beta_checkpoint import write_beta_checkpoint
    from rxt_edge.export.layers import expert_stack_names, float_except_experts
    from rxt_edge.export.torch_chat import TorchConversation

    cfg = tiny_config(moe=True, stateless=1, variant="grouped-self-interlayer")
    out = write_beta_checkpoint(tmp_path / "ckpt", cfg, dtype="bf16", seed=5, progress=lambda s: None)
    wide, _ = load_checkpoint(out)
    narrow, _ = load_checkpoint(out, narrow_experts=True)
    narrow = float_except_experts(narrow)
    stacks = expert_stack_names(narrow)
    assert len(stacks) >= 4  # routed w1/w2 of every MoE layer at least
    state = narrow.state_dict()
    assert {k for k, v in state.items() if v.dtype == torch.bfloat16} == stacks
    assert all(
        v.dtype == torch.float32 for k, v in state.items() if k not in stacks and v.is_floating_point()
    )
    size = lambda m: sum(v.numel() * v.element_size() for v in m.state_dict().values())  # noqa: E731
    assert size(narrow) < size(wide)
    a, b = TorchConversation(wide), TorchConversation(narrow)
    for query in ([5, 9, 14, 3], [7, 7, 21]):
        ta, tb = a.generate(query, 6), b.generate(query, 6)
        assert ta.answer == tb.answer
        assert all(torch.equal(x, y) for x, y in zip(ta.step_logits, tb.step_logits, strict=True))
        assert torch.equal(a.update(ta.for_memory(a.sp)), b.update(tb.for_memory(b.sp)))
        assert torch.equal(a.stm, b.stm)


def _graph_before_fold(monkeypatch, tmp_path) -> tuple:
    """The decoder of a tiny MoE model whose expert weights are too big for the exporter's own folding,
    exported once and caught just before `fold_expert_layouts` (serialised, so it can be rebuilt twice)."""
    import onnx_ir as ir
    from rxt_edge.export import onnx_export
    from rxt_edge.export.model import RxTModel

    caught = []

    def catch(model, lazy=True):
        caught.append(ir.serde.serialize_model(model).SerializeToString())
        return 0

    monkeypatch.setattr(onnx_export, "fold_expert_layouts", catch)
    torch.manual_seed(0)
    model = RxTModel(tiny_config(dim=64, layers=1, moe=True)).eval()  # experts [4, 64, 128]: > 8192 values
    with torch.no_grad():
        onnx_export.export_graph(model, "decoder", tmp_path / "d.onnx", "fp32", 18, True, "static")
    return caught[0]


@pytest.mark.slow  # one decoder export (~15 s)
def test_lazy_expert_fold_writes_the_same_bytes_as_the_eager_fold(monkeypatch, tmp_path):
    import onnx
    import onnx_ir as ir
    from rxt_edge.export.moe_onnx import _layout_nodes, fold_expert_layouts

    raw = _graph_before_fold(monkeypatch, tmp_path)
    saved = {}
    for lazy in (False, True):
        model = ir.serde.deserialize_model(onnx.load_from_string(raw))
        assert fold_expert_layouts(model, lazy=lazy) > 0  # there were layout ops to fold
        assert not _layout_nodes(model)
        lazies = [v for v in model.graph.initializers.values() if isinstance(v.const_value, ir.LazyTensor)]
        assert bool(lazies) == lazy
        out = tmp_path / f"lazy_{lazy}" / "decoder.onnx"
        out.parent.mkdir()
        ir.save(model, out, external_data="decoder.onnx.data")  # the big-model path: external data
        saved[lazy] = out
    for name in ("decoder.onnx", "decoder.onnx.data"):
        assert filecmp.cmp(saved[False].parent / name, saved[True].parent / name, shallow=False), name


@pytest.mark.slow  # one package export (~20 s) beside the shared fixture's
def test_export_releasing_the_weights_writes_the_same_package(exported, tmp_path):
    """The low-memory export (weights freed, then the onnxruntime checks) is the usual export, byte for byte."""
    from rxt_edge.export.onnx_export import export_package

    done = exported("moe_stateless_revsqa")
    model, source = load_checkpoint(done.checkpoint)
    package = tmp_path / "package"
    steps = []
    export_package(model, source, package, release_weights=True, progress=steps.append)
    assert all(p.numel() == 0 for p in model.parameters())  # given up, as asked
    assert steps[-1] == "checking the memory_kv graph in onnxruntime" and len(steps) == 8
    for f in sorted(done.package.iterdir()):
        assert filecmp.cmp(f, package / f.name, shallow=False), f.name


def test_quantize_reads_deferred_experts_one_at_a_time_with_the_same_result(exported, tmp_path):
    """`quantize` leaves the expert weights of a big graph on disk until their node is converted: the QMoE
    graph is the one the all-in-memory load gives."""
    import onnx
    from onnx.external_data_helper import uses_external_data
    from rxt_edge.export.quantize_io import load_deferred, load_graph
    from rxt_edge.export.quantize_moe import quantize_experts

    src = exported("moe_stateless_revsqa").package / "decoder.onnx"
    big = tmp_path / "decoder.onnx"  # the same graph with every tensor external, as a Beta-sized one has
    onnx.save_model(
        onnx.load(src), big, save_as_external_data=True, location="decoder.onnx.data", size_threshold=0
    )
    eager = onnx.load(str(big), load_external_data=True)
    lazy = load_graph(big, defer_experts=True)
    moe_inputs = {i for n in lazy.graph.node if n.op_type == "MoE" for i in n.input[2:]}
    deferred = {t.name for t in lazy.graph.initializer if uses_external_data(t)}
    assert deferred and deferred <= moe_inputs  # only expert tensors stay on disk
    record = quantize_experts(eager, "int8")
    assert record["qmoe_nodes"] > 0
    assert quantize_experts(lazy, "int8", tmp_path) == record
    assert load_deferred(lazy, tmp_path) == 0  # every expert was converted: nothing left on disk
    assert lazy.SerializeToString() == eager.SerializeToString()
