"""Adversarial cases (issue 20): interruptions at any point, state changes during a turn, hostile packages and
snapshots, values at the edge of what the API takes.

Each test names the case it pins down; docs/security.md lists what is refused and how.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import struct
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from package_copies import copy_package

from rxt_edge import ConversationBusyError, ManifestError, MemoryUpdateError, RxTSession, SnapshotError
from rxt_edge import conversation as conversation_module
from rxt_edge.decoding import DecodeSlot
from rxt_edge.engine import SessionClosedError
from rxt_edge.manifest import MANIFEST_FILE, Manifest, load_manifest, sha256_file, write_manifest
from rxt_edge.package import load_package
from rxt_edge.sampling import GenerationConfig, SamplingConfig, sample_next
from rxt_edge.snapshot import MAGIC, SNAPSHOT_VERSION, load_snapshot, save_snapshot

QUERY = "Where do I live?"
TOKENS = 3


@pytest.fixture(scope="module")
def session(tiny_package):
    with RxTSession.load(tiny_package, threads=1) as s:
        yield s


def edit_manifest(pkg: Path, edit) -> None:
    """Apply `edit` to the manifest JSON, then make every hash and size match the files again."""
    data = json.loads((pkg / MANIFEST_FILE).read_text())
    edit(data)
    for g in data["graphs"].values():
        g["sha256"], g["size"] = sha256_file(pkg / g["file"]), (pkg / g["file"]).stat().st_size
    data["initial_stm"]["sha256"] = sha256_file(pkg / data["initial_stm"]["file"])
    data["initial_stm"].pop("size", None)
    if data["tokenizer"].get("sha256"):
        data["tokenizer"]["sha256"] = sha256_file(pkg / data["tokenizer"]["file"])
    write_manifest(pkg, Manifest.from_json(data))


def finishes(fn, timeout: float = 60.0):
    """fn()'s result or exception, or a failure if it blocks (a FIFO opened for reading waits for a writer)."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"blocked for {timeout} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


# ---------------------------------------------------------------- 2: a turn is all or nothing


_OURS = (str(Path(conversation_module.__file__).parent), contextlib.__file__)


class _Interrupt:
    """A profiler that raises KeyboardInterrupt at the k-th signal check point of rxt_edge code.

    CPython runs a Ctrl-C handler where it checks for signals: at a Python function's entry and after a call
    returns. `sys.setprofile` sees exactly those points ("call", "return", "c_return"): counting the ones in
    frames of rxt_edge code (and of contextlib, whose `__enter__` runs our context managers) models a Ctrl-C
    that can land anywhere in our code; the rest of the standard library and numpy are taken as they are."""

    EVENTS = ("call", "return", "c_return")

    def __init__(self, at: int | None):
        self.at, self.seen = at, 0

    def __call__(self, frame, event, arg):
        code = frame.f_code
        if event == "return" and code.co_flags & inspect.CO_GENERATOR:
            return  # a yield: a signal lands in the caller, after the generator is suspended (next event)
        if event in self.EVENTS and code.co_filename.startswith(_OURS):
            self.seen += 1
            if self.seen == self.at:
                # A real handler holds no frame: keeping `frame` alive in this traceback would keep a
                # generator it interrupted from being closed (and its `with` blocks from exiting).
                del frame
                raise KeyboardInterrupt(f"injected at check point {self.at}")

    def run(self, fn) -> bool:
        """fn() under the profiler; True when it was interrupted."""
        sys.setprofile(self)
        try:
            fn()
        except KeyboardInterrupt:
            return True
        finally:
            sys.setprofile(None)
        return False


def _sample(n: int, k: int, seed: int) -> list[int]:
    """k check points spread over 1..n, the first and last ones always included."""
    rng = random.Random(seed)
    edges = set(range(1, min(n, 12) + 1)) | set(range(max(1, n - 12), n + 1))
    return sorted(edges | set(rng.sample(range(1, n + 1), min(n, k))))


def _assert_not_stuck(session, conv) -> None:
    assert not conv._turn_lock.locked() and conv._turn_owner is None
    assert not conv._memory_lock.locked()
    assert all(lessee is None for lessee in session.engine._lessees)  # every decode slot is back
    assert not session.engine.commit_lock.locked()


