"""rxt-edge's own checkpoint format: `config.json` (RxTConfig) + `model.safetensors` with the canonical keys.

Documented in docs/native-format.md. Written by `save_native`, e.g. by the demo model's training recipe.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..config import ConfigError, RxTConfig
from ..model import RxTModel
from .common import CheckpointError, SourceInfo, fill_model, fingerprint, load_tensors, read_json, weight_file

FORMAT = "rxt-edge-native"
VERSION = 1


def is_native(directory: Path) -> bool:
    cfg = directory / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def load_native(
    directory: Path, allow_pickle: bool = False, narrow_experts: bool = False
) -> tuple[RxTModel, SourceInfo]:
    raw = read_json(directory / "config.json")
    version = raw.get("format_version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{directory / 'config.json'}: format_version {version!r} is not supported (<= {VERSION})"
        )
    try:
        cfg = RxTConfig.from_dict(raw.get("model", None))
    except ConfigError as e:
        raise CheckpointError(f"{directory / 'config.json'}: {e}") from None
    model = RxTModel(cfg).eval()
    wfile = weight_file(directory, allow_pickle)
    tensors = load_tensors(wfile, allow_pickle)
    fill_model(model, tensors, lambda k: [k], lambda k: False, str(wfile), narrow_experts)
    tok = next(
        (directory / n for n in ("tokenizer.json", "tokenizer.model") if (directory / n).is_file()), None
    )
    info = SourceInfo(FORMAT, str(directory), fingerprint([directory / "config.json", wfile]), tok)
    return model, info


def save_native(model: RxTModel, directory: Path | str) -> None:
    """Write config.json + model.safetensors atomically (temp files then rename)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state, seen = {}, set()
    for k, v in model.state_dict().items():
        if v.data_ptr() in seen and k.startswith("encoder.embed"):
            continue  # the shared embedding is stored once, under decoder.embed.weight
        seen.add(v.data_ptr())
        state[k] = v.detach().contiguous().cpu()
    cfg = {"format": FORMAT, "format_version": VERSION, "model": model.cfg.to_dict()}
    for name, write in (
        ("model.safetensors", lambda p: save_file(state, p)),
        ("config.json", lambda p: Path(p).write_text(json.dumps(cfg, indent=2))),
    ):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, directory / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
