"""A decode slot: the resources of one turn's token loop (KV cache, decoder binding, ids, logits).

A conversation's lasting state is its STM; the self-attention cache is needed only while a turn is generated.
So a conversation leases a slot from its engine's pool for one turn (`Engine.lease_slot`) and gives it back:
memory grows with concurrent turns, not with live conversations, and a slot's buffers keep fixed addresses
(what CUDA-graph capture needs).

The decoder's cache (docs/graph-contract.md) is preallocated per slot in one of two layouts:
- `KVCache` ("dynamic" decoders): one sequence-major `[max_seq_len, 1, kv_heads, head_dim]` buffer per layer and
  direction; each run binds rows [0, past) as `past_*` and rows [past, past+n) as the `new_*` outputs, so the
  graph writes the new keys/values in place (inputs and outputs never overlap);
- `StaticKVCache` ("static" decoders): one `[1, kv_heads, max_seq_len, head_dim]` buffer bound as both `past_*`
  and `present_*` once per turn; the graph (GroupQueryAttention) writes each run's rows in place and reads the
  length from `seqlens_k`, so a step changes no binding but the ids.
Either way nothing is copied or reallocated per token: token ids go in, one row of logits comes out. On the CPU a
step binds nothing new in the static layout: a CPU session reads the bound ids and length arrays at every run, so
they are written in place (binding them again cost ~0.1 ms a token, its caches cold after each run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from . import contract
from .contract import ModelDims

if TYPE_CHECKING:
    from .engine import DeviceBuffers, GraphSet, MemoryState


class KVCache:
    """The decoder's self-attention cache: one preallocated sequence-major buffer per layer and direction.

    `bind(binding, past, n)` binds rows [0, past) as `past_*` and rows [past, past+n) as the `new_*` outputs;
    names, row size and base addresses are computed once here, so per run only pointers change."""

    def __init__(self, buf: DeviceBuffers, layers: int, max_len: int, kv_heads: int, head_dim: int):
        self.max_len, self._buf = max_len, buf
        self._tail = [1, kv_heads, head_dim]  # batch 1
        self._row_bytes = kv_heads * head_dim * buf.dtype.itemsize
        self.keys = [buf.empty((max_len, *self._tail)) for _ in range(layers)]
        self.values = [buf.empty((max_len, *self._tail)) for _ in range(layers)]
        self._names = [
            (contract.past_key(i), contract.past_value(i), contract.new_key(i), contract.new_value(i),
             k.data_ptr(), v.data_ptr())
            for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True))
        ]  # fmt: skip

    def bind(self, binding: ort.IOBinding, past: int, n: int, bound: bool = False) -> None:
        """(`bound` is for the static layout's signature: these bindings change shape every run.)"""
        if past + n > self.max_len:
            raise ValueError(f"KV cache overflow: {past} + {n} positions > max_seq_len {self.max_len}")
        buf, tail, off = self._buf, self._tail, past * self._row_bytes
        dev, dev_id, dt = buf.device, buf.device_id, buf.dtype
        for past_k, past_v, new_k, new_v, k_ptr, v_ptr in self._names:
            binding.bind_input(past_k, dev, dev_id, dt, [past, *tail], k_ptr)
            binding.bind_input(past_v, dev, dev_id, dt, [past, *tail], v_ptr)
            binding.bind_output(new_k, dev, dev_id, dt, [n, *tail], k_ptr + off)
            binding.bind_output(new_v, dev, dev_id, dt, [n, *tail], v_ptr + off)


class StaticKVCache:
    """The static decoder's cache: one `[1, kv_heads, max_len, head_dim]` buffer per layer and direction, bound
    as the graph's `past_*` input and `present_*` output at once (the graph updates it in place)."""

    def __init__(self, buf: DeviceBuffers, layers: int, max_len: int, kv_heads: int, head_dim: int):
        self.max_len = max_len
        shape = (1, kv_heads, max_len, head_dim)  # batch 1; zeros: rows past the length are read (masked)
        self.keys = [buf.zeros(shape) for _ in range(layers)]
        self.values = [buf.zeros(shape) for _ in range(layers)]
        self.seqlens = np.zeros(1, dtype=np.int32)  # the graph's seqlens_k: cached tokens after a run - 1
        self._seqlens_ptr = self.seqlens.ctypes.data

    def bind_outputs(self, binding: ort.IOBinding) -> None:
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            binding.bind_ortvalue_output(contract.present_key(i), k)
            binding.bind_ortvalue_output(contract.present_value(i), v)

    def bind_inputs(self, binding: ort.IOBinding) -> None:
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            binding.bind_ortvalue_input(contract.past_key(i), k)
            binding.bind_ortvalue_input(contract.past_value(i), v)

    def advance(self, past: int, n: int) -> None:
        """Check the bounds and set `seqlens` for a run of n tokens after `past` cached ones."""
        if past + n > self.max_len:
            raise ValueError(f"KV cache overflow: {past} + {n} positions > max_seq_len {self.max_len}")
        self.seqlens[0] = past + n - 1

    def bind(self, binding: ort.IOBinding, past: int, n: int, bound: bool = False) -> None:
        """`advance`, then bind `seqlens` again unless it is `bound`: a host input that a device kernel reads is
        copied to the device when it is bound, not when the graph runs (a binding made once would feed the CUDA
        EP a stale length); a CPU session reads the bound array itself at every run."""
        self.advance(past, n)
        if not bound:
            binding.bind_input(contract.SEQLENS, "cpu", 0, np.int32, [1], self._seqlens_ptr)


class DecodeSlot:
    """One turn's token loop: `start(memory)`, `prefill(prompt)`, then `step(token)` until the answer ends.

    `prefill` and `step` return the last position's logits as a writable `[vocab]` row that the next run
    overwrites (copy it to keep it); `step_greedy` returns the graph's own greedy pick instead, where the
    decoder has one (`picks_greedy`)."""

    def __init__(self, graphs: GraphSet, buffers: DeviceBuffers, dims: ModelDims, kv_cache: str = "dynamic"):
        self._graphs = graphs
        layout = StaticKVCache if kv_cache == "static" else KVCache
        self.cache = layout(buffers, dims.decoder_layers, dims.max_seq_len, dims.self_kv_heads, dims.head_dim)
        self.max_len = dims.max_seq_len
        self._ids = np.zeros((1, dims.max_seq_len), dtype=np.int64)
        self._ids_ptr = self._ids.ctypes.data  # (`ctypes.data` costs tens of microseconds with cold caches)
        # A CPU session reads a bound host array at every run; another device copies it when it is bound. So
        # on the CPU the ids (and the static cache's length) are bound once per shape and only written per step.
        self._host_inputs_live = graphs.device == "cpu"
        self._bound_n = 0  # the ids' bound length (0: bind them at the next run)
        self._logits = np.zeros((1, dims.vocab_size), dtype=buffers.dtype)
        self._binding = graphs.binding(contract.DECODER)
        self._binding.bind_output(
            "logits", "cpu", 0, self._logits.dtype, list(self._logits.shape), self._logits.ctypes.data
        )
        if isinstance(self.cache, StaticKVCache):
            self.cache.bind_outputs(self._binding)
        # the decoder also outputs its greedy pick (contract.NEXT_TOKEN; GPU packages): `step_greedy`
        self.picks_greedy = graphs.has_output(contract.DECODER, contract.NEXT_TOKEN)
        if self.picks_greedy:
            self._pick = np.zeros(1, dtype=np.int64)
            self._binding.bind_output(contract.NEXT_TOKEN, "cpu", 0, np.int64, [1], self._pick.ctypes.data)
        self.position = 0  # tokens already in the cache this turn

    def start(self, memory: MemoryState) -> None:
        """A new turn reading `memory`'s current STM K/V (bound once; they do not change during a turn)."""
        self._binding.clear_binding_inputs()
        memory.bind_kv_inputs(self._binding, memory.active)
        if isinstance(self.cache, StaticKVCache):
            self.cache.bind_inputs(self._binding)
        self.position, self._bound_n = 0, 0

    def prefill(self, prompt: Sequence[int]) -> np.ndarray:
        """Run the whole prompt from position 0."""
        self.position = 0
        self._ids[0, : len(prompt)] = prompt
        return self._run(len(prompt))

    def step(self, token: int) -> np.ndarray:
        """Feed one token at the next position."""
        self._ids[0, 0] = token
        return self._run(1)

    def step_greedy(self, token: int) -> int:
        """`step`, returning the graph's greedy pick (the argmax of the logits; needs `picks_greedy`)."""
        self._ids[0, 0] = token
        self._run(1)
        return int(self._pick[0])

    def logits(self) -> np.ndarray:
        """The last run's logits row (after `step_greedy`, which does not return them)."""
        return self._logits[0]

    def _run(self, n: int) -> np.ndarray:
        """Run the n ids written at the start of `_ids` after the `position` cached ones."""
        past = self.position
        bound = n == self._bound_n  # (always False off the CPU)
        if not bound:
            self._binding.bind_input("input_ids", "cpu", 0, np.int64, [1, n], self._ids_ptr)
            self._bound_n = n if self._host_inputs_live else 0
        self.cache.bind(self._binding, past, n, bound)
        self._graphs.run(contract.DECODER, self._binding)
        self.position = past + n
        return self._logits[0]