def test_ctrl_c_anywhere_in_say_is_all_or_nothing(session):
    """Issue 20.2: KeyboardInterrupt at every kind of point of say() (lock, prefill, sampling, stats, submit):
    the conversation is never left locked, and it counts the turn exactly when its STM has it."""
    warm = session.conversation()
    warm.say("I live in Paris.", TOKENS)
    before = warm.stm()
    control = session.conversation(stm=before)
    control.say(QUERY, TOKENS)
    after = control.stm()
    probe = _Interrupt(None)
    conv = session.conversation(stm=before)
    assert not probe.run(lambda: conv.say(QUERY, TOKENS))
    outcomes = set()
    for k in _sample(probe.seen, 150, seed=20):
        conv = session.conversation(stm=before)
        conv.turns = 1
        interrupted = _Interrupt(k).run(lambda c=conv: c.say(QUERY, TOKENS))
        assert interrupted, k
        _assert_not_stuck(session, conv)
        stm = conv.stm()  # waits for an update the turn queued
        if conv.turns == 2:
            assert stm.tobytes() == after.tobytes(), f"check point {k}: counted, but the STM lacks the turn"
        else:
            assert conv.turns == 1 and stm.tobytes() == before.tobytes(), f"check point {k}: a partial turn"
        outcomes.add(conv.turns)
    assert outcomes == {1, 2}  # interrupts landed both before and after the commit
    conv.say(QUERY, TOKENS)  # and the conversation goes on


def test_ctrl_c_anywhere_in_reset_keeps_stm_and_turns_together(session):
    conv = session.conversation()
    conv.say("I live in Paris.", TOKENS)
    before, initial = conv.stm(), session.package.initial_stm
    probe = _Interrupt(None)
    assert not probe.run(conv.reset)
    outcomes = set()
    for k in range(1, probe.seen + 1):
        conv = session.conversation(stm=before)
        conv.turns = 1
        assert _Interrupt(k).run(conv.reset), k
        _assert_not_stuck(session, conv)
        stm = conv.stm()
        if conv.turns == 0:
            assert np.array_equal(stm, initial), f"check point {k}: zero turns, old STM"
        else:
            assert conv.turns == 1 and stm.tobytes() == before.tobytes(), (
                f"check point {k}: STM reset, turns kept"
            )
        outcomes.add(conv.turns)
    assert outcomes == {0, 1}


# ---------------------------------------------------------------- 3: state changes during an open turn


def test_state_changes_while_a_stream_is_open_in_this_thread_are_refused(session, tmp_path):
    conv = session.conversation()
    conv.say("I live in Paris.", TOKENS)
    before = conv.stm()
    control = session.conversation(stm=before)
    expected = control.say(QUERY, TOKENS)
    it = conv.stream(QUERY, TOKENS)
    first = next(it)
    for change in (
        conv.reset,
        lambda: conv.set_stm(before),
        lambda: conv.set_system_prompt("Be brief."),
        lambda: conv.save(tmp_path / "x.snap"),
        lambda: conv.say("again", TOKENS),
    ):
        with pytest.raises(ConversationBusyError, match="still being generated in this thread"):
            change()
    assert first + "".join(it) == expected  # the answer of the old memory ...
    assert conv.turns == 2 and conv.stm().tobytes() == control.stm().tobytes()  # ... went into the old memory
    assert not (tmp_path / "x.snap").exists()
    conv.reset()  # the stream is finished: allowed again
    assert conv.turns == 0 and np.array_equal(conv.stm(), session.package.initial_stm)


def test_a_reset_from_another_thread_waits_for_the_open_turn(session):
    conv = session.conversation()
    it = conv.stream(QUERY, TOKENS)
    next(it)
    t = threading.Thread(target=conv.reset)
    t.start()
    t.join(0.3)
    assert t.is_alive()  # serialised: waits for the turn
    "".join(it)
    t.join(30)
    assert not t.is_alive()
    assert conv.turns == 0 and np.array_equal(conv.stm(), session.package.initial_stm)


