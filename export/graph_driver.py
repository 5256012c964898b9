"""A plain-numpy driver of a package's four graphs, for checks that compare graphs on identical inputs.

The runtime (`rxt_edge.engine`) binds device buffers and writes its KV cache in place, which is what makes it
fast and what makes it awkward to feed a graph an arbitrary STM or a teacher-forced answer. `verify` and the
quantization report need exactly that, so they share this driver: one InferenceSession per graph, numpy in and
out, the KV cache concatenated per step. Turns are built with `rxt_edge.contract`, like the runtime's.
numpy + onnxruntime only (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rxt_edge.runtimes import native_kernels, providers

from rxt_edge import contract
from rxt_edge.package import ModelPackage, load_package


@dataclass(frozen=True)
class PastKV:
    """The decoder's self-attention cache between runs: `length` cached tokens, the per-layer arrays in the
    package's layout (`[key.0, value.0, ...]`; dynamic: `[length, 1, Hs, hd]`, static: `[1, Hs, T_max, hd]`)."""

    length: int
    arrays: list[np.ndarray]


class GraphDriver:
    """The four graphs with numpy I/O: memory K/V, decoder steps, encoder, memory update, whole turns."""

    def __init__(
        self,
        package: ModelPackage,
        threads: int | None = None,
        provider: str = "cpu",
        sessions: dict[str, ort.InferenceSession] | None = None,
    ):
        """`sessions`: onnxruntime sessions of this package's graphs to use instead of loading them again (a
        runtime's: one copy of a big model's weights in memory)."""
        self.package = package
        self.dims = package.manifest.model
        self.special = dict(package.manifest.special_tokens)
        self.dtype = package.float_dtype
        self.kv_cache = package.manifest.graphs[contract.DECODER].kv_cache
        plist, popts = providers.resolve_provider(provider)
        self.sessions: dict[str, ort.InferenceSession] = dict(sessions or {})
        for name in (n for n in contract.GRAPH_NAMES if n not in self.sessions):
            opts = native_kernels.session_options(provider, threads)  # (with our CPU kernels where built)
            self.sessions[name] = ort.InferenceSession(
                str(package.graph_path(name)), opts, providers=plist, provider_options=popts
            )
        self._memory_names = [o.name for o in self.sessions[contract.MEMORY_KV].get_outputs()]
        # logits and the caches (a GPU package's decoder also outputs its greedy pick: not needed here)
        self._decoder_outputs = [
            o.name for o in self.sessions[contract.DECODER].get_outputs() if o.name != contract.NEXT_TOKEN
        ]

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None, provider: str = "cpu") -> GraphDriver:
        return cls(load_package(directory), threads, provider)

    # --- the turn template ------------------------------------------------------------------------------
    def prompt(self, query: Sequence[int]) -> list[int]:
        return contract.turn_prompt(self.special, list(query))

    def interaction(self, prompt: Sequence[int], answer: Sequence[int], ended: bool = True) -> list[int]:
        """What the memory reads after a turn: `[EOS]` closes it only when the answer ended (the contract's rule)."""
        return contract.turn_interaction(self.special, list(prompt), list(answer), ended)

    def ended(self, prompt: Sequence[int], answer: Sequence[int], max_new: int) -> bool:
        """Whether a greedy answer stopped at `[EOS]` rather than at the length limit (as the runtime decides)."""
        return len(answer) < contract.answer_budget(max_new, len(prompt), self.dims.max_seq_len)

    # --- single graphs ----------------------------------------------------------------------------------
    def memory_kv(self, stm: np.ndarray) -> list[np.ndarray]:
        """`[key.0, value.0, key.1, ...]` of the memory cross-attention for `stm` (the memory_kv graph's outputs
        in order: with the int8 form, each tensor's scale follows it)."""
        return self.sessions[contract.MEMORY_KV].run(None, {"stm": stm.astype(self.dtype)})

    def empty_past(self) -> PastKV:
        d = self.dims
        if self.kv_cache == "static":
            shape: tuple[int, ...] = (1, d.self_kv_heads, d.max_seq_len, d.head_dim)
        else:
            shape = (0, 1, d.self_kv_heads, d.head_dim)
        return PastKV(0, [np.zeros(shape, self.dtype) for _ in range(2 * d.decoder_layers)])

    def decode(self, ids: Sequence[int], past: PastKV, mem: list[np.ndarray]) -> tuple[np.ndarray, PastKV]:
        """One decoder run: (the last position's logits as float32 [vocab], the grown KV cache)."""
        feeds: dict[str, np.ndarray] = {"input_ids": np.asarray([list(ids)], np.int64)}
        length = past.length + len(ids)
        if self.kv_cache == "static":
            feeds[contract.SEQLENS] = np.array([length - 1], np.int32)
        for i in range(self.dims.decoder_layers):
            feeds[contract.past_key(i)] = past.arrays[2 * i]
            feeds[contract.past_value(i)] = past.arrays[2 * i + 1]
        feeds.update(zip(self._memory_names, mem, strict=True))
        out = self.sessions[contract.DECODER].run(self._decoder_outputs, feeds)
        if self.kv_cache == "static":  # the present caches, this run's rows written
            return out[0][0].astype(np.float32), PastKV(length, out[1:])
        grown = [np.concatenate([p, n], axis=0) for p, n in zip(past.arrays, out[1:], strict=True)]
        return out[0][0].astype(np.float32), PastKV(length, grown)

    def encode(self, interaction: Sequence[int]) -> np.ndarray:
        ids = np.asarray([list(interaction)], np.int64)
        (encoded,) = self.sessions[contract.ENCODER].run(
            None, {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        )
        return encoded

    def memory_update(self, stm: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        """The new STM from `stm` and an encoded interaction `[layers, 1, seq, dim]` (every position attended)."""
        mask = np.ones((1, encoded.shape[2]), np.int64)
        feeds = {"stm": stm.astype(self.dtype), "encoded": encoded.astype(self.dtype), "attention_mask": mask}
        return self.sessions[contract.MEMORY_UPDATE].run(None, feeds)[0]

    def update(self, stm: np.ndarray, interaction: Sequence[int]) -> np.ndarray:
        """Encoder, then memory update: the STM after writing `interaction`."""
        return self.memory_update(stm, self.encode(interaction))

    # --- a whole answer ---------------------------------------------------------------------------------
    def answer_logits(
        self, stm: np.ndarray, prompt: Sequence[int], answer: Sequence[int] | None, max_new: int
    ) -> tuple[list[int], np.ndarray]:
        """Greedy answer (or the given `answer`, teacher-forced) and the logits that predicted each token.

        Returns (answer ids without EOS, logits [steps, vocab]); steps include the position that predicted EOS
        when the answer stopped there."""
        mem = self.memory_kv(stm)
        logits, past = self.decode(prompt, self.empty_past(), mem)
        budget = contract.answer_budget(max_new, len(prompt), self.dims.max_seq_len)
        rows, out = [logits], []
        while True:
            if answer is None:
                token = int(np.argmax(logits))
                if token == self.special["eos"] or len(out) >= budget:
                    break
            else:
                if len(out) >= len(answer):
                    break
                token = int(answer[len(out)])
            out.append(token)
            if answer is None and len(out) >= budget:
                break
            logits, past = self.decode([token], past, mem)
            rows.append(logits)
        return out, np.stack(rows)
