"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


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
