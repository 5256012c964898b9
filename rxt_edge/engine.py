"""The engine: a package's four onnxruntime sessions, its device buffers, decode slots and memory writes.

One `Engine` per loaded package, shared by every conversation of a session. It owns what conversations have in
common: the graphs (one InferenceSession each, checked against the manifest), the device allocator, a pool of
decode slots leased per turn (`decoding.DecodeSlot`), the memory-update worker threads, and the two memory
writes (install an STM; encode an interaction and update the memory). A conversation owns only its
`MemoryState`: the double-buffered STM and its cross-attention K/V on the device.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext

import numpy as np
import onnxruntime as ort

from . import contract
from .captured_decoding import CapturedDecodeSlot
from .captured_update import PaddedMemoryUpdate
from .contract import ModelDims
from .decoding import DecodeSlot
from .manifest import ManifestError
from .package import ModelPackage
from .runtimes import huge_pages, native_kernels, operators, providers

# onnxruntime's exception types (onnxruntime_pybind11_state) that mean "this graph is bad", as opposed to a
# provider or environment failure (EPFail, RuntimeException, anything else).
_GRAPH_ERRORS = frozenset(
    {"Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented"}
)
_ORT_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "int8": "tensor(int8)",
    "int32": "tensor(int32)",
    "int64": "tensor(int64)",
}


# Graphs whose runs replay CUDA graphs in a CUDA-graph engine: the decode step (captured_decoding) and the memory
# update (captured_update); memory_kv runs between conversations' buffers, uncaptured.
CAPTURED_GRAPHS = (contract.DECODER, contract.ENCODER, contract.MEMORY_UPDATE)


class SessionClosedError(RuntimeError):
    """The session (its engine) was closed: no turn or memory write can run on it any more."""


class CudaGraphUnavailableError(providers.ProviderUnavailableError):
    """onnxruntime refused to capture a graph as a CUDA graph (a node it placed off the GPU)."""


class GraphSet:
    """One InferenceSession per graph, checked against the manifest's declared I/O."""

    def __init__(
        self,
        package: ModelPackage,
        provider: str = "cpu",
        threads: int | None = None,
        cuda_graph: bool = False,
    ):
        plist, popts = providers.resolve_provider(provider)
        requires = package.manifest.requires  # refuse before loading any graph (None: a v1 package)
        operators.check_operators(requires and requires.ops, f"the package {package.directory}")
        _check_decoder_runs_on(package, provider)
        self.provider = provider
        self.device, self.device_id = providers.device_for(provider)
        self.provider_list = (plist, popts)  # for the engine's helper sessions (captured_update's copier)
        self.sessions: dict[str, ort.InferenceSession] = {}
        for name in contract.GRAPH_NAMES:
            opts = native_kernels.session_options(provider, threads)  # (with our CPU kernels where built)
            file = package.manifest.graphs[name].file
            graph_popts = popts
            if cuda_graph and name in CAPTURED_GRAPHS:
                graph_popts = [{**popts[0], **providers.CUDA_GRAPH_OPTIONS}, *popts[1:]]
            try:
                sess = ort.InferenceSession(
                    str(package.graph_path(name)), opts, providers=plist, provider_options=graph_popts
                )
            except Exception as e:  # onnxruntime raises its own exception types
                if cuda_graph and name in CAPTURED_GRAPHS and "graph capture" in str(e):
                    raise CudaGraphUnavailableError(
                        f"graphs.{name}: onnxruntime cannot capture {file} as a CUDA graph: {e}"
                    ) from e
                if type(e).__name__ in _GRAPH_ERRORS:
                    raise ManifestError(f"graphs.{name}: onnxruntime cannot load {file}: {e}") from e
                raise providers.ProviderUnavailableError(
                    f"graphs.{name}: the {provider!r} execution provider failed to create a session for "
                    f"{file}: {type(e).__name__}: {e}"
                ) from e
            providers.check_session_provider(sess, provider)
            self._check_io(name, sess, package)
            self.sessions[name] = sess
        # DirectML allows one Run at a time per session; other providers are thread-safe. With CUDA graphs, one
        # Run at a time in all: onnxruntime captures in CUDA's global mode, where another thread's allocation
        # or copy (a memory update, another slot's prompt) would break the capture.
        if cuda_graph:
            one = threading.RLock()
            self._locks = {n: one for n in self.sessions}
        else:
            self._locks = {
                n: threading.RLock() if provider == "dml" else nullcontext() for n in self.sessions
            }

    def has_output(self, graph: str, name: str) -> bool:
        return any(o.name == name for o in self.sessions[graph].get_outputs())

    @staticmethod
    def _check_io(name: str, sess: ort.InferenceSession, package: ModelPackage) -> None:
        """Names, dtypes and every fixed dimension as the manifest declares them: a graph that disagrees
        would fail at the first run (or worse, read buffers of another size), so it is refused at load."""
        entry = package.manifest.graphs[name]
        for kind, declared, actual in (
            ("inputs", entry.inputs, sess.get_inputs()),
            ("outputs", entry.outputs, sess.get_outputs()),
        ):
            got = [a.name for a in actual]
            want = [s.name for s in declared]
            if got != want:
                raise ManifestError(
                    f"graphs.{name}.{kind}: the graph has {got}, the manifest declares {want}"
                )
            for i, (spec, arg) in enumerate(zip(declared, actual, strict=True)):
                where = f"graphs.{name}.{kind}[{i}] ({spec.name})"
                if arg.type != _ORT_TYPES[spec.dtype]:
                    raise ManifestError(
                        f"{where}: the graph's type is {arg.type}, the manifest declares {spec.dtype}"
                    )
                if _shape_conflict(spec.shape, arg.shape):
                    raise ManifestError(
                        f"{where}: the graph's shape is {list(arg.shape)}, the manifest declares {list(spec.shape)}"
                    )

    def run(self, name: str, binding: ort.IOBinding, options: ort.RunOptions | None = None) -> None:
        with self._locks[name]:
            self.sessions[name].run_with_iobinding(binding, options)

    def lock(self, name: str):
        """The lock `run(name)` holds (re-entrant where it is shared): hold it to keep a run's device copies
        in and out together with the run."""
        return self._locks[name]

    def binding(self, name: str) -> ort.IOBinding:
        return self.sessions[name].io_binding()


