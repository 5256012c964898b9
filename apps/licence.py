"""The licence a checkpoint declares, so `rxt-edge export` can say that the model keeps it.

rxt-edge is Apache-2.0, but a model keeps its own licence through export and quantization (Reactive AI's RxT
models: RAML; the rxlm library: RAFL; both non-commercial). Read from what a checkpoint directory usually
carries: a `license` key in config.json, the model card's front matter (README.md, as on the Hugging Face hub),
or a LICENSE file. Plain text parsing only: nothing here executes or unpickles anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "LICENCE.md", "LICENCE.txt")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
_MAX_READ = 1 << 20  # a model card or licence file beyond 1 MiB is not read


def declared_licence(directory: Path) -> str | None:
    """E.g. "RAML-1.0 (config.json)"; None when the checkpoint declares none."""
    for reader in (_from_config, _from_model_card, _from_licence_file):
        found = reader(directory)
        if found:
            return found
    return None


def _read(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_READ:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _from_config(directory: Path) -> str | None:
    text = _read(directory / "config.json")
    try:
        config = json.loads(text) if text else None
    except ValueError:
        return None
    if isinstance(config, dict):
        for key in ("license", "licence"):
            if isinstance(config.get(key), str) and config[key].strip():
                return f"{config[key].strip()} (config.json)"
    return None


def _from_model_card(directory: Path) -> str | None:
    """The hub's model-card keys: `license`, and for `license: other` also `license_name` / `license_link`."""
    text = _read(directory / "README.md")
    match = _FRONT_MATTER.match(text or "")
    if not match:
        return None
    keys = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("license", "license_name", "license_link"):
            keys[key.strip()] = value.strip().strip("'\"")
    name = keys.get("license_name") if keys.get("license") in (None, "", "other") else keys["license"]
    name = name or keys.get("license")
    if not name:
        return None
    link = f", {keys['license_link']}" if keys.get("license_link") else ""
    return f"{name} (README.md{link})"


def _from_licence_file(directory: Path) -> str | None:
    for name in LICENCE_FILES:
        text = _read(directory / name)
        first = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
        if first:
            return f"{first[:80]} ({name})"
    return None
