"""`import rxt_edge` and a whole conversation in a virtualenv without torch (issue 4).

Builds a fresh venv, installs the project from a copy of its sources (non-editable: only the runtime
dependencies come from PyPI, never torch), and runs a conversation on an exported package there. The tokens must
equal those of the runtime in this (torch-having) environment, and torch must be neither imported nor importable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rxt_edge import RxTSession

REPO = Path(__file__).resolve().parents[1]
# every folder the package-dir mapping names (a new one, e.g. bench/, must not break the install)
_PACKAGE_DIRS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
SOURCES = ("pyproject.toml", "README.md", *dict.fromkeys(_PACKAGE_DIRS.values()))
NETWORK_ERRORS = (
    "Could not find a version",
    "No matching distribution",
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ProxyError",
    "Network is unreachable",
    "Read timed out",
    "ConnectTimeoutError",
)

SCRIPT = r"""
import importlib.util, json, sys
import rxt_edge
from rxt_edge import RxTSession

package, snapshot, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with RxTSession.load(package) as session:
    conv = session.conversation()
    ids = [conv.interact_ids(q, max_new_tokens=12) for q in queries]
    text = conv.say("Hi, I'm Ann and I live in Paris.", max_new_tokens=12)
    conv.save(snapshot)
    restored = session.restore(snapshot).interact_ids(queries[0], max_new_tokens=12)
print(json.dumps({
    "module": rxt_edge.__file__,
    "ids": ids,
    "text": text,
    "restored": restored,
    "torch_imported": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
    "torch_importable": importlib.util.find_spec("torch") is not None,
}))
"""


def _run_here(package: Path, snapshot: Path, queries: list[list[int]]) -> dict:
    with RxTSession.load(package) as session:
        conv = session.conversation()
        ids = [conv.interact_ids(q, max_new_tokens=12) for q in queries]
        text = conv.say("Hi, I'm Ann and I live in Paris.", max_new_tokens=12)
        conv.save(snapshot)
        restored = session.restore(snapshot).interact_ids(queries[0], max_new_tokens=12)
    return {"ids": ids, "text": text, "restored": restored}


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.mark.slow
def test_conversation_in_a_venv_without_torch(exported, tmp_path):
    e = exported("simple")
    queries = [[17, 42, 99, 120], [200, 31, 7], [65, 66, 67, 68, 69]]
    expected = _run_here(e.package, tmp_path / "here.rxtsnap", queries)

    src = tmp_path / "src"  # a copy, so the build leaves nothing in the work tree
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = _venv_python(venv)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-compile",  # no .pyc for numpy, onnxruntime & co: seconds of CI, nothing this test checks
            "--retries",
            "1",
            "--timeout",
            "30",
        ]
        + [str(src)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    if install.returncode != 0:
        log = install.stdout + install.stderr
        if any(marker in log for marker in NETWORK_ERRORS):
            pytest.skip(f"pip cannot reach PyPI to install the runtime dependencies: {log.strip()[-400:]}")
        pytest.fail(f"pip install of the project failed:\n{log[-4000:]}")

    package = tmp_path / "package"
    shutil.copytree(e.package, package)
    workdir = tmp_path / "run"  # not the repo root: `import rxt_edge` must find the installed copy
    workdir.mkdir()
    proc = subprocess.run(
        [str(python), "-c", SCRIPT, str(package), str(tmp_path / "there.rxtsnap"), json.dumps(queries)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["module"]).resolve().is_relative_to(venv.resolve())
    assert got["torch_imported"] == [] and got["torch_importable"] is False
    assert {k: got[k] for k in expected} == expected
    assert any(expected["ids"])  # a real conversation, not empty answers
