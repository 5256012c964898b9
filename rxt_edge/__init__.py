"""rxt-edge: run Reactive Transformer (RxT) model packages with onnxruntime, no torch.

from rxt_edge import RxTSession
session = RxTSession.load("models/demo/package")
conv = session.conversation()
print(conv.say("Hi, I'm Ann."))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = [
    "Conversation",
    "ConversationBusyError",
    "EmptyQueryError",
    "GenerationConfig",
    "ManifestError",
    "MemoryUpdateError",
    "PromptTooLongError",
    "ProviderUnavailableError",
    "RxTSession",
    "SamplingConfig",
    "SessionClosedError",
    "SnapshotError",
    "SystemPromptUnsupportedError",
    "TurnStats",
]

_LAZY = {
    "RxTSession": "session",
    "Conversation": "conversation",
    "ConversationBusyError": "conversation",
    "EmptyQueryError": "conversation",
    "MemoryUpdateError": "conversation",
    "PromptTooLongError": "conversation",
    "SystemPromptUnsupportedError": "conversation",
    "TurnStats": "conversation",
    "ManifestError": "manifest",
    "SamplingConfig": "sampling",
    "GenerationConfig": "sampling",
    "SnapshotError": "snapshot",
    "SessionClosedError": "engine",
    "ProviderUnavailableError": "runtimes.providers",
}

if TYPE_CHECKING:  # pragma: no cover
    from .conversation import (
        Conversation,
        ConversationBusyError,
        EmptyQueryError,
        MemoryUpdateError,
        PromptTooLongError,
        SystemPromptUnsupportedError,
        TurnStats,
    )
    from .engine import SessionClosedError
    from .manifest import ManifestError
    from .runtimes.providers import ProviderUnavailableError
    from .sampling import GenerationConfig, SamplingConfig
    from .session import RxTSession
    from .snapshot import SnapshotError


def __getattr__(name: str):
    """Import lazily, so `import rxt_edge` stays cheap and light modules (contract, manifest) load alone."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'rxt_edge' has no attribute {name!r}")