def test_turn_on_a_closed_session_fails_before_generating(tiny_package, monkeypatch, tmp_path):
    s = RxTSession.load(tiny_package, threads=1)
    conv = s.conversation()
    conv.save(tmp_path / "c.snap")
    runs = []
    real = DecodeSlot._run
    monkeypatch.setattr(DecodeSlot, "_run", lambda self, n: runs.append(n) or real(self, n))
    s.close()
    for call in (lambda: conv.say(QUERY, TOKENS), lambda: list(conv.generate_ids([40, 41], TOKENS))):
        with pytest.raises(SessionClosedError, match="session is closed"):
            call()
    with pytest.raises(SessionClosedError):
        conv.set_system_prompt("Be brief.")
    with pytest.raises(SessionClosedError):
        s.conversation()
    with pytest.raises(SessionClosedError):
        s.restore(tmp_path / "c.snap")
    assert runs == [] and conv.turns == 0
    s.close()  # twice is fine


# ---------------------------------------------------------------- 4: graph I/O checked by dtype and shape


def test_float16_manifest_over_float32_graphs_is_refused_at_load(tiny_package, tmp_path):
    pkg = copy_package(tiny_package, tmp_path / "pkg")

    def to_fp16(data):
        for g in data["graphs"].values():
            for t in g["inputs"] + g["outputs"]:
                if t["dtype"] == "float32":
                    t["dtype"] = "float16"

    edit_manifest(pkg, to_fp16)
    with pytest.raises(
        ManifestError,
        match=r"graphs\.\w+\.(in|out)puts\[\d+\] \(.*\): the graph's type is tensor\(float\), the manifest declares float16",
    ):
        RxTSession.load(pkg)


def _encoder_of_other_width(real: Path, layers: int, width: int) -> bytes:
    """An encoder with the contract's I/O names but `encoded` of another width (ops the real one uses)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    opsets = onnx.load(str(real), load_external_data=False).opset_import
    shape = numpy_helper.from_array(np.array([layers, 1, 1, width], np.int64), "shape")
    axes = numpy_helper.from_array(np.array([0, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["f", "axes"], ["u"]),
        helper.make_node("Expand", ["u", "shape"], ["encoded"]),
    ]
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("encoded", TensorProto.FLOAT, [layers, "batch", "seq", width])],
        initializer=[shape, axes],
    )
    return helper.make_model(graph, opset_imports=list(opsets)).SerializeToString()


def test_encoder_with_the_same_names_but_other_shapes_is_refused_at_load(tiny_package, tmp_path):
    from rxt_edge.apps.chat import ChatError, open_chat

    pkg = copy_package(tiny_package, tmp_path / "pkg")
    d = load_package(pkg).manifest.model
    (pkg / "encoder.onnx").write_bytes(
        _encoder_of_other_width(pkg / "encoder.onnx", d.memory_layers, d.dim + 8)
    )
    edit_manifest(pkg, lambda data: None)
    pattern = rf"graphs\.encoder\.outputs\[0\] \(encoded\): the graph's shape is \[{d.memory_layers}, 'batch', 'seq', {d.dim + 8}\]"
    with pytest.raises(ManifestError, match=pattern):
        RxTSession.load(pkg)
    with pytest.raises(ChatError, match=pattern):  # `rxt-edge chat` prints the error, no traceback
        open_chat(pkg)


def test_failed_synchronous_memory_write_is_a_memory_update_error(session, monkeypatch):
    conv = session.conversation()
    before = conv.stm()
    real = session.graphs.run

    def run(name, binding):
        if name == "memory_update":
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions")
        return real(name, binding)

    monkeypatch.setattr(session.graphs, "run", run)
    with pytest.raises(MemoryUpdateError, match="memory is unchanged: RuntimeError: .*INVALID_ARGUMENT"):
        conv.set_system_prompt("Be brief.")
    monkeypatch.undo()
    assert conv.stm().tobytes() == before.tobytes() and conv.turns == 0


# ---------------------------------------------------------------- 5: hostile files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", [MANIFEST_FILE, "initial_stm.npy", "tokenizer.json"])
@pytest.mark.parametrize("verify", [True, False])
def test_a_fifo_in_the_package_is_refused_without_blocking(tiny_package, tmp_path, name, verify):
    pkg = copy_package(tiny_package, tmp_path / "pkg")
    (pkg / name).unlink()
    os.mkfifo(pkg / name)
    with pytest.raises(ManifestError, match="is not a regular file"):
        finishes(lambda: load_package(pkg, verify_hashes=verify))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_load_manifest_alone_refuses_a_fifo_without_blocking(tmp_path):
    """bench, info and verify read manifests without load_package's checks"""
    os.mkfifo(tmp_path / MANIFEST_FILE)
    with pytest.raises(ManifestError, match="is not a regular file"):
        finishes(lambda: load_manifest(tmp_path))


