"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

# torch single-threaded in this process and in the subprocesses the tests start (set before torch is imported,
# so its OpenMP pool is never two threads wide): the test models are tiny, and a second OpenMP thread only waits
# for a core that onnxruntime's spinning threads (or another process) hold. On a 2-core machine that made the
# torch references of verify 5-10x slower. onnxruntime has its own thread pools and does not read this.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory `build(directory)` fills once per test run, shared by the run's pytest-xdist workers.

    The first worker that asks builds it under a file lock (the others wait, then read it); without xdist it is
    an ordinary directory of this run. Exports take 15-60 s each: built once, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's own directory, above every worker's
    root = base / f"shared_{name}"
    with FileLock(f"{root}.lock"):
        if not (root / ".built").is_file():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed half-way is started again
            root.mkdir()
            build(root)
            (root / ".built").touch()
    return root


@pytest.fixture
def sigint_raises():
    """Python's KeyboardInterrupt handler on SIGINT for the test, also where the run inherited SIGINT ignored (a
    shell starts background jobs that way, and Python then keeps it ignored): for tests that send one."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def kernel_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rxt-edge's CPU kernel library (`rxt-edge kernels build`: g++ and onnxruntime's headers), built once a run."""
    from rxt_edge.runtimes import kernel_build, native_kernels

    name = native_kernels.LIBRARY_NAME
    return built_once(tmp_path_factory, "kernels", lambda d: kernel_build.build(d / name)) / name


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight model package (native checkpoint -> ONNX export, ~15 s once per session).

    max_seq_len 1024 so a turn can run long (chat tests interrupt answers mid-stream); vocab 300 matches the
    tiny byte-level BPE tokenizer. Returns the package directory (treat it as read-only)."""
    import torch
    from model_configs import tiny_config
    from rxt_edge.export.checkpoints import load_checkpoint, save_native
    from rxt_edge.export.model import RxTModel
    from rxt_edge.export.onnx_export import export_package
    from tiny_tokenizer import write_tokenizer

    def build(root: Path) -> None:
        checkpoint = root / "checkpoint"
        with torch.random.fork_rng():
            torch.manual_seed(0)
            # head dim 16 (2 heads of 32): the static KV cache (GroupQueryAttention) exports by default
            config = tiny_config(vocab=300, max_seq_len=1024, heads=2, q_heads=2, kv_heads=1)
            save_native(RxTModel(config).eval(), checkpoint)
        write_tokenizer(checkpoint / "tokenizer.json", vocab_size=300)
        model, source = load_checkpoint(checkpoint)
        export_package(model, source, root / "package")

    return built_once(tmp_path_factory, "tiny_package", build) / "package"


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """`exported(name)` -> export_cases.Exported: the case's checkpoint, exported once per session (~15-30 s each).

    Cases are listed in tests/export_cases.py. rxlm cases skip when rxlm is not installed. Treat the returned
    directories and model as read-only."""
    import export_cases

    done: dict[str, export_cases.Exported] = {}

    def get(name: str) -> export_cases.Exported:
        if name not in done:
            from rxt_edge.export.checkpoints import load_checkpoint
            from rxt_edge.export.onnx_export import export_package

            case = export_cases.CASES[name]
            if case.source == "rxlm":
                pytest.importorskip("rxlm", reason="rxlm (test oracle) is not installed")

            def build(root: Path) -> None:
                checkpoint = export_cases.write_checkpoint(case, root / "checkpoint")
                model, source = load_checkpoint(checkpoint)
                export_package(
                    model, source, root / "package", precision=case.precision, kv_cache=case.kv_cache
                )

            root = built_once(tmp_path_factory, f"exported_{name}", build)
            reference, _ = load_checkpoint(
                root / "checkpoint"
            )  # export casts its model to the package precision
            done[name] = export_cases.Exported(case, root / "checkpoint", root / "package", reference)
        return done[name]

    return get


@pytest.fixture(scope="session")
def cli_unfused_export(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory):
    """`rxt-edge export CKPT -o PKG --no-fuse` run in this process on a copy of tiny_package's checkpoint whose
    model card declares a licence: one export (~40 s) for test_graph_fusions (the unfused graphs it compares
    the fused ones with) and test_cli (what the CLI prints). Returns (CliOutcome, package directory)."""
    from rxt_edge.apps.cli import app
    from typer.testing import CliRunner

    def build(root: Path) -> None:
        checkpoint = root / "checkpoint"
        shutil.copytree(tiny_package.parent / "checkpoint", checkpoint)
        (checkpoint / "README.md").write_text("---\nlicense: other\nlicense_name: raml-1.0\n---\n")
        args = ["export", str(checkpoint), "-o", str(root / "package"), "--no-fuse"]
        r = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        outcome = CliOutcome(
            r.exit_code, r.output, r.stderr, None if r.exception is None else repr(r.exception)
        )
        (root / "outcome.json").write_text(json.dumps(outcome.__dict__))

    root = built_once(tmp_path_factory, "cli_unfused", build)
    return CliOutcome(**json.loads((root / "outcome.json").read_text())), root / "package"


@dataclass
class CliOutcome:
    """What a CliRunner result told (kept in a file: the workers of a run share one export)."""

    exit_code: int
    output: str
    stderr: str
    exception: str | None
