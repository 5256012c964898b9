"""The greedy pick in the graph (contract.NEXT_TOKEN, export/greedy_pick.py): GPU packages' decoders output the
argmax of their logits, the manifest says so (format_version 6), a greedy turn uses it and answers exactly as
the host's pick does, ids the host masks (EOS under ignore_eos) are picked again on the host, and NaN logits are
still refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from rxt_edge.export.quantize import quantize_package

from rxt_edge import RxTSession, contract
from rxt_edge.decoding import DecodeSlot
from rxt_edge.manifest import ManifestError, load_manifest
from rxt_edge.sampling import _argmax

QUERIES = [list(range(7, 7 + 5 * t)) for t in (1, 3, 2)]


@pytest.fixture(scope="module")
def fp16(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize_package(tiny_package, tmp_path_factory.mktemp("greedy_pick") / "fp16", "fp16").output


def _answers(package: Path, **kw) -> tuple[list[list[int]], np.ndarray]:
    with RxTSession.load(package, threads=1) as session:
        conv = session.conversation()
        answers = [list(conv.generate_ids(q, max_new_tokens=10, **kw)) for q in QUERIES]
        conv.wait_memory()
        return answers, conv.stm()


def test_fp16_decoders_output_the_pick_and_the_manifest_says_so(tiny_package: Path, fp16: Path) -> None:
    m = load_manifest(fp16)
    dec = m.graphs[contract.DECODER]
    assert dec.next_token and m.format_version == 6
    assert not any(e.next_token for name, e in m.graphs.items() if name != contract.DECODER)
    assert (dec.outputs[-1].name, dec.outputs[-1].dtype, dec.outputs[-1].shape) == (
        contract.NEXT_TOKEN,
        "int64",
        ("batch",),
    )
    assert not load_manifest(tiny_package).graphs[contract.DECODER].next_token  # CPU packages: no extra node
    graph = onnx.load(str(fp16 / dec.file), load_external_data=False).graph
    (node,) = [n for n in graph.node if contract.NEXT_TOKEN in n.output]
    assert node.op_type == "ArgMax" and node.input[0] == "logits"
    assert graph.output[-1].name == contract.NEXT_TOKEN
    from rxt_edge.apps.info import info_lines, package_info  # `rxt-edge info` says so

    assert "greedy picks in the decoder graph" in "\n".join(info_lines(package_info(fp16)))
    assert "greedy picks" not in "\n".join(info_lines(package_info(tiny_package)))


def test_the_graph_pick_is_the_argmax_of_its_logits(fp16: Path) -> None:
    with RxTSession.load(fp16, threads=1) as session:
        engine = session.engine
        memory = engine.new_memory()
        engine.install_stm(memory, session.conversation().stm())
        with engine.lease_slot(memory) as slot:
            assert slot.picks_greedy
            token = _argmax(slot.prefill([1, 5, 9, 13, 2]))
            picks = []
            for _ in range(12):
                pick = slot.step_greedy(token)
                assert pick == _argmax(slot.logits())
                picks.append(pick)
                token = pick
            assert len(set(picks)) > 1  # not a constant: the test could fail


def test_the_captured_slot_feeds_each_step_as_the_plain_slot_does(fp16: Path) -> None:
    """The CUDA-graph slot's step inputs (token id and seqlens_k in one buffer, one copy a step) and its pick,
    run on the CPU provider (which ignores the graph id): the plain slot's tokens, step for step."""
    from rxt_edge.captured_decoding import CapturedDecodeSlot
    from rxt_edge.engine import MemoryState

    with RxTSession.load(fp16, threads=1) as session:
        e = session.engine
        runs = []
        for slot in (
            DecodeSlot(e.graphs, e.buffers, e.dims, e.kv_cache),
            CapturedDecodeSlot(e.graphs, e.buffers, e.dims, MemoryState(e.dims, e.buffers, e.memory_kv), 1),
        ):
            memory = e.new_memory()
            e.install_stm(memory, session.conversation().stm())
            slot.start(memory)
            tokens = [_argmax(slot.prefill([1, 5, 9, 13, 2]))]
            for _ in range(12):
                tokens.append(slot.step_greedy(tokens[-1]))
            runs.append(tokens)
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


def test_a_greedy_turn_answers_as_the_host_pick_does(fp16: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    step_greedy = DecodeSlot.step_greedy
    monkeypatch.setattr(DecodeSlot, "step_greedy", lambda s, t: calls.append(t) or step_greedy(s, t))
    on_device = _answers(fp16)
    assert len(calls) >= sum(len(a) for a in on_device[0]) - len(QUERIES)  # every step after the first
    calls.clear()
    host = _answers(fp16, repetition_penalty=1.0 + 1e-9)  # not plain greedy: the host picks every token
    assert not calls
    assert on_device[0] == host[0]
    np.testing.assert_array_equal(on_device[1], host[1])


def test_an_id_the_host_masks_is_picked_again_on_the_host(
    fp16: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ignore_eos: where the graph picks [EOS], the host picks from the logits with [EOS] masked."""
    eos = load_manifest(fp16).special_tokens["eos"]
    host, _ = _answers(fp16, ignore_eos=True, repetition_penalty=1.0 + 1e-9)
    step_greedy, steps = DecodeSlot.step_greedy, []

    def eos_every_third(slot: DecodeSlot, token: int) -> int:
        steps.append(step_greedy(slot, token))
        return eos if len(steps) % 3 == 0 else steps[-1]

    monkeypatch.setattr(DecodeSlot, "step_greedy", eos_every_third)
    got, _ = _answers(fp16, ignore_eos=True)
    assert len(steps) >= 3 and got == host
    assert all(len(a) == 10 and eos not in a for a in got)


def test_nan_logits_are_refused_and_the_turn_is_not_stored(
    fp16: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DecodeSlot, "logits", lambda s: np.full(s._logits.shape[1], np.nan, s._logits.dtype))
    with RxTSession.load(fp16, threads=1) as session:
        conv = session.conversation()
        with pytest.raises(ValueError, match="NaN"):
            list(conv.generate_ids(QUERIES[0], max_new_tokens=4))
        assert conv.turns == 0


def _with_next_token(src: Path, dest: Path, graph: str) -> Path:
    """A copy of package `src` whose manifest says that `graph` outputs the greedy pick."""
    shutil.copytree(src, dest)
    raw = json.loads((dest / "manifest.json").read_text())
    raw["graphs"][graph]["next_token"] = True
    (dest / "manifest.json").write_text(json.dumps(raw))
    return dest


def test_a_pick_declared_where_it_cannot_be_is_refused(
    fp16: Path, tiny_package: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="decoder output"):
        contract.graph_io(load_manifest(fp16).model, contract.ENCODER, next_token=True)
    with pytest.raises(ManifestError, match="graphs.encoder.next_token"):
        load_manifest(_with_next_token(fp16, tmp_path / "encoder", contract.ENCODER))
    # a decoder that says it picks, without the output: the I/O check names it
    with pytest.raises(ManifestError, match="outputs"):
        load_manifest(_with_next_token(tiny_package, tmp_path / "decoder", contract.DECODER))