def test_huge_max_seq_len_is_refused_before_allocating(tiny_package, tmp_path):
    pkg = copy_package(tiny_package, tmp_path / "pkg")
    old = load_manifest(pkg).model.max_seq_len

    def huge(data):  # the static KV cache declares max_seq_len in its shapes: a consistent hostile manifest
        data["model"]["max_seq_len"] = 2**31 - 1
        for t in data["graphs"]["decoder"]["inputs"] + data["graphs"]["decoder"]["outputs"]:
            t["shape"] = [2**31 - 1 if d == old else d for d in t["shape"]]

    edit_manifest(pkg, huge)
    with pytest.raises(ManifestError, match=r"max_seq_len 2147483647.* GiB, more than this machine's"):
        RxTSession.load(pkg)


def test_huge_vocab_is_refused_against_the_graph(tiny_package, tmp_path):
    pkg = copy_package(tiny_package, tmp_path / "pkg")

    def vocab(data):
        data["model"]["vocab_size"] = 2**31 - 1
        data["graphs"]["decoder"]["outputs"][0]["shape"][1] = 2**31 - 1

    edit_manifest(pkg, vocab)
    with pytest.raises(
        ManifestError, match=r"(logits\): the graph's shape is \['batch', 300\])|(GiB, more than)"
    ):
        RxTSession.load(pkg)


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_npy_header_claiming_terabytes_is_refused_before_reading(tiny_package, tmp_path):
    pkg = copy_package(tiny_package, tmp_path / "pkg")
    shape = load_package(pkg).initial_stm.shape
    (pkg / "initial_stm.npy").write_bytes(_npy_header((4, 1, 2**19, 2**18)) + b"\0" * 64)  # 1 TiB claimed
    with pytest.raises(ManifestError, match=r"initial_stm: shape \(4, 1, 524288, 262144\) does not match"):
        load_package(pkg, verify_hashes=False)
    (pkg / "initial_stm.npy").write_bytes(_npy_header(shape) + b"\0" * 64)  # the right shape, no data
    with pytest.raises(ManifestError, match="initial_stm: initial_stm.npy is truncated"):
        load_package(pkg, verify_hashes=False)


def test_large_file_that_is_not_a_snapshot_is_not_read(session, tmp_path):
    big = tmp_path / "movie.mkv"
    with open(big, "wb") as f:
        f.truncate(8 << 30)  # sparse: 8 GiB of zeros that would take seconds and 8 GiB of memory to read
    with pytest.raises(SnapshotError, match="not an rxt-edge snapshot"):
        finishes(lambda: session.restore(big), timeout=10)
    with open(big, "r+b") as f:  # a snapshot prefix declaring a payload no STM of this model has
        f.write(struct.pack("<8sIIQ", MAGIC, SNAPSHOT_VERSION, 64, 8 << 30))
    with pytest.raises(SnapshotError, match="more than this model's STM can hold"):
        finishes(lambda: session.restore(big), timeout=10)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_restore_from_a_fifo_is_refused_without_blocking(session, tmp_path):
    os.mkfifo(tmp_path / "snap")
    with pytest.raises(SnapshotError, match="not a regular file"):
        finishes(lambda: session.restore(tmp_path / "snap"), timeout=10)


# ---------------------------------------------------------------- 6: the API's own errors


