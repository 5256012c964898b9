"""The onnxruntime-genai peer's plan (bench/peer.py) and decode_compare's scheme mapping: no builds here (the
built peer is tested end to end in tests/test_bench.py, on the bench's own tiny run)."""

from __future__ import annotations

import sys

import pytest
from model_configs import tiny_config
from rxt_edge.bench import decode_compare, peer

pytest.importorskip("torch")


def test_peer_dims_are_the_decoder_dims_of_each_preset():
    from rxt_edge.export.presets import preset_config

    for name in ("tiny", "alpha-micro", "alpha-mini"):
        cfg = preset_config(name)
        dims, why = peer.peer_dims(cfg)
        assert why is None, why
        block = cfg.decoder.memory_layers[0]
        assert dims.hidden == cfg.dim and dims.layers == len(cfg.decoder.all_layers)
        assert (dims.q_heads, dims.kv_heads, dims.head_dim) == (
            block.self_attn.q_heads,
            block.self_attn.kv_heads,
            block.self_attn.head_dim,
        )
        assert dims.intermediate == block.ffn.hidden_dim and dims.vocab == cfg.vocab_size
        assert dims.max_seq_len == cfg.decoder.max_seq_len
        llama = dims.llama_config(cfg.special_tokens)
        assert llama["head_dim"] == dims.head_dim and llama["tie_word_embeddings"] is False
        assert llama["eos_token_id"] == cfg.special_tokens["eos"]
    # SQA: query heads x head_dim below hidden (why head_dim is given to the Llama explicitly)
    micro, _ = peer.peer_dims(preset_config("alpha-micro"))
    assert micro.q_heads * micro.head_dim < micro.hidden


def test_decoders_with_no_llama_shape_get_no_peer_and_say_why():
    from rxt_edge.export.presets import preset_config

    dims, why = peer.peer_dims(preset_config("beta-like-moe"))
    assert dims is None and "Mixture-of-Experts" in why and "gated self-attention" in why
    dims, why = peer.peer_dims(tiny_config(q_heads=2, kv_heads=4))
    assert dims is None and "reverse SQA" in why
    dims, mapping, notes = peer.peer_plan(preset_config("beta-like-moe"), ["fp32"], "cpu")
    assert dims is None and mapping == {} and "Mixture-of-Experts" in notes[0]


def test_precisions_map_to_genai_and_providers_limit_them():
    assert [peer.genai_precision(p) for p in ("fp32", "int8-dynamic", "int8-block", "int8", "int4-block", "fp16")] == [
        "fp32", "int8", "int8", "int8", "int4", "fp16",
    ]  # fmt: skip
    assert peer.genai_precision("int16") is None
    dims, mapping, notes = peer.peer_plan(tiny_config(), ["fp32", "int8-dynamic", "fp16"], "cpu")
    assert dims is not None and mapping == {"fp32": "fp32", "int8-dynamic": "int8"}
    assert len(notes) == 1 and "fp16 on cpu" in notes[0]
    _, mapping, notes = peer.peer_plan(tiny_config(), ["fp32", "fp16"], "cuda")
    assert mapping == {"fp16": "fp16"} and "fp32 on cuda" in notes[0]  # genai's fp32 CUDA model does not load


def test_a_missing_module_is_a_note_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # as if not installed
    assert "onnxruntime_genai is not importable" in peer.peer_unavailable()
    dims, mapping, notes = peer.peer_plan(tiny_config(), ["fp32"], "cpu")
    assert dims is None and mapping == {} and "onnxruntime_genai" in notes[0]


def test_decode_compare_resolves_precisions_through_one_mapping(monkeypatch):
    from rxt_edge.bench import options

    assert decode_compare.rxt_scheme("fp32") is None and decode_compare.rxt_scheme("fp16") == "fp16"

    class Old:  # a quantize library from before the int8/int4 default names
        SCHEMES = ("int8-dynamic", "int8-block", "int4-block", "fp16")

    class New:
        SCHEMES = ("int8", "int4", *Old.SCHEMES)

    monkeypatch.setattr(decode_compare, "quantize_module", lambda: Old)
    assert [decode_compare.rxt_scheme(p) for p in ("int8", "int4")] == ["int8-dynamic", "int4-block"]
    monkeypatch.setattr(decode_compare, "quantize_module", lambda: New)
    assert [decode_compare.rxt_scheme(p) for p in ("int8", "int4")] == ["int8", "int4"]
    with pytest.raises(options.BenchError, match="unknown precision"):
        decode_compare.rxt_scheme("int3")
    assert decode_compare.main(["--precisions", "int3"]) == 2


def test_decode_compare_pins_its_timed_children_and_restores_affinity():
    import argparse
    import os
    import subprocess
    import sys

    assert decode_compare.parse_cpus("1,4-5") == [1, 4, 5] and decode_compare.parse_cpus("3") == [3]
    for bad in ("", "a", "3-x", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            decode_compare.parse_cpus(bad)
    before = os.sched_getaffinity(0)
    cpu = min(before)
    with decode_compare.pinned([cpu]):
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    assert child.stdout.strip() == str([cpu])  # a child started meanwhile runs there only
    assert os.sched_getaffinity(0) == before
    with pytest.raises(decode_compare.BenchError, match="may run on CPUs"):
        with decode_compare.pinned([max(before) + 1000]):
            pass
