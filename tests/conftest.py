"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# torch single-threaded in this process and in the subprocesses the tests start (set before torch is imported,
# so its OpenMP pool is never two threads wide): the test models are tiny, and a second OpenMP thread only waits
# for a core that onnxruntime's spinning threads (or another process) hold. On a 2-core machine that made the
# torch references of verify 5-10x slower. onnxruntime has its own thread pools and does not read this.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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

    root = tmp_path_factory.mktemp("tiny_package")
    checkpoint = root / "checkpoint"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        # head dim 16 (2 heads of 32): the static KV cache (GroupQueryAttention) exports by default
        config = tiny_config(vocab=300, max_seq_len=1024, heads=2, q_heads=2, kv_heads=1)
        save_native(RxTModel(config).eval(), checkpoint)
    write_tokenizer(checkpoint / "tokenizer.json", vocab_size=300)
    model, source = load_checkpoint(checkpoint)
    package = root / "package"
    export_package(model, source, package)
    return package


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
            root = tmp_path_factory.mktemp(f"exported_{name}")
            checkpoint = export_cases.write_checkpoint(case, root / "checkpoint")
            model, source = load_checkpoint(checkpoint)
            package = root / "package"
            export_package(model, source, package, precision=case.precision, kv_cache=case.kv_cache)
            reference, _ = load_checkpoint(checkpoint)  # export casts its model to the package precision
            done[name] = export_cases.Exported(case, checkpoint, package, reference)
        return done[name]

    return get


@pytest.fixture(scope="session")
def cli_unfused_export(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory):
    """`rxt-edge export CKPT -o PKG --no-fuse` run in this process on a copy of tiny_package's checkpoint whose
    model card declares a licence: one export (~40 s) for test_graph_fusions (the unfused graphs it compares
    the fused ones with) and test_cli (what the CLI prints). Returns (click Result, package directory)."""
    import shutil

    from rxt_edge.apps.cli import app
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("cli_unfused")
    checkpoint = root / "checkpoint"
    shutil.copytree(tiny_package.parent / "checkpoint", checkpoint)
    (checkpoint / "README.md").write_text("---\nlicense: other\nlicense_name: raml-1.0\n---\n")
    package = root / "package"
    args = ["export", str(checkpoint), "-o", str(package), "--no-fuse"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    return result, package
