"""The canonical model on its own (no rxlm): cache consistency, padding, native round trip, config JSON.

Every parameter is seeded-random (not the constructor's zeros and ones), so gates, biases, MoE experts and
norm scales all take part; fp32, single-threaded.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from model_configs import tiny_config
from rxt_edge.export.checkpoints import CheckpointError, load_checkpoint, save_native
from rxt_edge.export.config import (
    AttentionConfig,
    ConfigError,
    FeedForwardConfig,
    GateConfig,
    MemoryNormConfig,
    RxTConfig,
)
from rxt_edge.export.model import RxTModel

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gated_layernorm() -> RxTConfig:
    """Gated attention without output bias, LayerNorm blocks and head norm, non-gated GELU FFN, MHA."""
    cfg = tiny_config(q_heads=4, kv_heads=4, stateless=1)
    cfg.decoder.norm = cfg.encoder.norm = "layer"
    cfg.decoder.head_norm = "layer"
    gated = AttentionConfig(4, 4, 8, gated=True, out_bias=False)
    dense = FeedForwardConfig(hidden_dim=48, activation="gelu", gated=False, bias=False)
    for blocks in (cfg.decoder.all_layers, cfg.encoder.layers):
        for b in blocks:
            b.self_attn, b.ffn = gated, dense
    return cfg


def _moe_shared2() -> RxTConfig:
    """MoE with two weighted shared experts, local expert bias, top-2 of 4, rope base 1e5."""
    cfg = tiny_config(moe=True, stateless=1)
    ffn = FeedForwardConfig(
        hidden_dim=32,
        num_experts=4,
        top_k=2,
        num_shared_experts=2,
        shared_hidden_dim=24,
        expert_bias="local",
        shared_bias="global",
        weighted_shared=True,
    )
    for b in cfg.decoder.memory_layers:
        b.ffn = ffn
    cfg.decoder.rope_base = cfg.encoder.rope_base = cfg.memory.rope_base = 100_000.0
    return cfg


CONFIGS = {
    "gqa": lambda: tiny_config(),
    "moe": lambda: tiny_config(moe=True),
    "moe_shared2": _moe_shared2,
    "reverse_sqa": lambda: tiny_config(q_heads=2, kv_heads=4),
    "mqa_stateless_headnorm": lambda: tiny_config(q_heads=4, kv_heads=1, stateless=2),
    "gated_layernorm": _gated_layernorm,
}


def randomize(model: RxTModel, seed: int) -> RxTModel:
    """Seeded random values of a sensible scale for every parameter and buffer."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            if name == "initial_stm" or "embed" in name:
                value = torch.randn(t.shape, generator=gen)
            elif leaf == "ema_rms":
                value = torch.rand(t.shape, generator=gen) + 0.5
            elif t.dim() >= 2:  # [out, in] linears and [E, in, out] experts: scale by fan-in
                fan_in = t.shape[-1] if t.dim() == 2 else t.shape[-2]
                value = torch.randn(t.shape, generator=gen) / fan_in**0.5
            elif "norm" in name or leaf == "scale":
                value = 1.0 + 0.2 * torch.randn(t.shape, generator=gen)
            else:  # biases, gates
                value = torch.randn(t.shape, generator=gen) * (1.0 if "gate" in name else 0.1)
            t.copy_(value)
    return model.eval()


def build(name: str, seed: int = 0) -> RxTModel:
    return randomize(RxTModel(CONFIGS[name]()), seed)


