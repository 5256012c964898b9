"""Sanity tests of the rxlm reference harness itself (tests/rxlm_reference.py).

They pin down what the parity tests rely on: every weight is seeded, checkpoints written by rxlm's
own `save_pretrained` reload to identical outputs, rxlm's cached generation path agrees with its plain
forward, and our greedy mirror of `interact()` is what `interact()` itself does.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("rxlm")

import rxlm_reference as ref  # noqa: E402

COMBINED = tuple(ref.PARITY_CONFIGS)
COMPONENTS = tuple(ref.PER_COMPONENT_CONFIGS)
ALL = ref.ALL_CONFIG_NAMES


def _inputs(model, seed: int = 0):
    stm = ref.random_stm(model, seed + 1)
    query = ref.random_token_ids(7, seed + 2)
    answer = ref.random_token_ids(9, seed + 3)
    return stm, query, answer


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _outputs(model, seed: int = 0) -> dict[str, torch.Tensor]:
    stm, query, answer = _inputs(model, seed)
    prompt = ref.make_prompt(query)
    logits, tokens = ref.ref_decode_logits(model, stm, prompt, steps=6)
    return {
        "prefill": ref.ref_prefill_logits(model, stm, prompt),
        "decode": logits,
        "tokens": tokens,
        "encoded": ref.ref_encoder_hidden(model, ref.make_interaction(query, answer)),
        "new_stm": ref.ref_memory_update(model, stm, ref.make_interaction(query, answer)),
    }


def test_configs_cover_the_required_features():
    dec = [c["decoder_config"] for c in ref.PARITY_CONFIGS.values()]
    mem = [c["memory_attention_config"] for c in ref.PARITY_CONFIGS.values()]

    def sqa_kind(groups, query_groups):
        return "sqa" if query_groups > groups else "revsqa"

    self_kinds = {
        sqa_kind(d["att_groups"], d["att_query_groups"])
        if d["self_att_type"] == "sqa"
        else d["self_att_type"]
        for d in dec
    }
    cross_kinds = {
        sqa_kind(
            d.get("cross_att_groups", d.get("att_groups", 1)),
            d.get("cross_att_query_groups", d.get("att_query_groups")),
        )
        if d["cross_att_type"] == "sqa"
        else d["cross_att_type"]
        for d in dec
    }
    assert self_kinds >= {"mha", "gqa", "mqa", "sqa", "revsqa"}
    assert cross_kinds >= {"mha", "gqa", "mqa", "sqa", "revsqa"}
    assert {d.get("use_gated_attention", False) for d in dec} == {True, False}
    assert {d.get("use_attention_output_bias", True) for d in dec} == {True, False}
    assert {(d.get("use_gated", True), d.get("ff_activation", "swish")) for d in dec} >= {
        (True, "silu"),
        (False, "relu"),
        (False, "gelu"),
    }
    moe = [d for d in dec if d.get("use_moe")]
    assert {d.get("num_shared_experts", 1) > 1 for d in moe} == {True, False}
    assert {d.get("moe_bias_mode", "global") for d in moe} == {"global", "local", "off"}
    assert {d.get("moe_shared_experts_bias_mode", "local") for d in moe} == {"global", "local", "off"}
    assert any(d.get("moe_use_weighted_shared_experts") for d in moe)
    assert any(d["stateless_layers_config"] for d in dec)
    assert any(d.get("final_stateless_layers_config") for d in dec)
    assert {d.get("head_norm_type") for d in dec if d.get("use_head_norm")} == {"rms_norm", "layer_norm"}
    assert {d.get("rope_base", 10_000) for d in dec} == {10_000, 100_000}
    assert {c["memory_attention_variant"] for c in ref.PARITY_CONFIGS.values()} == {
        "self-interlayer",
        "grouped-self-interlayer",
        "interlayer",
    }
    gated = [m for m in mem if m.get("use_gated_residual")]
    assert len(gated) < len(mem)
    assert {m["residual_gate_type"] for m in gated} == {"static", "elementwise", "linear"}
    assert {m["use_tanh_residual_gate"] for m in gated} == {True, False}
    assert {m["residual_per_slot_gate"] for m in gated} == {True, False}
    assert {m.get("residual_gate_slot_status_type", "mean") for m in gated} == {"mean", "linear"}
    assert {m["norm_type"] for m in mem} == {"classic-rms", "rms", "layer", "adaptive", "positional"}
    assert {c["memory_attention_class"] for c in ref.PER_COMPONENT_CONFIGS.values()} >= {
        "RxTSimpleMemoryAttention",
        "RxTSelfMemoryAttention",
        "RxTInterlayerMemoryAttention",
    }
    beta = ref.PARITY_CONFIGS["beta_like"]
    assert beta["model_class"] == "RxTBeta" and beta["memory_attention_variant"] == "grouped-self-interlayer"


@pytest.mark.parametrize("name", ALL)
def test_every_tensor_is_seeded(name):
    a, b, again = (ref.build_rxlm_model(name, seed) for seed in (0, 1, 0))
    sa, sb, s_again = _state(a), _state(b), _state(again)
    for key, value in sa.items():
        assert torch.equal(value, s_again[key]), f"{key} is not reproducible from the seed"
        if ".rope." in key:
            assert torch.equal(value, sb[key]), f"{key}: RoPE tables must stay as rxlm computes them"
        else:
            assert not torch.equal(value, sb[key]), (
                f"{key} does not depend on the seed (left at rxlm's init?)"
            )


def test_build_names_the_right_rxlm_classes():
    assert type(ref.build_rxlm_model("beta_like")).__name__ == "RxTBeta"
    model = ref.build_rxlm_model("alpha_gqa_relu_interlayer")
    assert type(model).__name__ == "RxTAlpha"
    # rxlm builds 'interlayer' as self-interlayer inside RxTAlpha; the harness keeps that case on purpose
    assert type(model.memory_attention).__name__ == "RxTSelfInterlayerMemoryAttentionComponent"
    for name in COMPONENTS:
        model = ref.build_rxlm_model(name)
        assert (
            type(model.memory_attention).__name__ == ref.PER_COMPONENT_CONFIGS[name]["memory_attention_class"]
        )
        assert model.decoder.model.embedding is model.encoder.model.embedding
        assert model.decoder.model.stm is model.memory_attention.model.stm


@pytest.mark.parametrize("name", COMBINED)
def test_combined_checkpoint_keeps_one_name_per_alias(name, tmp_path):
    from safetensors.torch import load_file

    model = ref.build_rxlm_model(name)
    ref.save_rxlm_checkpoint(model, tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert "decoder.model.embedding.weight" in saved
    assert "encoder.model.embedding.weight" not in saved
    assert "decoder.model.stm.memory" in saved
    assert "memory_attention.model.stm.memory" not in saved
    assert torch.equal(saved["decoder.model.embedding.weight"], model.encoder.model.embedding.weight)
    assert torch.equal(saved["decoder.model.stm.memory"], model.memory_attention.model.stm.memory)
    # one RoPE table per component survives: each component shares a single rope module
    rope_keys = sorted(k for k in saved if k.endswith(".rope.inv_freq"))
    assert [k.split(".")[0] for k in rope_keys] == ["decoder", "encoder", "memory_attention"]
    config = json.loads((tmp_path / "config.json").read_text())
    cfg = ref.PARITY_CONFIGS[name]
    assert config["decoder_config"] == cfg["decoder_config"]  # only the arguments given, no defaults
    assert config["memory_attention_variant"] == cfg["memory_attention_variant"]
    assert config["tokenizer_config"] == ref.tokenizer_config(cfg["model_class"])


@pytest.mark.parametrize("name", COMPONENTS)
def test_per_component_layout(name, tmp_path):
    from safetensors.torch import load_file

    model = ref.build_rxlm_model(name)
    ref.save_rxlm_checkpoint(model, tmp_path)
    cfg = ref.PER_COMPONENT_CONFIGS[name]
    for sub in ref.COMPONENT_DIRS:
        assert (tmp_path / sub / "config.json").is_file() and (tmp_path / sub / "model.safetensors").is_file()
    assert ref.memory_attention_class_for(tmp_path / "memory_attention") == cfg["memory_attention_class"]
    dec_json = json.loads((tmp_path / "decoder" / "config.json").read_text())
    assert dec_json == cfg["decoder_config"]  # **kwargs classes: only what was passed
    mem_json = json.loads((tmp_path / "memory_attention" / "config.json").read_text())
    assert set(cfg["memory_attention_config"]) < set(mem_json)  # explicit signature: defaults written too
    dec = load_file(str(tmp_path / "decoder" / "model.safetensors"))
    enc = load_file(str(tmp_path / "encoder" / "model.safetensors"))
    mem = load_file(str(tmp_path / "memory_attention" / "model.safetensors"))
    assert torch.equal(dec["model.embedding.weight"], enc["model.embedding.weight"])
    assert torch.equal(dec["model.stm.memory"], mem["model.stm.memory"])
    assert "model.stm.memory" not in enc


@pytest.mark.parametrize("name", ALL)
def test_reload_gives_identical_outputs(name, tmp_path):
    model = ref.build_rxlm_model(name, seed=3)
    ref.save_rxlm_checkpoint(model, tmp_path)
    before_state = _state(model)  # includes the STM, which the outputs below overwrite
    before = _outputs(model)
    reloaded = ref.load_rxlm_checkpoint(tmp_path)
    assert type(reloaded.memory_attention) is type(model.memory_attention)
    after_state = _state(reloaded)
    assert after_state.keys() == before_state.keys()
    for key, value in before_state.items():
        assert torch.equal(value, after_state[key]), key
    after = _outputs(reloaded)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def test_naive_reload_then_share_components_loses_the_embedding(tmp_path):
    """Documents the rxlm pitfall a checkpoint reader must avoid: the file stores the shared embedding
    under the decoder's name only, and share_components() installs the encoder's (never loaded) one."""
    from rxlm.rxt.models import RxTAlpha

    model = ref.build_rxlm_model("alpha_mha_dense")
    ref.save_rxlm_checkpoint(model, tmp_path)
    naive = RxTAlpha.from_pretrained(str(tmp_path))
    assert torch.equal(naive.decoder.model.embedding.weight, model.decoder.model.embedding.weight)
    naive.share_components()
    assert not torch.equal(naive.decoder.model.embedding.weight, model.decoder.model.embedding.weight)


@pytest.mark.parametrize("name", ALL)
def test_cached_decode_matches_full_forward(name):
    """rxlm's cached path (STM K/V pre-cache, self-attn cache, current_positions) is self-consistent."""
    model = ref.build_rxlm_model(name, seed=5)
    stm, query, _ = _inputs(model, seed=5)
    prompt = ref.make_prompt(query)
    steps = 20
    logits, tokens = ref.ref_decode_logits(model, stm, prompt, steps=steps)
    assert logits.shape == (steps, ref.VOCAB_SIZE) and tokens.shape == (steps,)
    assert torch.equal(tokens, logits.argmax(dim=-1))
    full = ref.ref_prefill_logits(model, stm, prompt + tokens[:-1].tolist())
    torch.testing.assert_close(logits, full[len(prompt) - 1 :], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_cached_prefill_matches_plain_forward(name):
    model = ref.build_rxlm_model(name, seed=6)
    stm, query, _ = _inputs(model, seed=6)
    prompt = ref.make_prompt(query)
    plain = ref.ref_prefill_logits(model, stm, prompt)
    cached = ref.ref_prefill_logits(model, stm, prompt, cached=True)
    assert plain.shape == (len(prompt), ref.VOCAB_SIZE)
    torch.testing.assert_close(cached[-1], plain[-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", COMBINED)
def test_greedy_mirror_matches_interact(name):
    """interact() with top_k=1 samples greedily: its tokens and its memory update must be ours."""
    model = ref.build_rxlm_model(name, seed=7)
    stm, query, _ = _inputs(model, seed=7)
    prompt = ref.make_prompt(query)
    steps = 10
    _, tokens = ref.ref_decode_logits(model, stm, prompt, steps=steps)
    ref.load_stm(model, stm)
    query_ids = torch.tensor([prompt[:-1]])  # interact() appends [A] itself
    extra = {"thinking_mode": "fast"} if ref.PARITY_CONFIGS[name]["model_class"] == "RxTBeta" else {}
    with ref.one_thread():
        out = list(
            model.interact(
                query_ids,
                attention_mask=torch.ones_like(query_ids),
                top_k=1,
                max_seq_len=len(prompt) + steps,
                **extra,
            )
        )
    rxlm_stm = model.export_stm_state()
    assert out[-2:] == [-1, -2]
    generated = out[:-2]
    if extra:
        assert generated[0] == ref.TOKEN_IDS["answer_token_id"]  # Beta echoes the forced [A] first
        generated = generated[1:]
    eos = ref.TOKEN_IDS["eos_token_id"]
    expected = tokens.tolist()
    if eos in expected:
        expected = expected[: expected.index(eos) + 1]
    assert generated == expected
    # interact() updates memory from [BOS][Q] query [A] + generated, no [EOS] added at the length limit
    assert torch.equal(ref.ref_memory_update(model, stm, prompt + generated), rxlm_stm)


@pytest.mark.parametrize("name", ALL)
def test_stm_and_inputs_change_the_outputs(name):
    model = ref.build_rxlm_model(name, seed=8)
    stm, query, answer = _inputs(model, seed=8)
    prompt = ref.make_prompt(query)
    other_stm = ref.random_stm(model, seed=99)
    assert not torch.allclose(
        ref.ref_prefill_logits(model, stm, prompt),
        ref.ref_prefill_logits(model, other_stm, prompt),
        atol=1e-3,
    )
    interaction = ref.make_interaction(query, answer)
    new_stm = ref.ref_memory_update(model, stm, interaction)
    assert new_stm.shape == stm.shape
    assert not torch.allclose(new_stm, stm, atol=1e-3)
    other = ref.ref_memory_update(model, stm, ref.make_interaction(query, ref.random_token_ids(9, 1234)))
    assert not torch.allclose(new_stm, other, atol=1e-3)
    hidden = ref.ref_encoder_hidden(model, interaction)
    layers, _, slots, dim = stm.shape
    assert hidden.shape == (layers, 1, len(interaction), dim)


@pytest.mark.parametrize("name", ["alpha_sqa_moe_shared2", "beta_like", "comp_interlayer"])
def test_padding_mask_hides_trailing_pads(name):
    """The encoder and memory attention honour the padding mask: trailing pads change nothing."""
    model = ref.build_rxlm_model(name, seed=9)
    stm, query, answer = _inputs(model, seed=9)
    interaction = ref.make_interaction(query, answer)
    padded = interaction + [ref.TOKEN_IDS["pad_token_id"]] * 5
    mask = torch.tensor([[1] * len(interaction) + [0] * 5])
    torch.testing.assert_close(
        ref.ref_encoder_hidden(model, padded, mask)[:, :, : len(interaction)],
        ref.ref_encoder_hidden(model, interaction),
        atol=1e-5,
        rtol=1e-5,
    )
    torch.testing.assert_close(
        ref.ref_memory_update(model, stm, padded, mask),
        ref.ref_memory_update(model, stm, interaction),
        atol=1e-5,
        rtol=1e-5,
    )


def test_bad_inputs_are_rejected():
    model = ref.build_rxlm_model("alpha_mha_dense")
    stm = ref.random_stm(model, 0)
    with pytest.raises(ValueError, match="stm must have shape"):
        ref.ref_prefill_logits(model, stm[:, :, :-1], [1, 3, 20, 4])
    with pytest.raises(ValueError, match="prompt_ids"):
        ref.ref_prefill_logits(model, stm, [])
    with pytest.raises(ValueError, match="more than the model's seq_len"):
        ref.ref_memory_update(model, stm, ref.random_token_ids(ref.SEQ_LEN + 1, 0))
    with pytest.raises(ValueError, match="exceeds the decoder's seq_len"):
        ref.ref_decode_logits(model, stm, ref.make_prompt(ref.random_token_ids(50, 0)), steps=20)
    with pytest.raises(KeyError, match="unknown rxlm reference config"):
        ref.build_rxlm_model("no_such_config")