def _check_decoder_runs_on(package: ModelPackage, provider: str) -> None:
    """onnxruntime's CUDA GroupQueryAttention is float16/bfloat16 only: a float32 static-cache decoder would
    run its attention on the CPU, copying the cache both ways every step. Refused, with what to do instead."""
    if (
        providers.canonical_name(provider) == "cuda"
        and package.manifest.graphs[contract.DECODER].kv_cache == "static"
    ):
        if package.float_dtype == np.float32:
            raise providers.ProviderUnavailableError(
                f"{package.directory}: a float32 decoder with the static KV cache cannot run on CUDA "
                "(GroupQueryAttention's CUDA kernel is float16/bfloat16 only); use an fp16 package "
                "(`rxt-edge export --dtype fp16` or `rxt-edge quantize --scheme fp16`) or export with "
                "`--kv-cache dynamic`"
            )


def _shape_conflict(declared: tuple[int | str, ...], graph: list[int | str | None]) -> bool:
    """True when the ranks differ, or a dimension the graph fixes is not the one the manifest declares (a
    symbolic manifest dimension, like `seq`, varies at run time, so the graph must leave it open too)."""
    if len(declared) != len(graph):
        return True
    return any(isinstance(g, int) and g != d for d, g in zip(declared, graph, strict=True))