def test_unreadable_package_files_are_manifest_errors(tiny_package, tmp_path, monkeypatch):
    """Tests run as root (who reads everything), so the refusal is simulated where the OS would give it."""
    import rxt_edge.manifest as manifest_module

    pkg = copy_package(tiny_package, tmp_path / "pkg")

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as m:
        m.setattr(manifest_module, "sha256_file", denied)
        with pytest.raises(ManifestError, match="cannot read .*: Permission denied"):
            load_package(pkg)
    real_access = os.access
    with monkeypatch.context() as m:
        m.setattr(os, "access", lambda p, mode: Path(p).name != "tokenizer.json" and real_access(p, mode))
        with pytest.raises(
            ManifestError, match=r"tokenizer(\.file)?: cannot read 'tokenizer.json': permission denied"
        ):
            load_package(pkg)


def _raw_snapshot(path: Path, stm: np.ndarray, fingerprint: str, metadata: dict) -> None:
    """A well-formed snapshot written without the writer's checks (what another program could write)."""
    import hashlib

    header = json.dumps(
        {"fingerprint": fingerprint, "dtype": stm.dtype.name, "shape": list(stm.shape), "metadata": metadata}
    ).encode()
    payload = np.ascontiguousarray(stm).tobytes()
    body = struct.pack("<8sIIQ", MAGIC, SNAPSHOT_VERSION, len(header), len(payload)) + header + payload
    path.write_bytes(body + hashlib.sha256(body).digest())


@pytest.mark.parametrize("turns", ["three", None, [1], -4, True, 2.5])
def test_bad_turn_counts_are_refused_on_save_and_on_restore(session, tmp_path, turns):
    conv = session.conversation()
    with pytest.raises(SnapshotError, match="metadata.turns must be an integer >= 0"):
        conv.save(tmp_path / "s.snap", metadata={"turns": turns})
    assert not (tmp_path / "s.snap").exists()
    _raw_snapshot(tmp_path / "s.snap", conv.stm(), session.package.fingerprint, {"turns": turns})
    with pytest.raises(SnapshotError, match="metadata.turns must be an integer >= 0"):
        session.restore(tmp_path / "s.snap")


def test_float16_snapshot_is_cast_back_and_nan_is_refused(session, tmp_path):
    conv = session.conversation()
    stm = conv.stm()
    save_snapshot(tmp_path / "half.snap", stm.astype(np.float16), session.package.fingerprint, {"turns": 0})
    restored = session.restore(tmp_path / "half.snap").stm()  # what Conversation.save(dtype="float16") writes
    assert restored.dtype == np.float32
    assert np.array_equal(restored, stm.astype(np.float16).astype(np.float32))
    stm.flat[7] = np.nan
    with pytest.raises(SnapshotError, match="NaN or Inf"):
        save_snapshot(tmp_path / "nan.snap", stm, session.package.fingerprint)
    _raw_snapshot(tmp_path / "nan.snap", stm, session.package.fingerprint, {"turns": 0})
    with pytest.raises(SnapshotError, match="NaN or Inf"):
        session.restore(tmp_path / "nan.snap")


def test_float16_save_halves_the_snapshot_and_refuses_what_it_cannot_store(session, tmp_path):
    conv = session.conversation()
    conv.say("I live in Paris.", TOKENS)
    conv.save(tmp_path / "32.snap")
    conv.save(tmp_path / "16.snap", dtype="float16")
    stm16, meta = load_snapshot(tmp_path / "16.snap", session.package.fingerprint, session.package.stm_shape)
    assert stm16.dtype == np.float16 and meta["turns"] == 1
    # the STM bytes: the file less its 24-byte prefix and 32-byte checksum (and a few bytes of JSON header)
    payload = {n: (tmp_path / n).stat().st_size - 24 - 32 for n in ("32.snap", "16.snap")}
    assert payload["16.snap"] < 0.55 * payload["32.snap"]
    restored = session.restore(tmp_path / "16.snap")
    assert restored.turns == 1 and restored.stm().dtype == np.float32
    assert np.array_equal(restored.stm(), conv.stm().astype(np.float16).astype(np.float32))
    for bad in ("int8", "bfloat16", "fp16", 3):
        with pytest.raises(SnapshotError, match="dtype must be one of"):
            conv.save(tmp_path / "bad.snap", dtype=bad)
    big = conv.stm()
    big.flat[5] = 1e6  # beyond float16's 65504: refused, never stored as Inf
    conv.set_stm(big)
    with pytest.raises(SnapshotError, match="do not fit in float16"):
        conv.save(tmp_path / "bad.snap", dtype="float16")
    assert not (tmp_path / "bad.snap").exists()
    conv.save(tmp_path / "bad.snap", dtype="float32")  # float32 holds it
    assert session.restore(tmp_path / "bad.snap").stm().flat[5] == 1e6


