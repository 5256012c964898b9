"""One conversation: its STM on the device, the turn loop, and the memory update off the user's path.

A turn leases a decode slot from the engine (`contract.turn_prompt` -> `slot.prefill`, then one `slot.step`
per token until `[EOS]` or the limit) and gives it back; the conversation itself holds only its STM state.
When the answer is complete, the encoder and memory-update graphs run on a background thread over
`[BOS][Q] query [A] answer [EOS]` (no `[EOS]` after an answer cut at the limit, as rxlm writes it:
`contract.turn_interaction`) and write the *spare* STM buffers; the buffers swap only when the update
succeeded. The next turn waits for a pending update only if it is still running.

Interruption policy: a turn that does not complete (Ctrl-C, an exception, the caller abandoning the stream) is
dropped: it is not written to memory and the STM stays exactly as it was before the turn. A failed memory update
also leaves the previous STM in place; its error is raised once, by the next `wait_memory()` or turn.
STM writes (memory updates, `set_stm`) are serialized per conversation and swap in only when complete, so the
STM is always either the old or the new one, never a mix. A turn is all or nothing whatever interrupts it, Ctrl-C
included: it counts (`turns`) exactly when its memory update was queued, and both happen in one step
(`_commit`); `reset()` swaps the STM and zeroes `turns` in one step too. Ctrl-C lands only where the
interpreter checks for signals (a function's entry, after a call returns), so these steps are single stores or
one C call, and the turn lock is held by a `with` block, never by an acquire/release pair a signal could split.

State changes during an open turn: `reset`, `set_stm`, `set_system_prompt`, `remember` and `save` take the
turn lock. From another thread they wait until the turn is over (serialised); from the thread that holds an
open stream of this conversation (started, neither finished nor closed) they raise ConversationBusyError,
as a second turn does: the stream's answer was computed from the memory it started with, and would otherwise
be written into the new one. On a closed session (`RxTSession.close()`), a turn or memory write raises
SessionClosedError before anything runs, and nothing counts.

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
from .sampling import GenerationConfig, SamplingConfig, sample_next
from .snapshot import cast_stm, check_turns, save_snapshot
from .tokenizer import DecodeStream, clean_text

if TYPE_CHECKING:
    from .engine import Engine, MemoryState


class PromptTooLongError(ValueError):
    """The query does not fit the model's maximum turn length."""


class EmptyQueryError(ValueError):
    """The query has no content (empty or whitespace-only text, or no token ids); nothing was run."""


