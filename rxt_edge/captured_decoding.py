"""A decode slot whose one-token step is replayed from a captured CUDA graph (CUDA, static KV cache).

A decode step on a GPU is launch-bound: a hundred-odd small kernels, each launched from the host. onnxruntime can
capture the step once as a CUDA graph (`enable_cuda_graph`) and replay it with one launch, provided every run
of that graph sees the same shapes and the same device addresses. With the static cache (decoding.StaticKVCache)
the shapes are fixed; this slot fixes the addresses:

- the token id and `seqlens_k` live in one device buffer owned by the slot, written (one copy) before each
  replay (a host array bound instead would be copied at capture time only and never refreshed on replay);
- the logits land in a device buffer copied to the host after each run (one copy, a new array); where the
  decoder outputs its greedy pick, a greedy step copies only that id (`step_greedy`);
- the memory cross-attention K/V are the slot's own: at the start of a turn the memory_kv graph projects the
  conversation's current STM into them (one run per turn), so a graph captured in one conversation stays
  valid for the next one.

The prompt runs uncaptured (`gpu_graph_id` -1: its length varies); each slot captures its own graph (ids 1, 2,
...). onnxruntime runs a graph id normally a couple of times before it captures it; a run that is captured is
also executed once, so no state advances twice (and a repeated step would rewrite the same cache row anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import onnxruntime as ort

from . import contract
from .contract import ModelDims
from .decoding import DecodeSlot

if TYPE_CHECKING:
    from .engine import DeviceBuffers, GraphSet, MemoryState

T = TypeVar("T")


def _run_options(graph_id: int) -> ort.RunOptions:
    opts = ort.RunOptions()
    opts.add_run_config_entry("gpu_graph_id", str(graph_id))
    return opts


class CapturedDecodeSlot(DecodeSlot):
    """`DecodeSlot` with the step replayed from CUDA graph `graph_id` (>= 1, one per slot of a session)."""

    def __init__(
        self,
        graphs: GraphSet,
        buffers: DeviceBuffers,
        dims: ModelDims,
        memory: MemoryState,
        graph_id: int,
    ):
        super().__init__(graphs, buffers, dims, "static")
        self._memory = memory  # this slot's STM K/V (set 0): fixed addresses for the captured graph
        # a step's token id and seqlens_k share one device buffer: one host-to-device copy a step, not two
        # (int64 [2]: the id, then seqlens_k as the int32 in bytes 8-11)
        self._step_in = np.zeros(2, dtype=np.int64)
        self._step_seqlens = self._step_in.view(np.int32)[2:3]  # (a view made once, not per step)
        self._device = (buffers.device, buffers.device_id)
        self._step_in_dev = ort.OrtValue.ortvalue_from_numpy(self._step_in, *self._device)
        self._logits_dev = buffers.empty(self._logits.shape)
        self._binding.bind_ortvalue_output("logits", self._logits_dev)
        if self.picks_greedy:  # the pick stays on the device too: a greedy step copies 8 bytes, not the row
            self._pick_dev = ort.OrtValue.ortvalue_from_numpy(self._pick, *self._device)
            self._binding.bind_ortvalue_output(contract.NEXT_TOKEN, self._pick_dev)
        self._replay_options, self._uncaptured = _run_options(graph_id), _run_options(-1)

    def start(self, memory: MemoryState) -> None:
        kv = self._graphs.binding(contract.MEMORY_KV)
        kv.bind_ortvalue_input("stm", memory.stm[memory.active])
        self._memory.bind_kv_outputs(kv, 0)
        # (all runs share one lock with CUDA graphs: engine.GraphSet)
        self._graphs.run(contract.MEMORY_KV, kv)
        self._memory.active = 0
        super().start(self._memory)

    def prefill(self, prompt: Sequence[int]) -> np.ndarray:
        self.position = 0
        n = len(prompt)
        self._ids[0, :n] = prompt
        self.cache.bind(self._binding, 0, n)
        self._binding.bind_input("input_ids", "cpu", 0, np.int64, [1, n], self._ids_ptr)
        with self._graphs.lock(contract.DECODER):
            self._graphs.run(contract.DECODER, self._binding, self._uncaptured)
            logits = self._fetch_logits()
        # from here on the step's inputs are the slot's device buffer, bound once
        (dev, dev_id), ptr = self._device, self._step_in_dev.data_ptr()
        self._binding.bind_input("input_ids", dev, dev_id, np.int64, [1, 1], ptr)
        self._binding.bind_input(contract.SEQLENS, dev, dev_id, np.int32, [1], ptr + 8)
        self.position = n
        return logits

    def step(self, token: int) -> np.ndarray:
        return self._replay(token, self._fetch_logits)

    def step_greedy(self, token: int) -> int:
        return self._replay(token, self._fetch_pick)

    def logits(self) -> np.ndarray:
        with self._graphs.lock(contract.DECODER):  # a copy during another slot's capture would break it
            return self._fetch_logits()

    def _replay(self, token: int, fetch: Callable[[], T]) -> T:
        self.cache.advance(self.position, 1)  # bounds check, seqlens = position (copied to the device below)
        self._step_in[0] = token
        self._step_seqlens[0] = self.cache.seqlens[0]
        with self._graphs.lock(contract.DECODER):  # no other GPU work between the copy and the replay
            self._step_in_dev.update_inplace(self._step_in)
            self._graphs.run(contract.DECODER, self._binding, self._replay_options)
            out = fetch()
        self.position += 1
        return out

    def _fetch_pick(self) -> int:
        return int(self._pick_dev.numpy()[0])

    def _fetch_logits(self) -> np.ndarray:
        # the device-to-host copy is a new array already: no second copy into a host buffer
        return self._logits_dev.numpy()[0]
