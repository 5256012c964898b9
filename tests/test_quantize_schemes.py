"""The MatMulNBits schemes of `rxt-edge quantize`: `int8` / `int4` (the measured defaults) and their knobs.

Here: the defaults are the ones docs/quantization.md states, overrides reach the graph and the manifest, bad
settings are refused before any work. The default `int8` / `int4` graphs (ops, attributes, nodes left alone,
quality bounds on the tiny model) are checked with the other schemes in tests/test_quantize.py.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import onnx
import pytest
from onnx import helper
from rxt_edge.export.quantize import (
    BLOCK_SCHEMES,
    DEFAULT_SCOPES,
    SCHEMES,
    BlockConfig,
    QuantizeError,
    quantize_package,
)

from rxt_edge import contract
from rxt_edge.manifest import load_manifest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "quantization.md"


def test_defaults_are_the_documented_ones() -> None:
    """The docs' table row of each default names its bits, block size, accuracy level and head."""
    text = DOCS.read_text()
    for scheme in ("int8", "int4"):
        cfg = BLOCK_SCHEMES[scheme]
        assert cfg.accuracy_level == 4 and cfg.symmetric  # int8 activation kernels; no zero points
        head = f"int{cfg.head_bits or cfg.bits}"
        row = rf"\| \*\*`{scheme}`\*\* \(default\) \| MatMulNBits \| {cfg.bits} \| {cfg.block_size} \| 4 \| yes \| {head} \|"
        assert re.search(row, text), f"docs/quantization.md has no default row for {scheme}: {row}"
        assert DEFAULT_SCOPES[scheme].graphs == (contract.DECODER,) and DEFAULT_SCOPES[scheme].head
    # the old names keep their first meaning: onnxruntime-genai's settings, block 32
    assert BLOCK_SCHEMES["int8-block"] == BlockConfig(8, 32, 4)
    assert BLOCK_SCHEMES["int4-block"] == BlockConfig(4, 32, 4)
    assert {"int8", "int4", "int8-dynamic", "int8-block", "int4-block"} <= set(SCHEMES)


def test_cli_default_scheme_is_int8() -> None:
    from rxt_edge.apps import cli, quantize_options
    from typer.main import get_command

    params = {p.name: p for p in get_command(cli.app).commands["quantize"].params}
    assert params["scheme"].default == "int8"
    assert quantize_options.QUANT_BLOCK_SCHEMES == tuple(BLOCK_SCHEMES)


def test_overrides_reach_the_graph_and_the_head_can_keep_8_bits(tiny_package: Path, tmp_path: Path) -> None:
    out = quantize_package(
        tiny_package, tmp_path / "q", "int4", block_size=64, accuracy_level=0, symmetric=False, head_bits=8
    ).output
    rec = load_manifest(out).quantization
    assert (rec["bits"], rec["block_size"], rec["accuracy_level"], rec["symmetric"], rec["head_bits"]) == (
        4, 64, 0, False, 8
    )  # fmt: skip
    graph = onnx.load(str(out / "decoder.onnx")).graph
    vocab = load_manifest(tiny_package).model.vocab_size
    by_bits = Counter()
    for n in graph.node:
        if n.op_type == "MatMulNBits":
            a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
            block = min(64, 1 << (a["K"].bit_length() - 1))  # no block longer than K
            assert (a["block_size"], a.get("accuracy_level", 0)) == (block, 0)
            assert len(n.input) > 3 and n.input[3]  # asymmetric: zero points
            by_bits[(a["bits"], a["N"] == vocab)] += 1
    assert by_bits[(8, True)] == 1 and by_bits[(8, False)] == 0 and by_bits[(4, False)] >= 12


@pytest.mark.parametrize(
    ("scheme", "kwargs", "message"),
    [
        ("int8", {"block_size": 48}, "block size: 48 is not supported"),
        ("int4", {"accuracy_level": 5}, "accuracy level: 5 is not supported"),
        ("int4", {"head_bits": 2}, "head bits: 2 is not supported"),
        ("int8-dynamic", {"block_size": 64}, "block_size: apply to the MatMulNBits schemes"),
        ("fp16", {"accuracy_level": 4}, "accuracy_level: apply to the MatMulNBits schemes"),
    ],
)
def test_bad_block_settings_are_refused(tiny_package: Path, tmp_path: Path, scheme, kwargs, message) -> None:
    with pytest.raises(QuantizeError, match=message):
        quantize_package(tiny_package, tmp_path / "q", scheme, **kwargs)
    assert not (tmp_path / "q").exists()
