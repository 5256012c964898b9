"""One conversation: its STM on the device, the turn loop, and the memory update off the user's path.

A turn: prompt `[BOS][Q] query [A]` -> decoder prefill, then one token per step until `[EOS]` or the limit.
When the answer is complete, the encoder and memory-update graphs run on a background thread over
`[BOS][Q] query [A] answer [EOS]` and write the *spare* STM buffers; the buffers swap only when the update
succeeded. The next turn waits for a pending update only if it is still running.

Interruption policy: a turn that does not complete (Ctrl-C, an exception, the caller abandoning the stream) is
dropped: it is not written to memory and the STM stays exactly as it was before the turn. A failed memory update
also leaves the previous STM in place; its error is raised once, by the next `wait_memory()` or turn.
STM writes (memory updates, `set_stm`) are serialized per conversation and swap in only when complete, so the
STM is always either the old or the new one, never a mix.

Input policy: a query with no content (empty or whitespace-only text, an empty id list; likewise an empty
system prompt) raises EmptyQueryError, and one longer than a turn allows raises PromptTooLongError (unless
`truncate=True`, which keeps its end); both before any graph runs, leaving the conversation unchanged. Text
is never interpreted: special-token strings typed by the user ("[Q]", "<s>") are encoded as ordinary text, and
invalid Unicode becomes U+FFFD (see tokenizer). Token ids given directly must be in the vocabulary.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import contract
from .engine import KVCache, StateBuffers
from .sampling import SamplingConfig, sample_next
from .snapshot import save_snapshot
from .tokenizer import DecodeStream, clean_text

if TYPE_CHECKING:
    from .session import RxTSession


class PromptTooLongError(ValueError):
    """The query does not fit the model's maximum turn length."""


class EmptyQueryError(ValueError):
    """The query has no content (empty or whitespace-only text, or no token ids); nothing was run."""


class MemoryUpdateError(RuntimeError):
    """The background memory update of the previous turn failed; the STM kept its previous value."""


class ConversationBusyError(RuntimeError):
    """A turn was started while another turn of the same conversation is still being generated in this thread."""


@dataclass
class TurnStats:
    prompt_tokens: int = 0
    answer_tokens: int = 0
    time_to_first_token_s: float = 0.0
    total_s: float = 0.0
    update_wait_s: float = 0.0  # how long this turn waited for the previous memory update
    update_was_running: bool = False  # the previous update had not finished when this turn began
    completed: bool = False

    @property
    def tokens_per_s(self) -> float:
        decode = self.total_s - self.time_to_first_token_s
        return (self.answer_tokens - 1) / decode if self.answer_tokens > 1 and decode > 0 else 0.0