class DeviceBuffers:
    """Allocation helpers for one device: OrtValues keep their memory alive while referenced."""

    def __init__(self, device: str, device_id: int, dtype: np.dtype):
        self.device, self.device_id, self.dtype = device, device_id, np.dtype(dtype)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | str | None = None) -> ort.OrtValue:
        """A buffer of `shape` in the package's float dtype (or `dtype`)."""
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if self.device == "cpu":  # aliases numpy memory; zeroed so unused rows are finite
            return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype))
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, self.device_id)

    def zeros(self, shape: tuple[int, ...]) -> ort.OrtValue:
        """A zero-filled buffer on the device. For memory a kernel reads before anything is written there: fused
        attention multiplies the masked cache rows by probability 0, and 0 x NaN left by an earlier allocation
        in fresh CUDA memory is NaN (seen on an H200: every fp16 static-cache logit NaN)."""
        return self.from_numpy(np.zeros(shape, self.dtype))

    def from_numpy(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(array, self.dtype), self.device, self.device_id
        )


class MemoryState:
    """Double-buffered STM and its cross-attention K/V: an update writes the spare set, then the sets swap."""

    def __init__(self, dims: ModelDims, buf: DeviceBuffers, memory_kv: str = "float"):
        stm_shape = (dims.memory_layers, 1, dims.stm_slots, dims.dim)
        self.stm = [buf.empty(stm_shape) for _ in range(2)]
        specs = contract.memory_kv_specs(dims, buf.dtype.name, memory_kv)  # K/V (and scales) per layer
        self.kv = [{s.name: buf.empty(s.conversation_shape, s.dtype) for s in specs} for _ in range(2)]
        self.active = 0

    @property
    def spare(self) -> int:
        return 1 - self.active

    def bind_kv_outputs(self, binding: ort.IOBinding, which: int) -> None:
        for name, buffer in self.kv[which].items():
            binding.bind_ortvalue_output(name, buffer)

    def bind_kv_inputs(self, binding: ort.IOBinding, which: int) -> None:
        for name, buffer in self.kv[which].items():
            binding.bind_ortvalue_input(name, buffer)


