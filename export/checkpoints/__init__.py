"""Checkpoint readers: one small adapter per source format, all producing the canonical RxTModel.

`load_checkpoint` accepts a local directory or a Hugging Face hub id (resolved with huggingface_hub: downloaded
when online, taken from the local cache when offline / HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

from pathlib import Path

from ..model import RxTModel
from .common import ALLOW_PICKLE_FLAG, CheckpointError, SourceInfo, read_json
from .native import is_native, load_native, save_native
from .rxlm import is_rxlm, load_rxlm

__all__ = [
    "ALLOW_PICKLE_FLAG",
    "CheckpointError",
    "SourceInfo",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_native",
]

READERS = ((is_native, load_native), (is_rxlm, load_rxlm))


def resolve_checkpoint(spec: str | Path) -> Path:
    """A local directory as is; otherwise `owner/name` is looked up on the Hugging Face hub (or its cache)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: a checkpoint is a directory (config.json + model.safetensors)")
        return path
    text = str(spec)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise CheckpointError(f"{spec}: no such directory (and not a hub id like 'owner/name')")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - part of the export extra
        raise CheckpointError(f"{spec}: install huggingface_hub to load hub ids") from None
    try:
        return Path(
            snapshot_download(
                repo_id=text,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*/*.json", "*/*.safetensors"],
            )
        )
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{spec}: not in the local Hugging Face cache and the hub is not reachable (offline?)"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"{spec}: could not fetch from the Hugging Face hub ({e})") from None


def load_checkpoint(
    spec: str | Path, allow_pickle: bool = False, narrow_experts: bool = False
) -> tuple[RxTModel, SourceInfo]:
    """Read any supported checkpoint into the canonical model (eval mode, fp32).

    narrow_experts=True keeps MoE expert stacks stored in a narrower float (bf16) as stored: the model computes
    the same (each selected expert is widened when used) in about half the memory; for references, not export."""
    directory = resolve_checkpoint(spec)
    if (directory / "config.json").is_file():
        read_json(
            directory / "config.json"
        )  # a malformed config.json is named as such, not as an unknown layout
    for detect, read in READERS:
        if detect(directory):
            return read(directory, allow_pickle=allow_pickle, narrow_experts=narrow_experts)
    raise CheckpointError(
        f"{directory}: unrecognised checkpoint layout; expected rxt-edge native (config.json with "
        "format 'rxt-edge-native'), rxlm (config.json with decoder_config/encoder_config/memory_attention_config), "
        "or rxlm per-component directories decoder/, encoder/, memory_attention/"
    )