class Conversation:
    def __init__(self, session: RxTSession, stm: np.ndarray | None = None):
        self.session = session
        pkg, d = session.package, session.dims
        self._special = pkg.manifest.special_tokens
        self._state = StateBuffers(d, session.buffers)
        self._cache = KVCache(session.buffers, d.decoder_layers, d.max_seq_len, d.self_kv_heads, d.head_dim)
        self._logits = np.zeros((1, d.vocab_size), dtype=pkg.float_dtype)
        self._ids = np.zeros((1, d.max_seq_len), dtype=np.int64)
        self._decoder = session.graphs.binding(contract.DECODER)
        self._decoder.bind_output(
            "logits", "cpu", 0, self._logits.dtype, list(self._logits.shape), self._logits.ctypes.data
        )
        self._turn_owner: int | None = None
        self._turn_lock = threading.Lock()
        self._memory_lock = threading.Lock()  # one STM write (spare buffers + swap) at a time
        self._pending: Future | None = None
        self.turns = 0
        self.last_stats = TurnStats()
        self.last_update_s = 0.0
        self.set_stm(pkg.initial_stm if stm is None else stm)

    # --- memory ---------------------------------------------------------------------------------------
    def set_stm(self, stm: np.ndarray) -> None:
        """Replace the STM (shape [L, 1, S, D]) and project its cross-attention K/V once."""
        self.wait_memory(raise_errors=False)
        stm = np.asarray(stm)
        expected = self.session.package.stm_shape
        if stm.shape != expected:
            raise ValueError(f"STM shape {stm.shape} does not match the model's {expected}")
        if not np.isfinite(stm).all():
            raise ValueError("STM contains NaN or Inf")
        with self._memory_lock:
            spare = self._state.spare
            # Copy into the preallocated spare buffer: an OrtValue made from the array would alias it on the CPU,
            # and later updates (which write the spare buffer) would overwrite the caller's array or the initial STM.
            self._state.stm[spare].update_inplace(np.ascontiguousarray(stm, self.session.buffers.dtype))
            g = self.session.graphs
            b = g.binding(contract.MEMORY_KV)
            b.bind_ortvalue_input("stm", self._state.stm[spare])
            self._state.bind_kv_outputs(b, spare)
            g.run(contract.MEMORY_KV, b)
            self._state.active = spare

    def stm(self) -> np.ndarray:
        """A host copy of the current STM [L, 1, S, D] (waits for a pending update)."""
        self.wait_memory()
        return self._state.stm[self._state.active].numpy().copy()

    def wait_memory(self, raise_errors: bool = True) -> None:
        """Block until the pending memory update is done; re-raise its failure once."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        except BaseException as e:
            if not pending.done():
                raise  # Ctrl-C while waiting: the update still runs, so it stays pending (waited for next time)
            self._pending = None
            if pending.exception() is not e:
                raise  # a Ctrl-C that arrived just as the update finished
            if raise_errors:
                raise MemoryUpdateError(
                    "the memory update of the last turn failed; the memory is unchanged: "
                    f"{type(e).__name__}: {e}"
                ) from e
            return
        self._pending = None

    @property
    def memory_update_running(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def _update_memory(self, interaction: list[int]) -> None:
        """Encoder + memory update into the spare buffers; swap on success (runs on the worker thread)."""
        with self._memory_lock:
            self._write_spare_and_swap(interaction)

    def _write_spare_and_swap(self, interaction: list[int]) -> None:
        started = time.perf_counter()
        g, state = self.session.graphs, self._state
        ids = np.asarray([interaction], dtype=np.int64)
        mask = np.ones_like(ids)
        enc = g.binding(contract.ENCODER)
        enc.bind_cpu_input("input_ids", ids)
        enc.bind_cpu_input("attention_mask", mask)
        enc.bind_output("encoded", self.session.buffers.device, self.session.buffers.device_id)
        g.run(contract.ENCODER, enc)
        encoded = enc.get_outputs()[0]
        upd = g.binding(contract.MEMORY_UPDATE)
        upd.bind_ortvalue_input("stm", state.stm[state.active])
        upd.bind_ortvalue_input("encoded", encoded)
        upd.bind_cpu_input("attention_mask", mask)
        spare = state.spare
        upd.bind_ortvalue_output("new_stm", state.stm[spare])
        state.bind_kv_outputs(upd, spare)
        g.run(contract.MEMORY_UPDATE, upd)
        state.active = spare  # the only mutation, after every write succeeded
        self.last_update_s = time.perf_counter() - started

    def _write_memory_sync(self, interaction: list[int]) -> None:
        self.wait_memory()
        self._update_memory(interaction)

    # --- turns ----------------------------------------------------------------------------------------
    def _step(self, tokens: Sequence[int], past: int) -> np.ndarray:
        """Run the decoder on `tokens` at positions past.. and return the last position's logits."""
        n = len(tokens)
        self._ids[0, :n] = tokens
        self._decoder.bind_input("input_ids", "cpu", 0, np.int64, [1, n], self._ids.ctypes.data)
        self._cache.bind(self._decoder, past, n)
        self.session.graphs.run(contract.DECODER, self._decoder)
        return self._logits[0]

    def _enter_turn(self) -> None:
        me = threading.get_ident()
        if self._turn_owner == me:
            raise ConversationBusyError(
                "a turn of this conversation is still being generated; finish or close it first"
            )
        self._turn_lock.acquire()
        self._turn_owner = me

    def _leave_turn(self) -> None:
        self._turn_owner = None
        self._turn_lock.release()

    def generate_ids(
        self,
        query_ids: Sequence[int],
        max_new_tokens: int = 128,
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        truncate: bool = False,
    ) -> Iterator[int]:
        """Yield the answer's token ids (without [EOS]); schedule the memory update once the answer is complete."""
        self._enter_turn()
        try:
            yield from self._turn(
                list(query_ids), max_new_tokens, sampling or SamplingConfig(temperature=0.0), seed, truncate
            )
        finally:
            self._leave_turn()

    def _turn(
        self, query: list[int], max_new: int, cfg: SamplingConfig, seed: int | None, truncate: bool
    ) -> Iterator[int]:
        sp, limit = self._special, self.session.dims.max_seq_len
        if not query:
            raise EmptyQueryError("the query is empty (no token ids); nothing to answer")
        room = limit - 5  # [BOS][Q] ... [A] + at least one answer token + [EOS]
        if len(query) > room:
            if not truncate:
                raise PromptTooLongError(
                    f"the query is {len(query)} tokens; this model takes at most {room} per turn "
                    f"(max_seq_len {limit}); shorten it or pass truncate=True"
                )
            query = query[-room:]
        query = self._checked_ids(query)
        if max_new < 1:
            raise ValueError("max_new_tokens must be at least 1")
        stats = TurnStats(update_was_running=self.memory_update_running)
        started = time.perf_counter()
        self.wait_memory()
        stats.update_wait_s = time.perf_counter() - started
        prompt = [sp["bos"], sp["query"], *query, sp["answer"]]
        budget = min(max_new, limit - len(prompt) - 1)
        self._decoder.clear_binding_inputs()
        self._state.bind_kv_inputs(self._decoder, self._state.active)
        rng = np.random.default_rng(seed)
        answer: list[int] = []
        stats.prompt_tokens = len(prompt)
        self.last_stats = stats
        logits = self._step(prompt, 0)
        while True:
            token = sample_next(logits, cfg, rng, answer)
            if token == sp["eos"]:
                break
            answer.append(token)
            if len(answer) == 1:
                stats.time_to_first_token_s = time.perf_counter() - started
            stats.answer_tokens = len(answer)
            stats.total_s = time.perf_counter() - started
            yield token
            if len(answer) >= budget:
                break
            logits = self._step([token], len(prompt) + len(answer) - 1)
        stats.total_s = time.perf_counter() - started
        stats.completed = True
        self.turns += 1
        interaction = prompt + answer + [sp["eos"]]
        self._pending = self.session.submit(self._update_memory, interaction)

    def _checked_ids(self, ids: list[int]) -> list[int]:
        """Plain ints inside the vocabulary (an out-of-range id would index past the embedding table)."""
        vocab = self.session.dims.vocab_size
        out = []
        for pos, i in enumerate(ids):
            try:
                i = operator.index(i)
            except TypeError:
                raise TypeError(
                    f"query_ids[{pos}]: token ids must be integers, got {type(i).__name__}"
                ) from None
            if not 0 <= i < vocab:
                raise ValueError(f"query_ids[{pos}]: token id {i} is out of range [0, {vocab})")
            out.append(i)
        return out

    def interact_ids(
        self, query_ids: Sequence[int], max_new_tokens: int = 128, temperature: float = 0.0, **kw
    ) -> list[int]:
        """The whole answer as token ids (the query's own tokens in; the turn template is added here)."""
        cfg = SamplingConfig(
            temperature=temperature,
            **{k: kw.pop(k) for k in list(kw) if k in SamplingConfig.__dataclass_fields__},
        )
        return list(self.generate_ids(query_ids, max_new_tokens, cfg, **kw))

    def stream(
        self,
        text: str | bytes,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        truncate: bool = False,
    ) -> Iterator[str]:
        """Yield the answer as text pieces while it is generated."""
        tok = self.session.package.tokenizer
        cfg = SamplingConfig(
            temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty
        )
        decoder = DecodeStream(tok)
        if not clean_text(text).strip():
            raise EmptyQueryError("the query is empty or only whitespace; nothing to answer")
        ids = tok.encode(text)
        for token in self.generate_ids(ids, max_new_tokens, cfg, seed, truncate):
            if piece := decoder.push(token):
                yield piece
        if rest := decoder.flush():
            yield rest

    def say(self, text: str | bytes, **kw) -> str:
        """The whole answer as a string."""
        return "".join(self.stream(text, **kw))

    # --- state ----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the package's initial STM (a fresh conversation)."""
        self.set_stm(self.session.package.initial_stm)
        self.turns = 0

    def set_system_prompt(self, text: str, truncate: bool = False) -> None:
        """Write a system prompt into the STM with one memory update (synchronously).

        Template: `[BOS][internal] text [EOS]` where the model has an internal token, else `[BOS] text [EOS]`.
        A prompt longer than the model's maximum raises PromptTooLongError unless `truncate` keeps its start."""
        sp = self._special
        if not clean_text(text).strip():
            raise EmptyQueryError("the system prompt is empty or only whitespace")
        ids = self.session.package.tokenizer.encode(text)
        head = [sp["bos"], sp["internal"]] if "internal" in sp else [sp["bos"]]
        room = self.session.dims.max_seq_len - len(head) - 1
        if len(ids) > room and not truncate:
            raise PromptTooLongError(
                f"the system prompt is {len(ids)} tokens; this model takes at most {room}; shorten it or pass truncate=True"
            )
        seq = head + ids[:room] + [sp["eos"]]
        self._write_memory_sync(seq)

    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        """Snapshot the STM (atomic write) so the conversation can be restored later."""
        meta = {"turns": self.turns, **(metadata or {})}
        save_snapshot(path, self.stm(), self.session.package.fingerprint, meta)
