"""Where the shipped demo model is: installed package data in a wheel, `models/demo/` in a source checkout.

pyproject.toml installs `models/demo/package-int8` (16 MB) as the data-only package `rxt_edge.demo`, so a plain
`pip install rxt-edge` can chat; a source checkout (editable install) finds the same files in the tree.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

DEMO_MODULE = "rxt_edge.demo"
DEMO_PACKAGE = Path("models", "demo", "package-int8")


class DemoModelMissing(LookupError):
    """Neither the installed package data nor a source checkout holds the demo model."""


def demo_locations() -> list[Path]:
    """Where the demo package may be: installed package data first, then the source checkout's tree."""
    import rxt_edge

    found: list[Path] = []
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(DEMO_MODULE)
        if spec is not None:
            # an editable install adds a placeholder entry to a namespace's path: not a directory
            found += [Path(p) for p in spec.submodule_search_locations or () if "__editable__" not in p]
    found.append(Path(rxt_edge.__file__).resolve().parents[1] / DEMO_PACKAGE)
    return list(dict.fromkeys(found))


def find_demo_model(candidates: Iterable[Path] | None = None) -> Path:
    """The first candidate holding a package manifest; DemoModelMissing names every place it looked."""
    candidates = demo_locations() if candidates is None else list(candidates)
    for path in candidates:
        if (path / "manifest.json").is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DemoModelMissing(
        f"the shipped demo model was not found (looked in {looked}); reinstall rxt-edge, "
        "or pass a model package directory: rxt-edge chat MODEL_DIR"
    )
