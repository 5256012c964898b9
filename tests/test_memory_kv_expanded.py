"""The memory cross-attention K/V repeated per query head (the "expanded" form of fp16 packages,
export/memory_kv_heads.py): the K/V are the float form's heads repeated in grouped-query order, the decoder
answers as the folded one does, `verify` passes, the manifest records the form and the query heads, and what
cannot take the form is refused by name or left float."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from rxt_edge.export.graph_driver import GraphDriver
from rxt_edge.export.quantize import QuantizeError, default_memory_kv, quantize_package

from rxt_edge import RxTSession, contract
from rxt_edge.manifest import ManifestError, load_manifest


@pytest.fixture(scope="module")
def fp16(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("memory_kv_expanded")
    return {
        "expanded": quantize_package(tiny_package, root / "expanded", "fp16").output,  # the default form
        "float": quantize_package(tiny_package, root / "float", "fp16", memory_kv="float").output,
    }


def _query_heads(package: Path) -> int:
    """The memory attention's query heads, as the float package's decoder rotates them."""
    g = onnx.load(str(package / "decoder.onnx"), load_external_data=False).graph
    (heads,) = {
        a.i for n in g.node if n.op_type == "RotaryEmbedding" for a in n.attribute if a.name == "num_heads"
    }
    return heads


def test_fp16_defaults_to_the_expanded_form_and_records_it(fp16: dict[str, Path]) -> None:
    m, f = load_manifest(fp16["expanded"]), load_manifest(fp16["float"])
    hq = _query_heads(fp16["float"])
    assert hq > m.model.cross_kv_heads  # grouped: the form has something to do
    assert (m.model.cross_query_heads, f.model.cross_query_heads) == (hq, 0)
    assert (m.format_version, f.format_version) == (6, 6)  # fp16 decoders output their greedy pick (6)
    assert {g: e.memory_kv for g, e in m.graphs.items()} == {
        contract.DECODER: "expanded",
        contract.ENCODER: "float",
        contract.MEMORY_UPDATE: "expanded",
        contract.MEMORY_KV: "expanded",
    }
    d = m.model
    key = next(t for t in m.graphs[contract.DECODER].inputs if t.name == contract.memory_key(0))
    assert (key.dtype, key.shape) == ("float16", ("batch", hq, d.stm_slots, d.head_dim))
    g = onnx.load(str(fp16["expanded"] / "decoder.onnx")).graph
    produced = {o: n for n in g.node for o in n.output}
    mha = [n for n in g.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == d.memory_layers
    for n in mha:  # Hq heads, the query straight from RoPE: no fold Reshapes either side
        assert next(a.i for a in n.attribute if a.name == "num_heads") == hq
        assert produced[n.input[0]].op_type == "RotaryEmbedding"
        assert {r.op_type for r in g.node if n.output[0] in r.input} == {"MatMul"}
    for graph in (contract.DECODER, contract.MEMORY_UPDATE, contract.MEMORY_KV):
        onnx.checker.check_model(str(fp16["expanded"] / f"{graph}.onnx"), full_check=True)
    from rxt_edge.apps.info import info_lines, package_info  # `rxt-edge info` says so

    text = "\n".join(info_lines(package_info(fp16["expanded"])))
    assert f"{hq} memory query heads" in text and "memory K/V expanded" in text
    assert "query heads" not in "\n".join(info_lines(package_info(fp16["float"])))


def test_expanded_kv_repeat_each_kv_head_for_its_query_heads(fp16: dict[str, Path]) -> None:
    f, e = GraphDriver.load(fp16["float"], threads=1), GraphDriver.load(fp16["expanded"], threads=1)
    shape = np.load(fp16["float"] / "initial_stm.npy").shape
    stm = np.random.default_rng(0).standard_normal(shape).astype(np.float16)
    ref, got = f.memory_kv(stm), e.memory_kv(stm)
    groups = load_manifest(fp16["expanded"]).model.cross_query_heads // ref[0].shape[1]
    assert len(got) == len(ref)
    for want, have in zip(ref, got, strict=True):
        assert have.shape[1] == groups * want.shape[1]
        np.testing.assert_array_equal(have, np.repeat(want, groups, axis=1))  # head h reads K/V head h // G
        assert np.abs(want).max() > 0.1


def test_expanded_decoder_answers_as_the_folded_one(fp16: dict[str, Path]) -> None:
    """The same math in another head order: teacher-forced logits within float16 rounding, and whole
    conversations (greedy answers, then the STM) alike."""
    f, e = GraphDriver.load(fp16["float"], threads=1), GraphDriver.load(fp16["expanded"], threads=1)
    shape = np.load(fp16["float"] / "initial_stm.npy").shape
    stm = np.random.default_rng(1).standard_normal(shape).astype(np.float16)
    prompt = f.prompt([5, 17, 42, 99, 7])
    answer, _ = f.answer_logits(stm, prompt, None, 12)
    (_, lf), (_, le) = (d.answer_logits(stm, prompt, answer, 12) for d in (f, e))
    lf, le = np.asarray(lf, np.float32), np.asarray(le, np.float32)
    assert float(np.abs(lf - le).max()) <= 2e-3 * float(np.abs(lf).max())
    runs = []
    for package in (fp16["float"], fp16["expanded"]):
        with RxTSession.load(package, threads=1) as session:
            conv = session.conversation()
            answers = [list(conv.generate_ids(list(range(7, 7 + 5 * t)), max_new_tokens=12)) for t in (1, 3)]
            conv.wait_memory()
            runs.append((answers, conv.stm().astype(np.float32)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=0, atol=2e-3)


def test_verify_passes_on_the_expanded_package(tiny_package: Path, fp16: dict[str, Path]) -> None:
    from rxt_edge.export.checkpoints import load_checkpoint
    from rxt_edge.export.verify import verify_package

    model, _ = load_checkpoint(tiny_package.parent / "checkpoint")
    report = verify_package(fp16["expanded"], model, turns=2, max_new_tokens=6)
    assert report.passed, report


def test_forms_that_cannot_apply_are_refused_or_left_float(
    tiny_package: Path, cli_unfused_export, tmp_path: Path
) -> None:
    _, unfused = cli_unfused_export  # no fused memory attention to rewrite
    assert default_memory_kv(unfused, "fp16") == "float"
    with pytest.raises(QuantizeError, match="expanded needs the static-cache decoder"):
        quantize_package(unfused, tmp_path / "bad", "fp16", memory_kv="expanded")
    assert not (tmp_path / "bad").exists()
    assert default_memory_kv(tiny_package, "int8") == "float"  # a CPU scheme keeps the folded form


def test_manifest_without_the_query_heads_is_refused(fp16: dict[str, Path], tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(fp16["expanded"], pkg)
    data = json.loads((pkg / "manifest.json").read_text())
    del data["model"]["cross_query_heads"]
    (pkg / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="cross_query_heads"):
        load_manifest(pkg)