def test_a_snapshot_name_near_the_file_system_limit_works(session, tmp_path):
    conv = session.conversation()
    conv.say("I live in Paris.", TOKENS)
    path = tmp_path / ("s" * 243 + ".snap")  # 248 bytes; the limit is 255
    conv.save(path)
    restored = session.restore(path)
    assert restored.turns == 1 and restored.stm().tobytes() == conv.stm().tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_tokenizer_larger_than_the_model_is_refused_at_load(tiny_package, tmp_path):
    from tiny_tokenizer import write_tokenizer

    pkg = copy_package(tiny_package, tmp_path / "pkg")
    write_tokenizer(pkg / "tokenizer.json", vocab_size=1000)  # more than the model's 300
    edit_manifest(pkg, lambda data: None)
    with pytest.raises(
        ManifestError,
        match=r"tokenizer: 'tokenizer.json' has \d+ tokens, more than the model's vocabulary \(300\)",
    ):
        load_package(pkg)


def test_text_answers_never_use_ids_the_tokenizer_lacks(tiny_package, tmp_path, monkeypatch):
    """A model vocabulary padded past the tokenizer (the benchmark presets do this): the text API never samples
    an id without text, so the answer decodes; the id API still sees the whole vocabulary."""
    from tiny_tokenizer import write_tokenizer

    pkg = copy_package(tiny_package, tmp_path / "pkg")
    write_tokenizer(pkg / "tokenizer.json", vocab_size=280)
    edit_manifest(pkg, lambda data: None)
    with RxTSession.load(pkg, threads=1) as s:
        n = s.package.tokenizer.vocab_size
        if max(s.package.manifest.special_tokens.values()) >= n:
            pytest.skip("the small tokenizer lacks a special token")
        real = DecodeSlot._run

        def padded_id_wins(self, n):
            logits = real(self, n)
            logits[299] = 100.0  # an id the tokenizer has no text for
            return logits

        monkeypatch.setattr(DecodeSlot, "_run", padded_id_wins)
        conv = s.conversation()
        assert conv.interact_ids([40, 41], TOKENS) == [299] * TOKENS
        ids = []
        monkeypatch.setattr(conversation_module.DecodeStream, "push", lambda self, i: ids.append(i) or "x")
        assert conv.say(QUERY, TOKENS)
        assert ids and max(ids) < n


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2.0, "3", 0, -1, True])
def test_max_new_tokens_is_checked_at_every_entry_point(session, monkeypatch, bad):
    runs = []
    monkeypatch.setattr(DecodeSlot, "_run", lambda self, n: runs.append(n))
    conv = session.conversation()
    calls = [
        lambda: conv.say(QUERY, bad),
        lambda: list(conv.stream(QUERY, max_new_tokens=bad)),
        lambda: conv.interact_ids([40, 41], bad),
        lambda: list(conv.generate_ids([40, 41], bad)),
        lambda: conv.say(QUERY, config=GenerationConfig(max_new_tokens=bad)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
            call()
    assert runs == [] and conv.turns == 0


def test_tiny_temperature_is_greedy_without_warnings(session):
    logits = np.random.default_rng(0).standard_normal(300).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in (5e-324, 1e-310, 1e-45):
            got = sample_next(logits, SamplingConfig(temperature=t), np.random.default_rng(1))
            assert got == int(np.argmax(logits))
        for penalty in (5e-324, 1e300):
            sample_next(
                logits,
                SamplingConfig(temperature=1.0, repetition_penalty=penalty),
                np.random.default_rng(1),
                [3, 4],
            )
        conv = session.conversation()
        greedy = session.conversation().say(QUERY, TOKENS)
        assert conv.say(QUERY, TOKENS, temperature=5e-324, seed=3) == greedy
