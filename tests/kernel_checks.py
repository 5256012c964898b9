"""A package's decoder under several kernel settings, for the tests of our own CPU kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rxt_edge.export.graph_driver import GraphDriver


def teacher_forced_logits(
    package: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, dict[str, str]]
) -> dict[str, np.ndarray]:
    """Per named setting (environment variables the runtime's loader reads), the decoder's logits over the same
    answer (the first setting's greedy one, 10 tokens) from the same random STM and prompt."""
    drivers = {}
    for name, env in settings.items():
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        drivers[name] = GraphDriver.load(package, threads=1)
    first = next(iter(drivers.values()))
    shape = np.load(package / "initial_stm.npy").shape
    stm = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    prompt = first.prompt([5, 17, 42, 99, 7])
    answer, _ = first.answer_logits(stm, prompt, None, 10)
    return {name: d.answer_logits(stm, prompt, answer, 10)[1] for name, d in drivers.items()}
