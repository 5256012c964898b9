"""RxTSession: a loaded model package, ready to hold many conversations (one STM each)."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .conversation import Conversation
from .engine import DeviceBuffers, GraphSet
from .package import ModelPackage, load_package
from .snapshot import load_snapshot


class RxTSession:
    """Loads the four graphs once; `conversation()` gives independent conversations that may run in threads."""

    def __init__(
        self,
        package: ModelPackage,
        provider: str = "cpu",
        threads: int | None = None,
        update_workers: int = 2,
    ):
        self.package = package
        self.dims = package.manifest.model
        self.graphs = GraphSet(package, provider, threads)
        self.buffers = DeviceBuffers(self.graphs.device, self.graphs.device_id, package.float_dtype)
        self._updates = ThreadPoolExecutor(max_workers=update_workers, thread_name_prefix="rxt-memory-update")

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        provider: str = "cpu",
        threads: int | None = None,
        verify_hashes: bool = True,
    ) -> RxTSession:
        """Load a package directory; `provider` is "cpu", "cuda" or "dml"."""
        return cls(load_package(Path(model_dir), verify_hashes=verify_hashes), provider, threads)

    @property
    def provider(self) -> str:
        return self.graphs.provider

    def conversation(self, stm: np.ndarray | None = None) -> Conversation:
        """A new conversation from the package's initial STM, or from a given [L, 1, S, D] array."""
        return Conversation(self, stm)

    def restore(self, path: str | os.PathLike) -> Conversation:
        """A conversation from a snapshot written by `Conversation.save` (same model only)."""
        stm, meta = load_snapshot(path, self.package.fingerprint, self.package.stm_shape)
        conv = Conversation(self, stm)
        conv.turns = int(meta.get("turns", 0)) if isinstance(meta, dict) else 0
        return conv

    def submit(self, fn, *args) -> Future:
        return self._updates.submit(fn, *args)

    def close(self) -> None:
        self._updates.shutdown(wait=True)

    def __enter__(self) -> RxTSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
