"""Random-weight preset packages for measuring: one builder for the bench, the quantization study and the GPU
check (and the tokenizer file such a package needs). Needs torch (imported inside the functions)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

TOKENIZER_TEXT = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A reactive model keeps a fixed-size memory between the turns of a conversation.",
    "Benchmarks measure latency, throughput and memory on the machine at hand.",
] * 10


def write_bench_tokenizer(path: str | Path, vocab_size: int = 300) -> Path:
    """A small byte-level BPE `tokenizer.json` for random-weight packages (which need a tokenizer file).

    Token-level benchmarks never use it; it makes the package complete and loadable by every tool."""
    from rxt_edge.export.tokenizer_files import write_byte_level_tokenizer

    return write_byte_level_tokenizer(path, TOKENIZER_TEXT, vocab_size)


def preset_checkpoint(config: str, directory: Path, seed: int = 0, scale: float | None = None) -> Path:
    """A native checkpoint of a random-weight preset with a tokenizer beside it, written once into `directory`."""
    from rxt_edge.export.checkpoints.native import save_native
    from rxt_edge.export.presets import random_model

    if not (directory / "config.json").is_file():
        kw = {} if scale is None else {"scale": scale}
        save_native(random_model(config, seed=seed, **kw), directory)
        write_bench_tokenizer(directory / "tokenizer.json")
    return directory


def random_checkpoint(config, directory: Path, seed: int = 0) -> Path:
    """A native checkpoint of `config` with weights of a useful scale (matrices N(0, 1/fan_in), so greedy answers
    vary; the initial STM N(0, 1)) and a tokenizer beside it, written once into `directory`."""
    import torch
    from rxt_edge.export.checkpoints.native import save_native
    from rxt_edge.export.model import RxTModel

    if not (directory / "config.json").is_file():
        torch.manual_seed(seed)
        model = RxTModel(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, p.shape[1] ** -0.5)
            model.initial_stm.normal_(0.0, 1.0)
        save_native(model, directory)
        write_bench_tokenizer(directory / "tokenizer.json")
    return directory


def export_checkpoint(
    checkpoint: Path,
    package: Path,
    precision: str = "fp32",
    progress: Callable[[str], None] | None = None,
):
    """The torch model of `checkpoint`, exported to `package` unless it is there already: (package, model)."""
    from rxt_edge.export.checkpoints import load_checkpoint
    from rxt_edge.export.onnx_export import export_package

    model, source = load_checkpoint(str(checkpoint))
    if not (package / "manifest.json").is_file():
        export_package(model, source, package, precision=precision, overwrite=True, progress=progress)
    return package, model