def _ids(n: int, seed: int, vocab: int = 97) -> list[int]:
    return torch.randint(5, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@torch.no_grad()
def _full_logits(model: RxTModel, ids: torch.Tensor, stm: torch.Tensor) -> torch.Tensor:
    mem_k, mem_v = model.memory_kv(stm)
    past_k, past_v = model.empty_cache(ids.shape[0])
    return model.decoder(ids, past_k, past_v, mem_k, mem_v, all_logits=True)[0]


@torch.no_grad()
def _cached_logits(model: RxTModel, ids: torch.Tensor, stm: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Feed `ids` in chunks of the given sizes through the KV cache; logits of each chunk's last position."""
    mem_k, mem_v = model.memory_kv(stm)
    past_k, past_v = model.empty_cache(ids.shape[0])
    out, start = [], 0
    for size in chunks:
        logits, new_k, new_v = model.decoder(ids[:, start : start + size], past_k, past_v, mem_k, mem_v)
        attn = model.cfg.decoder.all_layers[0].self_attn
        assert new_k[0].shape == (size, ids.shape[0], attn.kv_heads, attn.head_dim)
        past_k = [torch.cat([a, b]) for a, b in zip(past_k, new_k, strict=True)]
        past_v = [torch.cat([a, b]) for a, b in zip(past_v, new_v, strict=True)]
        start += size
        out.append(logits)
    assert start == ids.shape[1]
    return torch.stack(out, dim=1)  # [B, chunks, V]


@pytest.mark.parametrize("name", CONFIGS)
def test_cached_decode_equals_full_forward(name):
    model = build(name)
    stm = torch.randn(model.initial_stm.shape, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([_ids(14, 2)])
    full = _full_logits(model, ids, stm)
    # a 6-token prompt, then a 3-token chunk, then one token at a time
    chunks = [6, 3] + [1] * 5
    cached = _cached_logits(model, ids, stm, chunks)
    ends = torch.tensor(chunks).cumsum(0) - 1
    assert _max_diff(cached, full[:, ends]) <= TOL
    # and the logits really depend on the STM and on earlier tokens (the cache is used, not ignored)
    other_stm = torch.randn(stm.shape, generator=torch.Generator().manual_seed(9))
    assert _max_diff(_full_logits(model, ids, other_stm), full) > 1e-3
    changed = ids.clone()
    changed[0, 0] = (changed[0, 0] + 1) % 97
    assert _max_diff(_cached_logits(model, changed, stm, chunks)[:, -1], cached[:, -1]) > 1e-4


@pytest.mark.parametrize("name", ["gqa", "moe_shared2", "reverse_sqa"])
def test_batched_decode_equals_one_row_at_a_time(name):
    model = build(name, seed=3)
    layers, _, slots, dim = model.initial_stm.shape
    stm = torch.randn(layers, 2, slots, dim, generator=torch.Generator().manual_seed(4))
    ids = torch.tensor([_ids(8, 5), _ids(8, 6)])
    both = _cached_logits(model, ids, stm, [5, 1, 1, 1])
    for row in range(2):
        alone = _cached_logits(model, ids[row : row + 1], stm[:, row : row + 1], [5, 1, 1, 1])
        assert _max_diff(both[row : row + 1], alone) <= TOL


MEMORY_CASES = {
    "simple_static_tanh": ("simple", "classic-rms", GateConfig("static", "tanh")),
    "self_elementwise": ("self", "layer", GateConfig("elementwise", "sigmoid")),
    "interlayer_linear_status": ("interlayer", "rms", GateConfig("linear", "tanh", slot_status="linear")),
    "self_interlayer_adaptive": (
        "self-interlayer",
        "adaptive",
        GateConfig("elementwise", "tanh", per_slot=False),
    ),
    "grouped_positional": (
        "grouped-self-interlayer",
        "positional",
        GateConfig("linear", "sigmoid", per_slot=False),
    ),
}


def _memory_model(case: str) -> RxTModel:
    variant, norm, gate = MEMORY_CASES[case]
    cfg = tiny_config(variant=variant, layers=4 if variant == "grouped-self-interlayer" else 2)
    cfg.memory.norm = MemoryNormConfig(norm, per_dim_scale=norm == "positional")
    cfg.memory.residual_gate = cfg.memory.aux_residual_gate = cfg.memory.mix_gate = gate
    return randomize(RxTModel(cfg), seed=7)


@pytest.mark.parametrize("case", MEMORY_CASES)
@torch.no_grad()
def test_padding_changes_nothing_for_the_valid_part(case):
    model = _memory_model(case)
    layers, _, slots, dim = model.initial_stm.shape
    stm = torch.randn(layers, 2, slots, dim, generator=torch.Generator().manual_seed(8))
    short, long = _ids(9, 10), _ids(15, 11)
    pad = model.cfg.special_tokens["pad"]
    batch = torch.tensor([short + [pad] * 6, long])
    mask = torch.tensor([[1] * 9 + [0] * 6, [1] * 15])
    encoded = model.encoder(batch, mask)
    new_stm = model.memory(stm, encoded, mask)
    for row, ids in enumerate((short, long)):
        alone_ids = torch.tensor([ids])
        alone_mask = torch.ones_like(alone_ids)
        alone = model.encoder(alone_ids, alone_mask)
        assert _max_diff(encoded[:, row : row + 1, : len(ids)], alone) <= TOL
        alone_stm = model.memory(stm[:, row : row + 1], alone, alone_mask)
        assert _max_diff(new_stm[:, row : row + 1], alone_stm) <= TOL
    # the padded positions' values never leak: garbage there gives the same STM
    garbage = encoded.clone()
    garbage[:, 0, 9:] = 1e3
    assert _max_diff(model.memory(stm, garbage, mask), new_stm) <= TOL
    assert _max_diff(new_stm, stm) > 1e-3


@pytest.mark.parametrize("name", ["moe_shared2", "gated_layernorm"])
def test_native_round_trip_is_bit_identical(name, tmp_path):
    model = build(name, seed=12)
    model.initial_stm.copy_(torch.randn(model.initial_stm.shape, generator=torch.Generator().manual_seed(13)))
    save_native(model, tmp_path)
    loaded, info = load_checkpoint(tmp_path)
    assert info.format == "rxt-edge-native" and len(info.fingerprint) == 64
    assert loaded.cfg == model.cfg
    theirs = loaded.state_dict()
    assert theirs.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    assert loaded.decoder.embed is loaded.encoder.embed  # shared embedding stays shared
    ids = torch.tensor([_ids(7, 14)])
    assert torch.equal(
        _full_logits(loaded, ids, loaded.initial_stm), _full_logits(model, ids, model.initial_stm)
    )


def test_native_round_trip_keeps_separate_embeddings(tmp_path):
    cfg = tiny_config()
    cfg.shared_embedding = False
    model = randomize(RxTModel(cfg), seed=15)
    assert not torch.equal(model.decoder.embed.weight, model.encoder.embed.weight)
    save_native(model, tmp_path)
    loaded, _ = load_checkpoint(tmp_path)
    assert loaded.decoder.embed is not loaded.encoder.embed
    assert torch.equal(loaded.encoder.embed.weight, model.encoder.embed.weight)
    assert torch.equal(loaded.decoder.embed.weight, model.decoder.embed.weight)


def test_native_reader_names_a_tensor_of_the_wrong_shape(tmp_path):
    from safetensors.torch import load_file, save_file

    save_native(build("gqa"), tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    key = "memory.attn.1.v_proj.weight"
    tensors[key] = tensors[key][:-1].contiguous()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape"):
        load_checkpoint(tmp_path)


# --- config JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_config_json_round_trip(name):
    cfg = CONFIGS[name]()
    again = RxTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("case", MEMORY_CASES)
def test_memory_config_json_round_trip(case):
    cfg = _memory_model(case).cfg
    assert RxTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def _broken(edit) -> dict:
    d = copy.deepcopy(tiny_config(variant="grouped-self-interlayer", layers=4).to_dict())
    edit(d)
    return d


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["decoder"]["memory_layers"][1]["self_attn"].pop("q_heads"),
            r"config\.decoder\.memory_layers\[1\]\.self_attn\.q_heads: missing",
        ),
        (lambda d: d.update(dim="32"), r"config\.dim: expected an integer, got '32'"),
        (lambda d: d.update(stm_slots=True), r"config\.stm_slots: expected an integer, got True"),
        (lambda d: d["decoder"].update(rope_base="big"), r"config\.decoder\.rope_base: expected a number"),
        (
            lambda d: d["memory"].update(variant="sideways"),
            r"config\.memory\.variant: 'sideways' is not one of",
        ),
        (
            lambda d: d["encoder"]["layers"][0]["ffn"].update(activation="swiglu"),
            r"config\.encoder\.layers\[0\]\.ffn\.activation: 'swiglu'",
        ),
        (lambda d: d["decoder"].update(flash=True), r"config\.decoder: unknown key\(s\) \['flash'\]"),
        (lambda d: d["decoder"].update(memory_layers={}), r"config\.decoder\.memory_layers: expected a list"),
        (lambda d: d["encoder"]["layers"].pop(), r"encoder layers=3"),
        (lambda d: d["memory"].update(num_groups=3), r"memory\.num_groups=3"),
        (
            lambda d: d["decoder"]["memory_layers"][0]["self_attn"].update(q_heads=3),
            r"decoder\.layers\[0\]\.self_attn: q_heads=3 and kv_heads=2",
        ),
        (
            lambda d: d["decoder"]["memory_layers"][2].update(cross_attn=None),
            r"decoder\.memory_layers\[2\]\.cross_attn is required",
        ),
        (
            lambda d: d["decoder"]["memory_layers"][0]["ffn"].update(num_experts=2, top_k=3),
            r"decoder\.layers\[0\]\.ffn: top_k=3",
        ),
    ],
)
def test_config_errors_name_the_key(edit, message):
    with pytest.raises(ConfigError, match=message):
        RxTConfig.from_dict(_broken(edit))