class Engine:
    """What every conversation of one package shares: graphs, buffers, decode slots, memory-update workers.

    `max_slots` bounds how many turns decode at once (a turn waits for a free slot); None = no bound.

    Ctrl-C (KeyboardInterrupt) can land wherever the interpreter checks for signals: at a function's entry and
    after any call returns. So nothing here moves a resource with two steps that a signal could split: a slot
    is leased by one store (its lessee), and a memory update is queued by one C call (`queue.SimpleQueue.put`)
    right after the caller has recorded it (see `Conversation._commit`)."""

    def __init__(
        self,
        package: ModelPackage,
        provider: str = "cpu",
        threads: int | None = None,
        update_workers: int = 2,
        max_slots: int | None = None,
        cuda_graph: bool | None = None,
        use_huge_pages: bool | None = None,
    ):
        self.package = package
        self.dims = package.manifest.model
        self.special = dict(package.manifest.special_tokens)
        _check_slot_fits(self.dims, package.float_dtype)
        self.kv_cache = package.manifest.graphs[contract.DECODER].kv_cache
        self.memory_kv = package.manifest.graphs[contract.DECODER].memory_kv
        self.cuda_graph = _use_cuda_graph(cuda_graph, provider, self.kv_cache)
        on_cpu = providers.canonical_name(provider) == "cpu"
        promote = on_cpu and huge_pages.wanted(use_huge_pages)
        before = huge_pages.snapshot() if promote else frozenset()
        try:
            self.graphs = GraphSet(package, provider, threads, self.cuda_graph)
        except CudaGraphUnavailableError:  # asked for: the error stands; by default: load without capture
            if cuda_graph is not None:
                raise
            self.cuda_graph = False
            self.graphs = GraphSet(package, provider, threads, False)
        self.buffers = DeviceBuffers(self.graphs.device, self.graphs.device_id, package.float_dtype)
        # the weights onnxruntime just copied and prepacked, on 2 MiB pages (runtimes/huge_pages.py)
        off = "turned off" if on_cpu else f"the weights live on the {provider} device"
        self.huge_pages = huge_pages.promote(before) if promote else huge_pages.Promotion(skipped=off)
        self._padded_update = (
            PaddedMemoryUpdate(self.graphs, self.buffers, self.dims, self.new_memory())
            if self.cuda_graph
            else None
        )
        self._slots: list[DecodeSlot] = []
        self._lessees: list[object | None] = []  # per slot: the lease holding it, or None when free
        self._max_slots = max_slots
        self._slots_cv = threading.Condition()
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()  # memory updates: (future, fn, args) or None
        self.commit_lock = threading.Lock()  # closing vs queueing: a job is queued before the stop or refused
        self._workers = [
            threading.Thread(target=_work, args=(self.jobs,), name=f"rxt-memory-update-{i}", daemon=True)
            for i in range(update_workers)
        ]
        self.closed = False
        for t in self._workers:
            t.start()
        # close(), or at exit / when dropped without close(): finish the queued updates, stop the workers
        self._stop = weakref.finalize(self, _stop, self.jobs, self._workers)

    @property
    def provider(self) -> str:
        return self.graphs.provider

    def check_open(self) -> None:
        if self.closed:
            raise SessionClosedError("this session is closed; load the model again to go on")

    # --- decode slots ---------------------------------------------------------------------------------
    @contextmanager
    def lease_slot(self, memory: MemoryState) -> Iterator[DecodeSlot]:
        """A decode slot reading `memory`'s STM K/V, returned to the pool when the block ends."""
        self.check_open()
        lease: list[int] = []  # the index of the slot this lease holds, once taken
        try:
            self._take_slot(lease)
            slot = self._slots[lease[0]]
            slot.start(memory)
            yield slot
        finally:
            for i in lease:
                self._lessees[i] = None  # first, and one store: a Ctrl-C from here on cannot keep the slot
            with self._slots_cv:
                self._slots_cv.notify()

    def _take_slot(self, lease: list[int]) -> None:
        with self._slots_cv:
            while True:
                for i, lessee in enumerate(self._lessees):
                    if lessee is None:
                        self._lessees[i] = lease  # taken, and the lease knows it: nothing in between
                        lease.append(i)
                        return
                if self._max_slots is None or len(self._slots) < self._max_slots:
                    break
                self._slots_cv.wait(0.1)  # re-check: a release interrupted before its notify still frees
            # (the first free slot is taken above, so a lone conversation's turns reuse the same buffers)
            self._slots.append(self._new_slot(graph_id=len(self._slots) + 1))
            self._lessees.append(None)  # (a Ctrl-C before this leaves an unused slot: harmless)
            i = len(self._slots) - 1
            self._lessees[i] = lease
            lease.append(i)

    def _new_slot(self, graph_id: int) -> DecodeSlot:
        if self.cuda_graph:
            memory = MemoryState(self.dims, self.buffers, self.memory_kv)
            return CapturedDecodeSlot(self.graphs, self.buffers, self.dims, memory, graph_id)
        return DecodeSlot(self.graphs, self.buffers, self.dims, self.kv_cache)

    @property
    def slots_allocated(self) -> int:
        return len(self._slots)

    # --- memory ---------------------------------------------------------------------------------------
    def new_memory(self) -> MemoryState:
        return MemoryState(self.dims, self.buffers, self.memory_kv)

    def stage_stm(self, memory: MemoryState, stm: np.ndarray) -> int:
        """Copy `stm` into the spare buffers and project its cross-attention K/V; return the spare index.

        Nothing is active yet: the caller swaps (`memory.active = index`) together with its own state, so
        an interruption leaves both as they were (the caller serialises STM writes)."""
        self.check_open()
        spare = memory.spare
        # Copy into the preallocated spare buffer: an OrtValue made from the array would alias it on the CPU,
        # and later updates (which write the spare buffer) would overwrite the caller's array or the initial STM.
        b = self.graphs.binding(contract.MEMORY_KV)
        b.bind_ortvalue_input("stm", memory.stm[spare])
        memory.bind_kv_outputs(b, spare)
        with self.graphs.lock(contract.MEMORY_KV):  # the host copy too, where runs are serialised
            memory.stm[spare].update_inplace(np.ascontiguousarray(stm, self.buffers.dtype))
            self.graphs.run(contract.MEMORY_KV, b)
        return spare

    def install_stm(self, memory: MemoryState, stm: np.ndarray) -> None:
        """`stage_stm`, then swap (caller serialises)."""
        memory.active = self.stage_stm(memory, stm)

    def update_memory(self, memory: MemoryState, interaction: list[int], swap: bool = True) -> int:
        """Encoder + memory update over one interaction into the spare buffers; swap only on success.

        Returns the spare index; with `swap=False` the caller swaps it in (together with its own state). A
        CUDA-graph engine writes the spare STM only: its decode slots project their K/V from the STM."""
        self.check_open()
        if self._padded_update is not None:  # CUDA graphs: padded, replayed (captured_update)
            spare = self._padded_update(memory, interaction)
            if swap:
                memory.active = spare
            return spare
        g, buf = self.graphs, self.buffers
        ids = np.asarray([interaction], dtype=np.int64)
        mask = np.ones_like(ids)
        enc = g.binding(contract.ENCODER)
        enc.bind_cpu_input("input_ids", ids)
        enc.bind_cpu_input("attention_mask", mask)
        enc.bind_output("encoded", buf.device, buf.device_id)
        g.run(contract.ENCODER, enc)
        upd = g.binding(contract.MEMORY_UPDATE)
        upd.bind_ortvalue_input("stm", memory.stm[memory.active])
        upd.bind_ortvalue_input("encoded", enc.get_outputs()[0])
        upd.bind_cpu_input("attention_mask", mask)
        spare = memory.spare
        upd.bind_ortvalue_output("new_stm", memory.stm[spare])
        memory.bind_kv_outputs(upd, spare)
        g.run(contract.MEMORY_UPDATE, upd)
        if swap:
            memory.active = spare  # the only mutation, after every write succeeded
        return spare

    def submit(self, fn: Callable[..., None], *args) -> Future:
        """Run `fn(*args)` on a memory-update worker thread (refused once the engine is closed)."""
        future: Future = Future()
        with self.commit_lock:
            self.check_open()
            self.jobs.put((future, fn, args))
        return future

    def close(self) -> None:
        """Refuse new turns and memory writes, finish the queued updates, stop the workers."""
        with self.commit_lock:
            self.closed = True
        self._stop()


