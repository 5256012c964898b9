"""Live turns on one session: a bounded number at once, one at a time per conversation, state committed after.

A turn runs on a worker thread: load the base STM (the store, or a commit still under way in this process),
open a conversation on it (`session.conversation(stm)`: buffers for the length of the turn only, so memory grows
with concurrent turns, not with stored conversations), write instructions / earlier turns into memory, then
stream the answer. Its events reach the event loop through an asyncio queue. When the answer is complete the
response is final at once; the memory update runs after it (`Conversation` schedules it off the response path)
and the same thread then waits for it and commits the new STM with the turn's records in one transaction.
Until that commit lands, readers of its keys (a follow-up, `GET /v1/responses/{id}`) wait for it: only when
they need it.

Turns that share a `lock_key` (one Conversations-API conversation) are serialised: the second waits until the
first has committed. A turn whose client goes away before the answer is complete is dropped: nothing is written.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rxt_edge import contract
from rxt_edge.conversation import EmptyQueryError, PromptTooLongError
from rxt_edge.sampling import GenerationConfig
from rxt_edge.session import RxTSession
from rxt_edge.snapshot import snapshot_from_bytes, snapshot_to_bytes
from rxt_edge.tokenizer import clean_text

from .store import ConflictError, Guard, StateStore

log = logging.getLogger("rxt_edge.serve")
LEASE_TTL_S = 300.0  # a conversation's store lease outlives any turn; a crashed holder's lease expires


class BusyError(RuntimeError):
    """More turns are running or waiting than the server allows."""


class StateNotFoundError(LookupError):
    """A base state (response, conversation, chain) is unknown, expired or was deleted."""


@dataclass
class TurnResult:
    """What the API layer needs to build its response once the answer is complete."""

    text: str
    input_tokens: int
    output_tokens: int
    incomplete: bool  # stopped at max_output_tokens
    remembered: int = 0  # earlier turns written with the encoder + memory update only (no decoding)
    remember_s: float = 0.0


@dataclass
class Commit:
    """Rows to write once the memory update is done: the new STM under `state_keys`, plus `records`."""

    state_keys: list[str]
    records: dict[str, dict[str, Any]]
    guard: Guard | None = None
    payload: Any = None  # handed back to the API layer with the "done" event (the final response object)


@dataclass
class TurnRequest:
    base: Callable[[], str | None] | str | None  # state key to start from (None: the model's initial STM)
    query: str
    config: GenerationConfig
    finish: Callable[[TurnResult], Commit]  # builds the rows to store; runs on the worker thread
    system: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)
    lock_key: str | None = None


class TurnPool:
    """Runs turns for the API layer; see the module docstring for the order of events."""

    def __init__(
        self,
        session: RxTSession,
        store: StateStore,
        max_concurrent: int = 8,
        max_waiting: int = 32,
        state_dtype: str = "float32",
    ):
        self.session, self.store, self.state_dtype = session, store, np.dtype(state_dtype)
        self.fingerprint = session.package.fingerprint
        self._workers = ThreadPoolExecutor(max_concurrent + max_waiting, thread_name_prefix="rxt-serve-turn")
        self._limit = max_concurrent + max_waiting
        self._active = 0
        self._pending: dict[str, Future] = {}  # key -> commit of this process still under way
        self._locks: dict[str, list] = {}  # lock_key -> [lock, users]
        self._mutex = threading.Lock()
        self.lease_wait_s = 60.0  # how long a turn waits for another process's turn on the same conversation
        self.committed = 0
        self.commit_errors = 0

    # --- reading state ---------------------------------------------------------------------------------
    def wait_pending(self, key: str, timeout: float = 60.0) -> None:
        """Wait for this process's commit of `key`, if one is under way (a follow-up that needs it)."""
        with self._mutex:
            fut = self._pending.get(key)
        if fut is not None:
            try:
                fut.result(timeout)
            except Exception:
                pass  # a failed commit leaves the old rows; the reader sees those

    def record(self, key: str) -> dict[str, Any] | None:
        self.wait_pending(key)
        return self.store.get_record(key)

    def load_stm(self, key: str) -> np.ndarray:
        self.wait_pending(key)
        data = self.store.get_state(key)
        if data is None:
            raise StateNotFoundError(key)
        stm, _ = snapshot_from_bytes(data, self.fingerprint, self.session.package.stm_shape, label=key)
        return stm.astype(self.session.package.float_dtype)

    def has_state(self, key: str) -> bool:
        with self._mutex:
            if key in self._pending:
                return True
        return self.store.get_state(key) is not None

    def state_bytes(self, stm: np.ndarray, turns: int) -> bytes:
        return snapshot_to_bytes(stm.astype(self.state_dtype), self.fingerprint, {"turns": turns})

    def prime(self, system: str | None, history: list[tuple[str, str]]) -> bytes:
        """The state after a system prompt and earlier turns, written without decoding (new conversations)."""
        conv = self.session.conversation()
        if system:
            conv.set_system_prompt(system)
        for query, answer in history:
            conv.remember(query, answer)
        return self.state_bytes(conv.stm(), conv.turns)

    # --- running a turn --------------------------------------------------------------------------------
    async def run(self, req: TurnRequest) -> AsyncIterator[tuple[str, Any]]:
        """Events: ("ready", None) once the turn is set up (errors before it are raised here, so the API can
        answer 4xx), then ("delta", text)..., then ("done", (TurnResult, Commit.payload))."""
        with self._mutex:
            if self._active >= self._limit:
                raise BusyError(f"the server is busy ({self._active} turns running or waiting); retry later")
            self._active += 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        self._workers.submit(self._turn, req, emit, cancel)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    return
        finally:
            cancel.set()  # the client went away (or the turn ended): an unfinished answer is dropped

    def _turn(self, req: TurnRequest, emit: Callable[[str, Any], None], cancel: threading.Event) -> None:
        lock = self._lock(req.lock_key)
        try:
            if lock is not None:
                lock.acquire()
            try:
                with self._store_lease(req.lock_key):
                    self._turn_locked(req, emit, cancel)
            finally:
                if lock is not None:
                    lock.release()
        except BaseException as e:  # noqa: BLE001 - every failure goes to the waiting request
            emit("error", e)
        finally:
            self._unlock(req.lock_key)
            with self._mutex:
                self._active -= 1

    def _turn_locked(self, req: TurnRequest, emit, cancel: threading.Event) -> None:
        base = req.base() if callable(req.base) else req.base
        self._check_query(req.query)
        conv = self.session.conversation(None if base is None else self.load_stm(base))
        started = time.perf_counter()
        if req.system:
            conv.set_system_prompt(req.system)
        for query, answer in req.history:
            conv.remember(query, answer)
        remember_s = time.perf_counter() - started
        emit("ready", None)
        if cancel.is_set():
            return
        pieces: list[str] = []
        stream = conv.stream(req.query, config=req.config)
        for piece in stream:
            if cancel.is_set():
                stream.close()  # drops the turn: no memory update, nothing stored
                return
            pieces.append(piece)
            emit("delta", piece)
        stats = conv.last_stats
        result = TurnResult(
            text="".join(pieces),
            input_tokens=stats.prompt_tokens,
            output_tokens=stats.answer_tokens,
            incomplete=stats.answer_tokens
            >= contract.answer_budget(
                req.config.max_new_tokens, stats.prompt_tokens, self.session.dims.max_seq_len
            ),
            remembered=len(req.history),
            remember_s=remember_s,
        )
        commit = req.finish(result)
        if not commit.state_keys and not commit.records:  # store=false, no conversation: nothing to keep
            emit("done", (result, commit.payload))
            return
        keys = [*commit.state_keys, *commit.records]
        fut: Future = Future()
        with self._mutex:
            for k in keys:
                self._pending[k] = fut
        try:
            emit("done", (result, commit.payload))  # the answer is final; the memory update runs meanwhile
            data = self.state_bytes(conv.stm(), conv.turns)  # waits for this turn's memory update
            self.store.commit(dict.fromkeys(commit.state_keys, data), commit.records, commit.guard)
            self.committed += 1
            fut.set_result(None)
        except Exception as e:  # the answer was sent; the store keeps the old rows (said in the log)
            self.commit_errors += 1
            fut.set_exception(e)
            level = logging.WARNING if isinstance(e, ConflictError) else logging.ERROR
            log.log(level, "turn not stored (the old state stays): %s: %s", type(e).__name__, e)
        finally:
            with self._mutex:
                for k in keys:
                    if self._pending.get(k) is fut:
                        del self._pending[k]

    @contextmanager
    def _store_lease(self, key: str | None) -> Iterator[None]:
        """The conversation's lease in the store, so processes sharing it serialise too (409 after a wait)."""
        if key is None:
            yield
            return
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.lease_wait_s
        while not self.store.try_lock(key, token, LEASE_TTL_S):
            if time.monotonic() > deadline:
                raise ConflictError(f"conversation {key} is busy in another server process")
            time.sleep(0.01)
        try:
            yield
        finally:
            self.store.unlock(key, token)

    def _check_query(self, query: str) -> None:
        """The query's errors before anything runs, so the client gets a 4xx instead of a failed stream."""
        if not clean_text(query).strip():
            raise EmptyQueryError("the input has no text; nothing to answer")
        room = contract.max_query_tokens(self.session.dims.max_seq_len)
        n = len(self.session.package.tokenizer.encode(query))
        if n > room:
            raise PromptTooLongError(f"the input is {n} tokens; this model takes at most {room} per turn")

    def _lock(self, key: str | None) -> threading.Lock | None:
        if key is None:
            return None
        with self._mutex:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
            return entry[0]

    def _unlock(self, key: str | None) -> None:
        if key is None:
            return
        with self._mutex:
            entry = self._locks[key]
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]  # no lock kept per stored conversation

    def close(self) -> None:
        self._workers.shutdown(wait=True)