class SystemPromptUnsupportedError(ValueError):
    """The package's model was not trained with system prompts (manifest `system_prompt: false`): writing one
    would only degrade its answers, so it is refused and the memory is left as it was."""


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
    """One conversation's STM on the device and its turns; made by `RxTSession.conversation()`."""

    def __init__(self, engine: Engine, stm: np.ndarray | None = None, turns: int = 0):
        engine.check_open()
        self.engine = engine
        self._special = engine.special
        self._state = engine.new_memory()
        self._turn_owner: int | None = None
        self._turn_lock = threading.Lock()
        self._memory_lock = threading.Lock()  # one STM write (spare buffers + swap) at a time
        self._pending: Future | None = None
        self.turns = 0
        self.last_stats = TurnStats()
        self.last_update_s = 0.0
        self._install(engine.package.initial_stm if stm is None else stm, check_turns(turns))

    # --- memory ---------------------------------------------------------------------------------------
    def set_stm(self, stm: np.ndarray) -> None:
        """Replace the STM (shape [L, 1, S, D]) and project its cross-attention K/V once (`turns` is kept)."""
        self._refuse_in_open_turn("set the STM")
        with self._turn_lock:
            self._install(stm, self.turns)

    def _install(self, stm: np.ndarray, turns: int) -> None:
        """The STM and turn count, swapped in together (caller holds the turn lock or owns the object)."""
        self.wait_memory(raise_errors=False)
        stm = np.asarray(stm)
        expected = self.engine.package.stm_shape
        if stm.shape != expected:
            raise ValueError(f"STM shape {stm.shape} does not match the model's {expected}")
        if not np.isfinite(stm).all():
            raise ValueError("STM contains NaN or Inf")
        self.engine.check_open()
        with self._memory_lock:
            try:
                spare = self.engine.stage_stm(self._state, stm)
            except Exception as e:
                raise MemoryUpdateError(
                    f"writing the STM failed; the memory is unchanged: {type(e).__name__}: {e}"
                ) from e
            self._state.active, self.turns = spare, turns  # one step: no Ctrl-C between the two

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
    def memory(self) -> MemoryState:
        """This conversation's device-side STM and its K/V (double-buffered; read them, do not write them):
        what a decode slot reads (`engine.lease_slot(conv.memory)`) and where tools check device placement."""
        return self._state

    @property
    def memory_update_running(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def _update_memory(self, interaction: list[int], count: int = 0) -> None:
        """Encoder + memory update into the spare buffers; on success swap them in and add `count` to `turns`,
        in one step (a turn's background update counts 0: the turn was counted when it was queued)."""
        with self._memory_lock:
            started = time.perf_counter()
            spare = self.engine.update_memory(self._state, interaction, swap=False)
            if count:  # (on the caller's thread; a worker never writes `turns`)
                self._state.active, self.turns = spare, self.turns + count  # no Ctrl-C between the two
            else:
                self._state.active = spare
            self.last_update_s = time.perf_counter() - started

    def _write_memory_sync(self, interaction: list[int], count: int = 0) -> None:
        """A memory update on the caller's thread; `turns` grows by `count` in the step that swaps it in.
        Graph failures are MemoryUpdateError, as for background updates (the STM is unchanged)."""
        self.wait_memory()
        self.engine.check_open()
        try:
            self._update_memory(interaction, count)
        except Exception as e:
            raise MemoryUpdateError(
                f"the memory update failed; the memory is unchanged: {type(e).__name__}: {e}"
            ) from e

    # --- turns ----------------------------------------------------------------------------------------
    def _refuse_in_open_turn(self, what: str) -> None:
        """A turn's lock is held while its stream is open; the same thread taking it again would deadlock."""
        if self._turn_owner == threading.get_ident() and self._turn_lock.locked():
            raise ConversationBusyError(
                f"cannot {what}: a turn of this conversation is still being generated in this thread; "
                "finish or close its stream first"
            )

    def generate_ids(
        self,
        query_ids: Sequence[int],
        max_new_tokens: int | None = None,
        sampling: SamplingConfig | None = None,
        *,
        config: GenerationConfig | None = None,
        **options,
    ) -> Iterator[int]:
        """Yield the answer's token ids (without [EOS]); schedule the memory update once the answer is complete.

        `config` (or the `GenerationConfig` fields as keywords, which override it) says how to generate;
        `sampling` overrides its sampling fields."""
        cfg = _generation(config, max_new_tokens, sampling, options)
        yield from self._generate(query_ids, cfg, self.engine.dims.vocab_size)

    def _generate(self, query_ids: Sequence[int], cfg: GenerationConfig, vocab: int) -> Iterator[int]:
        """One turn under the turn lock; the answer uses ids below `vocab` only."""
        self._refuse_in_open_turn("start a turn")
        with self._turn_lock:  # `with`: no point between acquiring and the block where a signal could land
            try:
                self._turn_owner = threading.get_ident()
                yield from self._turn(list(query_ids), cfg, vocab)
            finally:
                self._turn_owner = None

    def _turn(self, query: list[int], cfg: GenerationConfig, vocab: int) -> Iterator[int]:
        sp, limit = self._special, self.engine.dims.max_seq_len
        query = self._checked_query(query, cfg.truncate)
        self.engine.check_open()
        stats = TurnStats(update_was_running=self.memory_update_running)
        started = time.perf_counter()
        self.wait_memory()
        stats.update_wait_s = time.perf_counter() - started
        prompt = contract.turn_prompt(sp, query)
        budget = contract.answer_budget(cfg.max_new_tokens, len(prompt), limit)
        sampling, rng, eos = cfg.sampling, np.random.default_rng(cfg.seed), sp["eos"]
        answer: list[int] = []
        stats.prompt_tokens = len(prompt)
        self.last_stats = stats

        def host_pick(logits: np.ndarray) -> int:
            if cfg.ignore_eos:
                logits[eos] = -np.inf
            logits[vocab:] = -np.inf  # ids past the tokenizer (a padded model vocabulary) have no text
            return sample_next(logits, sampling, rng, answer)

        with self.engine.lease_slot(self._state) as slot:
            # greedy with the pick in the graph: a step returns one id, not a row of logits (GPU packages)
            on_device = slot.picks_greedy and sampling.greedy and sampling.repetition_penalty == 1.0
            token = host_pick(slot.prefill(prompt))
            while token != eos:  # (the model chose [EOS]: the answer ended; else it is cut at the budget)
                answer.append(token)
                if len(answer) == 1:
                    stats.time_to_first_token_s = time.perf_counter() - started
                stats.answer_tokens = len(answer)
                stats.total_s = time.perf_counter() - started
                yield token
                if len(answer) >= budget:
                    break
                if not on_device:
                    token = host_pick(slot.step(token))
                    continue
                token = slot.step_greedy(token)
                if token >= vocab or (cfg.ignore_eos and token == eos):  # masked on the host: it picks again
                    token = host_pick(slot.logits())
            if on_device:  # the graph's ArgMax passes NaN by: the turn's last logits are checked once
                sample_next(slot.logits(), sampling)
        ended = token == eos
        stats.total_s = time.perf_counter() - started
        self._commit(contract.turn_interaction(sp, prompt, answer, ended), stats)

    def _commit(self, interaction: list[int], stats: TurnStats) -> None:
        """Queue the memory update and count the turn, as one step: between recording the update and the
        C-level `put` that queues it there is no point where Ctrl-C can land (see the module docstring)."""
        job = (Future(), self._update_memory, (interaction,))
        with self.engine.commit_lock:
            self.engine.check_open()
            self._pending, self.turns, stats.completed = job[0], self.turns + 1, True
            self.engine.jobs.put(job)

    def _checked_query(self, query: list[int], truncate: bool) -> list[int]:
        """Non-empty, within the turn limit (or its end kept), plain ints inside the vocabulary."""
        if not query:
            raise EmptyQueryError("the query is empty (no token ids); nothing to answer")
        limit = self.engine.dims.max_seq_len
        room = contract.max_query_tokens(limit)
        if len(query) > room:
            if not truncate:
                raise PromptTooLongError(
                    f"the query is {len(query)} tokens; this model takes at most {room} per turn "
                    f"(max_seq_len {limit}); shorten it or pass truncate=True"
                )
            query = query[-room:]
        vocab = self.engine.dims.vocab_size
        out = []
        for pos, i in enumerate(query):
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
        self, query_ids: Sequence[int], max_new_tokens: int | None = None, **options
    ) -> list[int]:
        """The whole answer as token ids (the query's own tokens in; the turn template is added here)."""
        return list(self.generate_ids(query_ids, max_new_tokens, **options))

    def stream(
        self,
        text: str | bytes,
        max_new_tokens: int | None = None,
        *,
        config: GenerationConfig | None = None,
        **options,
    ) -> Iterator[str]:
        """Yield the answer as text pieces while it is generated (options: the `GenerationConfig` fields)."""
        cfg = _generation(config, max_new_tokens, None, options)
        tok = self.engine.package.tokenizer
        decoder = DecodeStream(tok)
        if not clean_text(text).strip():
            raise EmptyQueryError("the query is empty or only whitespace; nothing to answer")
        for token in self._generate(tok.encode(text), cfg, tok.vocab_size):
            if piece := decoder.push(token):
                yield piece
        if rest := decoder.flush():
            yield rest

    def say(self, text: str | bytes, max_new_tokens: int | None = None, **options) -> str:
        """The whole answer as a string."""
        return "".join(self.stream(text, max_new_tokens, **options))

    # --- state ----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the package's initial STM and zero turns (a fresh conversation), both in one step."""
        self._refuse_in_open_turn("reset the conversation")
        with self._turn_lock:
            self._install(self.engine.package.initial_stm, 0)

    def set_system_prompt(self, text: str, truncate: bool = False) -> None:
        """Write a system prompt into the STM with one memory update (synchronously).

        Template: `contract.system_interaction`. A prompt longer than the model's maximum raises
        PromptTooLongError unless `truncate` keeps its start; a model that takes none (manifest `system_prompt:
        false`) raises SystemPromptUnsupportedError."""
        if not self.engine.package.manifest.system_prompt:
            raise SystemPromptUnsupportedError(
                "this model was not trained with system prompts, so it cannot follow one (it would only make its "
                "answers worse); the system prompt was not applied. Tell it facts in the conversation instead."
            )
        if not clean_text(text).strip():
            raise EmptyQueryError("the system prompt is empty or only whitespace")
        ids = self.engine.package.tokenizer.encode(text)
        room = contract.max_system_tokens(self._special, self.engine.dims.max_seq_len)
        if len(ids) > room and not truncate:
            raise PromptTooLongError(
                f"the system prompt is {len(ids)} tokens; this model takes at most {room}; shorten it or pass truncate=True"
            )
        self._refuse_in_open_turn("write a system prompt")
        with self._turn_lock:
            self._write_memory_sync(contract.system_interaction(self._special, ids[:room]))

    def remember(self, query: str, answer: str) -> None:
        """Write a finished turn (asked elsewhere) into the STM with the encoder and memory update only.

        No decoding: this is how a server rebuilds a history it did not generate (synchronous). An answer
        longer than the turn allows keeps its start, as the answer of a real turn would have ended there."""
        if not clean_text(query).strip():
            raise EmptyQueryError("the query is empty or only whitespace; nothing to remember")
        tok = self.engine.package.tokenizer
        prompt = contract.turn_prompt(self._special, self._checked_query(tok.encode(query), False))
        limit = self.engine.dims.max_seq_len
        room = contract.answer_budget(limit, len(prompt), limit)
        answer = tok.encode(answer)[:room]
        self._refuse_in_open_turn("remember a turn")
        with self._turn_lock:
            self._write_memory_sync(contract.turn_interaction(self._special, prompt, answer), count=1)

    def save(self, path: str | Path, metadata: dict | None = None, dtype: str | None = None) -> None:
        """Snapshot the STM and turn count (atomic write) so the conversation can be restored later.

        Both are read under the turn lock, so they belong together; `metadata["turns"]`, if given, must be a
        turn count (an integer >= 0), else SnapshotError and nothing is written. `dtype` "float16" stores
        half the bytes (restore casts back; docs/benchmarks.md measures what it changes), None the STM's own."""
        if dtype is not None:
            cast_stm(np.zeros(0, np.float32), dtype)  # a bad dtype is refused before waiting for anything
        self._refuse_in_open_turn("save the conversation")
        with self._turn_lock:
            self.wait_memory()
            meta = {"turns": self.turns, **(metadata or {})}
            stm = self.stm() if dtype is None else cast_stm(self.stm(), dtype)
            save_snapshot(path, stm, self.engine.package.fingerprint, meta)


_OPTION_NAMES = frozenset(GenerationConfig.__dataclass_fields__) - {"max_new_tokens"}


def _generation(
    config: GenerationConfig | None,
    max_new_tokens: int | None,
    sampling: SamplingConfig | None,
    options: dict,
) -> GenerationConfig:
    """One GenerationConfig from a base config and the keyword overrides of the convenience methods."""
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown generation option(s) {sorted(unknown)}; expected {sorted(_OPTION_NAMES)}")
    changes = dict(options)
    if max_new_tokens is not None:
        changes["max_new_tokens"] = max_new_tokens
    if sampling is not None:
        changes.update(
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            repetition_penalty=sampling.repetition_penalty,
        )
    base = config or GenerationConfig()
    return base.replace(**changes) if changes else base
