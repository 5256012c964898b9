"""The layering rule as a check that fails: import-linter's contracts in pyproject.toml (`[tool.importlinter]`).

apps > bench > export > core (rxt_edge's own modules) > runtimes, and no torch/onnx in the core, the runtimes
or the chat app. grimp finds a package's modules by walking its directory, but the package-dir mapping puts
export/, apps/, bench/ and runtimes/ outside rxt_edge/; so the test lays the mapping out as one tree of file
symlinks and runs `lint-imports` on it. `test_a_bad_import_breaks_the_contracts` proves the check can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"

pytestmark = pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")


def _config() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def _lay_out(root: Path) -> Path:
    """The installed layout of the package (pyproject's package-dir mapping) under `root`, as file symlinks.

    Every folder with an `__init__.py` under a mapped folder is included, listed in `packages` or not."""
    mapping: dict[str, str] = _config()["tool"]["setuptools"]["package-dir"]
    for package, folder in mapping.items():
        base = REPO / folder
        for init in [base / "__init__.py", *sorted(base.rglob("*/__init__.py"))]:
            if not init.is_file():
                continue
            rel = init.parent.relative_to(base)
            target = root / Path(*package.split(".")) / rel
            target.mkdir(parents=True, exist_ok=True)
            for f in init.parent.glob("*.py"):
                (target / f.name).symlink_to(f)
    return root


def _lint(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` in `root` (it reads pyproject.toml there: a link to ours), the tree ahead on the path."""
    (root / "pyproject.toml").symlink_to(PYPROJECT)
    env = {**os.environ, "PYTHONPATH": str(root)}  # ahead of the editable install's finder
    lint = Path(sys.executable).with_name("lint-imports")
    cmd = [str(lint if lint.exists() else shutil.which("lint-imports")), "--no-cache"]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_hold(tmp_path):
    result = _lint(_lay_out(tmp_path))
    assert result.returncode == 0, f"lint-imports:\n{result.stdout}\n{result.stderr}"
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout


def test_a_bad_import_breaks_the_contracts(tmp_path):
    """An upward import (core -> export), torch in the chat app, and a core module the layers do not list."""
    root = _lay_out(tmp_path)
    (root / "rxt_edge" / "contract.py").unlink()  # the mirror's copy only, never the repo's file
    (root / "rxt_edge" / "contract.py").write_text(
        (REPO / "rxt_edge" / "contract.py").read_text() + "\nfrom rxt_edge.export import model  # noqa\n"
    )
    (root / "rxt_edge" / "apps" / "chat.py").unlink()
    (root / "rxt_edge" / "apps" / "chat.py").write_text("import torch  # noqa\n")
    (root / "rxt_edge" / "stray.py").write_text('"""a core module nobody placed in a layer"""\n')
    result = _lint(root)
    assert result.returncode != 0
    out = result.stdout
    assert "Contracts: 0 kept, 2 broken." in out, out
    assert "rxt_edge.contract -> rxt_edge.export.model" in out, out
    assert "rxt_edge.apps.chat -> torch" in out, out
    assert "rxt_edge.stray" in out, out


def test_the_no_torch_contract_covers_every_core_module():
    """The forbidden contract lists its modules by name: it must name every module of the core layer."""
    contracts = {c["id"]: c for c in _config()["tool"]["importlinter"]["contracts"]}
    core_layer = next(layer for layer in contracts["layers"]["layers"] if ":" in layer)
    core = {f"rxt_edge.{m.strip()}" for m in core_layer.split(":")}
    sources = set(contracts["no-torch"]["source_modules"])
    assert core <= sources, f"add to the no-torch contract: {sorted(core - sources)}"
    assert sources - core == {"rxt_edge.runtimes", "rxt_edge.apps.chat", "rxt_edge.apps.serve"}
