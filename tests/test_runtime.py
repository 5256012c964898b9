"""The torch-free runtime (issue 4) against the torch model, on exported random-weight packages (CPU EP).

Token-for-token greedy equality over 5 turns, snapshots, the memory update off the user's path, threads,
interrupted turns, failed updates, input limits, providers, and the buffer scheme (in-place KV cache writes,
preallocated double-buffered STM).
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
import torch
from rxt_edge.export.torch_chat import TorchConversation

from rxt_edge import (
    MemoryUpdateError,
    PromptTooLongError,
    ProviderUnavailableError,
    RxTSession,
    SnapshotError,
    contract,
)
from rxt_edge import conversation as conversation_module
from rxt_edge.conversation import Conversation

FAST_CASES = ["moe_stateless_revsqa", "simple", "rxlm_alpha_sqa_moe"]
MAX_NEW = 16


def _queries(n: int, seed: int, vocab: int = 300) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(5, vocab, size=int(rng.integers(3, 12))).tolist() for _ in range(n)]


def _torch_answers(model, queries, stm=None, max_new=MAX_NEW) -> tuple[list[list[int]], list[np.ndarray]]:
    ref = TorchConversation(model, stm)
    answers, stms = [], []
    for q in queries:
        answers.append(ref.say(q, max_new))
        stms.append(ref.stm.numpy().copy())
    return answers, stms


def _stm_close(a: np.ndarray, b: np.ndarray) -> None:
    # float32 rounding, relative to the STM's largest value: the fused memory-write attention (one
    # MultiHeadAttention kernel) sums in another order than torch, and random rxlm weights grow the STM to ~800
    # (seen: 1.2e-4 of it on one element of 4096)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, atol=3e-4 * scale, rtol=0)


@pytest.fixture
def simple(exported):
    return exported("simple")


@pytest.fixture
def session(simple):
    with RxTSession.load(simple.package) as s:
        yield s


# --- equality with torch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAST_CASES)
def test_greedy_tokens_equal_torch_over_five_turns(exported, name):
    e = exported(name)
    queries = _queries(5, seed=11)
    expected, _ = _torch_answers(e.model, queries)
    assert len({t for a in expected for t in a}) >= 8  # varied answers: a meaningful comparison
    sp = e.model.cfg.special_tokens
    with RxTSession.load(e.package) as s:
        conv = s.conversation()
        for turn, (q, want) in enumerate(zip(queries, expected, strict=True), 1):
            before = torch.from_numpy(conv.stm())
            assert conv.interact_ids(q, max_new_tokens=MAX_NEW) == want, f"turn {turn}"
            # the STM written by the runtime = torch's update of the runtime's previous STM (compared one step
            # at a time: some random models amplify float32 rounding from turn to turn, in torch as much)
            prompt = contract.turn_prompt(sp, q)
            ended = len(want) < contract.answer_budget(MAX_NEW, len(prompt), s.dims.max_seq_len)
            ids = torch.tensor([contract.turn_interaction(sp, prompt, want, ended)])  # no [EOS] after a cut
            mask = torch.ones_like(ids)
            with torch.no_grad():
                new_stm = e.model.memory(before, e.model.encoder(ids, mask), mask)
            _stm_close(conv.stm(), new_stm.numpy())
        assert conv.turns == 5


def test_text_api_equals_torch(simple, session):
    tok = session.package.tokenizer
    texts = ["Hi, I'm Ann.", "What is my name?", "Where do I live?"]
    expected, _ = _torch_answers(simple.model, [tok.encode(t) for t in texts])
    conv = session.conversation()
    assert conv.say(texts[0], max_new_tokens=MAX_NEW) == tok.decode(expected[0])
    assert "".join(conv.stream(texts[1], max_new_tokens=MAX_NEW)) == tok.decode(expected[1])
    assert conv.say(texts[2], max_new_tokens=MAX_NEW) == tok.decode(expected[2])


# --- snapshots ------------------------------------------------------------------------------------------------


def test_snapshot_round_trip_continues_identically(simple, session, tmp_path):
    queries = _queries(5, seed=21)
    conv = session.conversation()
    for q in queries[:2]:
        conv.interact_ids(q, max_new_tokens=MAX_NEW)
    path = tmp_path / "chat.rxtsnap"
    conv.save(path)
    restored = session.restore(path)
    assert restored.turns == 2
    assert np.array_equal(restored.stm(), conv.stm())
    with RxTSession.load(simple.package) as other_session:  # a new process would see this
        restored_elsewhere = other_session.restore(path)
        later = [restored_elsewhere.interact_ids(q, max_new_tokens=MAX_NEW) for q in queries[2:]]
    original = [conv.interact_ids(q, max_new_tokens=MAX_NEW) for q in queries[2:]]
    again = [restored.interact_ids(q, max_new_tokens=MAX_NEW) for q in queries[2:]]
    expected, _ = _torch_answers(simple.model, queries)
    assert original == again == later == expected[2:]


def test_snapshot_of_another_model_is_refused(exported, session, tmp_path):
    conv = session.conversation()
    conv.interact_ids(_queries(1, 3)[0], max_new_tokens=4)
    path = tmp_path / "chat.rxtsnap"
    conv.save(path)
    with RxTSession.load(exported("moe_stateless_revsqa").package) as other:
        with pytest.raises(SnapshotError, match="different model"):
            other.restore(path)


# --- the memory update runs off the user's path ----------------------------------------------------------------


def test_answer_is_delivered_before_a_slow_update_finishes(simple, session, monkeypatch):
    delay = 1.5
    events: list[tuple[str, float]] = []
    original = Conversation._update_memory

    def slow_update(self, interaction):
        events.append(("update started", time.perf_counter()))
        time.sleep(delay)
        original(self, interaction)
        events.append(("update finished", time.perf_counter()))

    monkeypatch.setattr(Conversation, "_update_memory", slow_update)
    tok = session.package.tokenizer
    texts = ["Hi, I'm Ann and I live in Paris.", "What is my name?", "Where do I live?"]
    expected, _ = _torch_answers(simple.model, [tok.encode(t) for t in texts])

    conv = session.conversation()
    pieces = []
    for piece in conv.stream(texts[0], max_new_tokens=MAX_NEW):
        pieces.append((piece, time.perf_counter()))
    answered = time.perf_counter()
    # the whole answer is out while the (slowed) update is still running
    assert conv.memory_update_running
    for _ in range(
        500
    ):  # queued when the answer ended; a worker picks it up at once (on a busy machine, soon)
        if events:
            break
        time.sleep(0.01)
    assert "".join(p for p, _ in pieces) == tok.decode(expected[0])
    assert [name for name, _ in events] == ["update started"]
    assert answered - events[0][1] < delay

    # the next turn waits for it by design, then answers from the updated memory
    second = conv.say(texts[1], max_new_tokens=MAX_NEW)
    assert conv.last_stats.update_was_running and conv.last_stats.update_wait_s > 0
    started = next(t for name, t in events if name == "update started")  # turn 1's update: the first of each
    finished = next(t for name, t in events if name == "update finished")
    assert all(t < finished for _, t in pieces)
    assert finished - started >= delay
    assert second == tok.decode(expected[1])

    conv.wait_memory()
    assert not conv.memory_update_running
    assert conv.say(texts[2], max_new_tokens=MAX_NEW) == tok.decode(expected[2])


# --- threads ----------------------------------------------------------------------------------------------------


def test_parallel_conversations_equal_sequential_runs(exported):
    e = exported("moe_stateless_revsqa")
    scripts = [_queries(3, seed=100 + i) for i in range(4)]
    with RxTSession.load(e.package) as s:

        def run(script, barrier=None):
            conv = s.conversation()
            if barrier is not None:
                barrier.wait()
            out = [conv.interact_ids(q, max_new_tokens=MAX_NEW) for q in script]
            return out, conv.stm()

        sequential = [run(script) for script in scripts]
        for _ in range(2):
            barrier = threading.Barrier(len(scripts))
            results: list = [None] * len(scripts)
            errors: list = []

            def worker(i, barrier=barrier, results=results, errors=errors):
                try:
                    results[i] = run(scripts[i], barrier)
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(scripts))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not errors, errors
            for (want_ids, want_stm), (got_ids, got_stm) in zip(sequential, results, strict=True):
                assert got_ids == want_ids
                assert np.array_equal(got_stm, want_stm)
    expected = [_torch_answers(e.model, script)[0] for script in scripts]
    assert [ids for ids, _ in sequential] == expected


# --- interrupted turns and failed updates ---------------------------------------------------------------------


def _answer_after(session, stm, query):
    """What a fresh conversation from `stm` answers (its memory update finished before returning)."""
    conv = session.conversation(stm=stm)
    answer = conv.interact_ids(query, max_new_tokens=MAX_NEW)
    conv.wait_memory()
    return answer


def test_closing_the_stream_mid_answer_drops_the_turn(session):
    conv = session.conversation()
    first, second = _queries(2, seed=31)
    conv.interact_ids(first, max_new_tokens=MAX_NEW)
    before = conv.stm()
    gen = conv.generate_ids(second, max_new_tokens=MAX_NEW)
    taken = [next(gen), next(gen)]
    gen.close()
    assert len(taken) == 2
    assert not conv.memory_update_running
    assert np.array_equal(conv.stm(), before)
    assert conv.turns == 1
    # the conversation goes on as if the turn had never started
    assert conv.interact_ids(second, max_new_tokens=MAX_NEW) == _answer_after(session, before, second)


class _Stop(Exception):
    pass


def test_exception_in_the_consumer_drops_the_turn(session):
    conv = session.conversation()
    query = _queries(1, seed=32)[0]
    before = conv.stm()
    with pytest.raises(_Stop):
        for n, _piece in enumerate(conv.stream("Tell me a long story about cats", max_new_tokens=MAX_NEW)):
            if n == 2:
                raise _Stop
    assert np.array_equal(conv.stm(), before) and not conv.memory_update_running and conv.turns == 0
    assert conv.interact_ids(query, max_new_tokens=MAX_NEW) == _answer_after(session, before, query)


@pytest.mark.parametrize("error", [RuntimeError("simulated failure"), KeyboardInterrupt()])
def test_error_during_generation_drops_the_turn(session, monkeypatch, error):
    conv = session.conversation()
    query = _queries(1, seed=33)[0]
    before = conv.stm()
    calls = {"n": 0}
    real = conversation_module.sample_next

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(conversation_module, "sample_next", failing)
    with pytest.raises(type(error)):
        conv.interact_ids(query, max_new_tokens=MAX_NEW)
    monkeypatch.setattr(conversation_module, "sample_next", real)
    assert np.array_equal(conv.stm(), before) and not conv.memory_update_running and conv.turns == 0
    assert conv.interact_ids(query, max_new_tokens=MAX_NEW) == _answer_after(session, before, query)


def _fail_memory_update_after_writing(session, monkeypatch) -> dict:
    """The memory update graph runs (writing its output buffers), then the run 'fails'."""
    real_run = session.graphs.run
    state = {"failures": 0}

    def run(name, binding):
        real_run(name, binding)
        if name == contract.MEMORY_UPDATE and state.get("armed", True):
            state["failures"] += 1
            raise RuntimeError("simulated device failure")

    monkeypatch.setattr(session.graphs, "run", run)
    return state


def test_failed_update_keeps_the_old_memory_and_raises_once(session, monkeypatch):
    conv = session.conversation()
    first, second = _queries(2, seed=41)
    conv.interact_ids(first, max_new_tokens=MAX_NEW)
    before = conv.stm()
    expected = _answer_after(session, before, second)
    state = _fail_memory_update_after_writing(session, monkeypatch)
    answer = conv.interact_ids(second, max_new_tokens=MAX_NEW)
    assert answer == expected  # the answer itself is delivered
    with pytest.raises(MemoryUpdateError, match="memory is unchanged.*simulated device failure"):
        conv.wait_memory()
    assert state["failures"] == 1
    conv.wait_memory()  # once only
    assert np.array_equal(
        conv.stm(), before
    )  # double buffering: the written spare buffers were not swapped in
    state["armed"] = False
    assert conv.interact_ids(second, max_new_tokens=MAX_NEW) == answer


def test_failed_update_is_reported_by_the_next_turn(session, monkeypatch):
    conv = session.conversation()
    first, second = _queries(2, seed=42)
    before = conv.stm()
    expected = _answer_after(session, before, second)
    state = _fail_memory_update_after_writing(session, monkeypatch)
    conv.interact_ids(first, max_new_tokens=MAX_NEW)
    deadline = time.monotonic() + 60
    while conv.memory_update_running and time.monotonic() < deadline:  # let it fail, without waiting on it
        time.sleep(0.01)
    assert state["failures"] == 1
    state["armed"] = False
    with pytest.raises(MemoryUpdateError):
        conv.interact_ids(second, max_new_tokens=MAX_NEW)
    assert conv.interact_ids(second, max_new_tokens=MAX_NEW) == expected


# --- limits and providers ---------------------------------------------------------------------------------------


def test_too_long_query_fails_before_any_work(session, monkeypatch):
    runs: list[str] = []
    real_run = session.graphs.run
    conv = session.conversation()
    before = conv.stm()
    monkeypatch.setattr(session.graphs, "run", lambda name, b: (runs.append(name), real_run(name, b))[1])
    limit = session.dims.max_seq_len
    room = limit - 5
    too_long = _queries(1, seed=5)[0] * limit
    too_long = too_long[: room + 1]
    with pytest.raises(PromptTooLongError, match=f"{room + 1} tokens.*at most {room}.*truncate=True"):
        conv.interact_ids(too_long, max_new_tokens=4)
    with pytest.raises(PromptTooLongError):
        conv.say("word " * (2 * limit))
    assert runs == [] and conv.turns == 0 and not conv.memory_update_running
    assert np.array_equal(conv.stm(), before)
    # asked for, the query is cut to its end
    answer = conv.interact_ids(too_long, max_new_tokens=4, truncate=True)
    assert answer == _answer_after(session, before, too_long[-room:])[:4]
    assert runs[0] == contract.DECODER


def test_unavailable_provider_lists_the_available_ones(simple):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ProviderUnavailableError, match=r"'cuda'.*available: .*CPUExecutionProvider"):
        RxTSession.load(simple.package, provider="cuda")


# --- buffers: preallocated, written in place, STM projected once per turn --------------------------------------


def test_kv_cache_is_written_in_place_and_never_reallocated(simple, session, monkeypatch):
    conv = session.conversation()
    model = simple.model
    leased = []  # the decode slot of each turn, through the engine's public lease
    real_lease = session.engine.lease_slot

    @contextlib.contextmanager
    def recording_lease(memory):
        with real_lease(memory) as slot:
            leased.append(slot)
            yield slot

    monkeypatch.setattr(session.engine, "lease_slot", recording_lease)
    ptrs = lambda: (  # noqa: E731
        [b.data_ptr() for b in leased[-1].cache.keys + leased[-1].cache.values],
        [b.data_ptr() for b in conv._state.stm],
        [b.data_ptr() for side in conv._state.kv for b in side.values()],
    )
    at_start = None
    runs: list[str] = []
    real_run = session.graphs.run
    monkeypatch.setattr(session.graphs, "run", lambda name, b: (runs.append(name), real_run(name, b))[1])
    queries = _queries(3, seed=51)
    ref = TorchConversation(model)
    sp = model.cfg.special_tokens
    for q in queries:
        stm_before = ref.stm.clone()
        want = ref.say(q, MAX_NEW)
        runs.clear()
        answer = conv.interact_ids(q, max_new_tokens=MAX_NEW)
        conv.wait_memory()
        assert answer == want
        at_start = at_start or ptrs()
        assert ptrs() == at_start  # same cache (the slot comes back), STM and STM K/V buffers every turn
        prompt = [sp["bos"], sp["query"], *q, sp["answer"]]
        budget = min(MAX_NEW, session.dims.max_seq_len - len(prompt) - 1)
        fed = prompt + (answer[:-1] if len(answer) == budget else answer)
        # one decoder run per fed position after the prompt; the STM K/V come from the update, never per token
        assert runs.count(contract.DECODER) == 1 + len(fed) - len(prompt)
        assert runs.count(contract.MEMORY_KV) == 0
        assert runs.count(contract.ENCODER) == 1 and runs.count(contract.MEMORY_UPDATE) == 1
        # the rows the graph wrote in place hold torch's keys and values of this turn
        with torch.no_grad():
            mk, mv = model.memory_kv(stm_before)
            pk, pv = model.empty_cache()
            _, nk, nv = model.decoder(torch.tensor([fed]), pk, pv, mk, mv)
        static = session.engine.kv_cache == "static"  # [1, Hs, T_max, hd], else [T_max, 1, Hs, hd]
        for i in range(session.dims.decoder_layers):
            cache = leased[-1].cache
            for buf, want in ((cache.keys[i], nk[i]), (cache.values[i], nv[i])):
                got = (
                    buf.numpy()[0, :, : len(fed)].swapaxes(0, 1)[:, None]
                    if static
                    else buf.numpy()[: len(fed)]
                )
                np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_conversations_never_write_the_initial_or_a_given_stm(session):
    initial = session.package.initial_stm.copy()
    given = np.random.default_rng(0).standard_normal(session.package.stm_shape).astype(np.float32)
    given_copy = given.copy()
    queries = _queries(3, seed=61)
    first = session.conversation()
    answers = [first.interact_ids(q, max_new_tokens=MAX_NEW) for q in queries]
    mine = session.conversation(stm=given)
    for q in queries:
        mine.interact_ids(q, max_new_tokens=MAX_NEW)
    mine.wait_memory()
    first.wait_memory()
    assert np.array_equal(session.package.initial_stm, initial)
    assert np.array_equal(given, given_copy)
    assert [session.conversation().interact_ids(queries[0], max_new_tokens=MAX_NEW)] == answers[:1]
    first.reset()
    assert np.array_equal(first.stm(), initial) and first.turns == 0
    assert first.interact_ids(queries[0], max_new_tokens=MAX_NEW) == answers[0]


def test_system_prompt_is_one_memory_update(simple, session):
    conv = session.conversation()
    text = "You are a helpful assistant."
    conv.set_system_prompt(text)
    ids = session.package.tokenizer.encode(text)
    ref = TorchConversation(simple.model)
    sp = simple.model.cfg.special_tokens
    ref.update([sp["bos"], *ids, sp["eos"]])
    _stm_close(conv.stm(), ref.stm.numpy())
    q = _queries(1, seed=71)[0]
    assert conv.interact_ids(q, max_new_tokens=MAX_NEW) == ref.say(q, MAX_NEW)
