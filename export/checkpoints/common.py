"""Reading weight files safely, and filling the canonical model key by key with a shape check each."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..layers import expert_stack_names

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ALLOW_PICKLE_FLAG = "--allow-pickle"


class CheckpointError(ValueError):
    """The checkpoint is missing, malformed, or does not match its config; the message names the file or key."""


@dataclass
class SourceInfo:
    format: str  # "rxlm" | "rxlm-components" | "native"
    path: str
    fingerprint: str  # sha256 over the config and weight files
    tokenizer_file: Path | None = None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return data


def weight_file(directory: Path, allow_pickle: bool) -> Path:
    """The directory's weight file: safetensors preferred; pickle only when explicitly allowed."""
    st = sorted(directory.glob("*.safetensors"))
    if st:
        if len(st) > 1 and not (directory / "model.safetensors").exists():
            raise CheckpointError(
                f"{directory}: several .safetensors files and no model.safetensors: {[p.name for p in st]}"
            )
        return directory / "model.safetensors" if (directory / "model.safetensors").exists() else st[0]
    pickles = (
        [p for p in sorted(directory.iterdir()) if p.suffix in PICKLE_SUFFIXES] if directory.is_dir() else []
    )
    if pickles:
        if not allow_pickle:
            raise CheckpointError(
                f"{pickles[0]}: pickle weight files can run arbitrary code when loaded and are refused by default; "
                f"convert to safetensors, or pass {ALLOW_PICKLE_FLAG} if you trust this file"
            )
        return pickles[0]
    raise CheckpointError(f"{directory}: no weight file (model.safetensors) found")


def load_tensors(path: Path, allow_pickle: bool = False, prefix: str = "") -> Mapping[str, torch.Tensor]:
    """The file's tensors by name (`prefix` before each). safetensors are read lazily, one tensor per lookup
    (safetensors_stream.LazyTensors): filling a model then peaks at model + one tensor, not model + file."""
    if path.suffix == ".safetensors":
        from .safetensors_stream import LazyTensors

        return LazyTensors(path, prefix)
    if not allow_pickle:
        raise CheckpointError(
            f"{path}: pickle files are refused by default; pass {ALLOW_PICKLE_FLAG} if you trust it"
        )
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict")
    return {prefix + k: v for k, v in obj.items()}


def fingerprint(files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def fill_model(
    model: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    source_names: Callable[[str], list[str]],
    ignorable: Callable[[str], bool],
    where: str,
    narrow_experts: bool = False,
) -> None:
    """Copy every parameter/buffer of `model` from `tensors` (a dict or a lazy mapping: each is read once).

    With `narrow_experts`, MoE expert stacks whose source is a narrower float (a bf16 checkpoint's) keep the
    source's values and dtype instead of a widened copy: a reference model of RxT-Beta's size then fits beside
    its runtime in 24 GB (load_checkpoint).

    `source_names(our_key)` lists the checkpoint keys that may hold it (aliases in order of preference). Each
    copy checks the shape; a missing key, a wrong shape, a non-finite value, or a checkpoint key nobody asked
    for (and not `ignorable`) raises CheckpointError naming it.
    """
    used: set[str] = set()
    keep_narrow = expert_stack_names(model) if narrow_experts else set()
    own = dict(model.state_dict(keep_vars=True))
    seen_ids: set[int] = set()
    for key, dest in own.items():
        if id(dest) in seen_ids:  # tied tensors (shared embedding) are filled once
            continue
        seen_ids.add(id(dest))
        candidates = source_names(key)
        found = next((c for c in candidates if c in tensors), None)
        if found is None:
            raise CheckpointError(f"{where}: missing tensor {candidates[0]!r} (for {key})")
        src = tensors[found]
        if tuple(src.shape) != tuple(dest.shape):
            raise CheckpointError(
                f"{where}: tensor {found!r} has shape {tuple(src.shape)}, the config needs {tuple(dest.shape)}"
            )
        if src.is_floating_point() and not torch.isfinite(src).all():
            raise CheckpointError(f"{where}: tensor {found!r} contains NaN or Inf values")
        if key in keep_narrow and src.is_floating_point() and src.element_size() < dest.element_size():
            dest.data = src  # the lazy reader's tensor is fresh: nothing else holds it
        else:
            with torch.no_grad():
                dest.copy_(src.to(dest.dtype))
        used.update(c for c in candidates if c in tensors)
    extra = sorted(k for k in tensors if k not in used and not ignorable(k))
    if extra:
        raise CheckpointError(
            f"{where}: {len(extra)} tensor(s) the config does not explain, e.g. {extra[:5]} "
            "(config and weights disagree?)"
        )