def _stop(jobs: queue.SimpleQueue, workers: list[threading.Thread]) -> None:
    for _ in workers:
        jobs.put(None)
    for t in workers:
        if t is not threading.current_thread():  # the last reference may drop in a worker
            t.join()


def _work(jobs: queue.SimpleQueue) -> None:
    """A memory-update worker: run jobs until the stop marker (holds no reference to the engine)."""
    while (job := jobs.get()) is not None:
        future, fn, args = job
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - delivered to the waiting turn
                future.set_exception(e)
        del job, future, fn, args


def _use_cuda_graph(requested: bool | None, provider: str, kv_cache: str) -> bool:
    """None: on wherever it can be (CUDA, static cache). True where it cannot: ValueError saying why."""
    possible = providers.canonical_name(provider) == "cuda" and kv_cache == "static"
    if requested and not possible:
        raise ValueError(
            "CUDA graphs need the cuda provider and a package whose decoder has the static KV cache "
            f"(this one: provider {provider!r}, {kv_cache} KV cache)"
        )
    return possible if requested is None else bool(requested)


def _check_slot_fits(dims: ModelDims, dtype: np.dtype) -> None:
    """Refuse dims whose one decode slot (a `max_seq_len` KV cache, ids, a logits row) exceeds this machine's
    memory: no graph declares max_seq_len, so a hostile manifest could otherwise ask for terabytes."""
    item = np.dtype(dtype).itemsize
    kv = 2 * dims.decoder_layers * dims.max_seq_len * dims.self_kv_heads * dims.head_dim * item
    need = kv + dims.max_seq_len * 8 + dims.vocab_size * item
    have = _physical_memory()
    if have is not None and need > have:
        raise ManifestError(
            f"model: one turn's buffers for these dims (max_seq_len {dims.max_seq_len}, vocab_size "
            f"{dims.vocab_size}) need {need / 2**30:.1f} GiB, more than this machine's {have / 2**30:.1f} GiB"
        )


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX (Windows): no bound from here
        return None
