"""Parity of our rxlm checkpoint reader and canonical model with rxlm 0.3.92 itself.

Every configuration of the oracle harness (tests/rxlm_reference.py) is built by rxlm with seeded random
weights, saved by rxlm's own `save_pretrained`, read back by our `load_checkpoint`, and run on both sides
from the same seeded STM: prefill logits, 20 greedy decode steps through our KV cache (TorchConversation,
the eager reference the exported packages are checked against), encoder hidden states, and the STM after a
memory update.

Tolerances are absolute for unit-scale values and relative to the largest reference magnitude beyond
(logits reach ~10 and STM entries 10-20 in these random models, where 1e-5 absolute is only a few float32
ulps). fp32: 1e-5. fp64 (both sides converted): 1e-10, which leaves room for summation order only: a
difference in the math itself (an epsilon, a RoPE layout, a gate formula) shows up far above it, and the
fp64 run catches such slips that fp32 rounding hides in most configurations.

The second half checks that the reader refuses what it cannot read faithfully, naming the key or file.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

pytest.importorskip("rxlm")

import rxlm_reference as ref  # noqa: E402
from rxt_edge.export.checkpoints import ALLOW_PICKLE_FLAG, CheckpointError, load_checkpoint  # noqa: E402
from rxt_edge.export.model import RxTModel  # noqa: E402
from rxt_edge.export.torch_chat import TorchConversation  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tiny_tokenizer import write_tokenizer  # noqa: E402

TOL = 1e-5
FP64_TOL = 1e-10
STEPS = 20
OUR_SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "query": 3, "answer": 4}


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Tiny models on a 2-core CI machine: torch's thread pool only adds overhead and jitter."""
    with ref.one_thread():
        yield


def _max_diff(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> float:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs rxlm {tuple(theirs.shape)}"
    return (ours.double() - theirs.double()).abs().max().item()


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str, tol: float = TOL) -> None:
    """max |ours - theirs| <= tol for unit-scale values, tol * max|theirs| beyond (same ulp budget)."""
    diff = _max_diff(ours, theirs, what)
    bound = tol * max(1.0, theirs.abs().max().item())
    assert diff <= bound, f"{what}: max abs diff {diff:.3g} > {bound:.3g}"


def _save(model: torch.nn.Module, name: str, directory: Path) -> Path:
    ref.save_rxlm_checkpoint(model, directory)
    if name in ref.PER_COMPONENT_CONFIGS:
        # per-component directories carry no tokenizer_config: the special ids come from tokenizer.json
        write_tokenizer(directory / "tokenizer.json", vocab_size=ref.VOCAB_SIZE)
    return directory


@dataclass
class Pair:
    name: str
    rxlm: torch.nn.Module
    ours: RxTModel
    fmt: str
    directory: Path
    saved_stm: torch.Tensor  # the STM rxlm held when it saved
    stm: torch.Tensor  # the STM both sides start from
    query: list[int]
    answer: list[int]


@pytest.fixture(scope="module", params=ref.ALL_CONFIG_NAMES)
def pair(request, tmp_path_factory) -> Pair:
    name = request.param
    model = ref.build_rxlm_model(name, seed=11)
    saved_stm = model.memory_attention.model.stm.memory.detach().clone()
    directory = _save(model, name, tmp_path_factory.mktemp(name))
    ours, info = load_checkpoint(directory)
    return Pair(
        name=name,
        rxlm=model,
        ours=ours,
        fmt=info.format,
        directory=directory,
        saved_stm=saved_stm,
        stm=ref.random_stm(model, 12),
        query=ref.random_token_ids(7, 13),
        answer=ref.random_token_ids(9, 14),
    )


# --- parity -----------------------------------------------------------------------------------------


def test_reader_takes_config_state_and_tokens_from_the_checkpoint(pair: Pair):
    expected_format = "rxlm-components" if pair.name in ref.PER_COMPONENT_CONFIGS else "rxlm"
    assert pair.fmt == expected_format
    if expected_format == "rxlm":
        stored = load_file(str(pair.directory / "model.safetensors"))["decoder.model.stm.memory"]
    else:
        stored = load_file(str(pair.directory / "decoder" / "model.safetensors"))["model.stm.memory"]
    assert torch.equal(stored, pair.saved_stm)
    assert torch.equal(pair.ours.initial_stm, stored)
    for ours_name, value in OUR_SPECIAL.items():
        assert pair.ours.cfg.special_tokens[ours_name] == value, ours_name
    assert not pair.ours.training


@torch.no_grad()
def test_prefill_logits(pair: Pair):
    prompt = ref.make_prompt(pair.query)
    theirs = ref.ref_prefill_logits(pair.rxlm, pair.stm, prompt)
    mem_k, mem_v = pair.ours.memory_kv(pair.stm)
    past_k, past_v = pair.ours.empty_cache()
    logits, new_k, _ = pair.ours.decoder(
        torch.tensor([prompt]), past_k, past_v, mem_k, mem_v, all_logits=True
    )
    _assert_close(logits[0], theirs, f"{pair.name} prefill logits")
    assert new_k[0].shape[:2] == (len(prompt), 1)


def test_cached_greedy_decode(pair: Pair):
    prompt = ref.make_prompt(pair.query)
    theirs, tokens = ref.ref_decode_logits(pair.rxlm, pair.stm, prompt, steps=STEPS)
    # teacher-forced on rxlm's tokens, so one early disagreement cannot hide later ones
    turn = TorchConversation(pair.ours, pair.stm).generate(pair.query, STEPS, forced=tokens.tolist())
    assert turn.prompt == prompt
    _assert_close(torch.stack(turn.step_logits), theirs, f"{pair.name} decode logits")
    # free-running greedy: the same tokens, up to and including [EOS] (where generate stops)
    answer = TorchConversation(pair.ours, pair.stm).generate(pair.query, STEPS).answer
    expected = tokens.tolist()
    eos = OUR_SPECIAL["eos"]
    if eos in expected:
        expected = expected[: expected.index(eos)]
    assert answer == expected


@torch.no_grad()
def test_encoder_hidden_states(pair: Pair):
    interaction = ref.make_interaction(pair.query, pair.answer)
    ids = torch.tensor([interaction])
    ours = pair.ours.encoder(ids, torch.ones_like(ids))
    _assert_close(ours, ref.ref_encoder_hidden(pair.rxlm, interaction), f"{pair.name} encoder hidden")


@torch.no_grad()
def test_memory_update(pair: Pair):
    interaction = ref.make_interaction(pair.query, pair.answer)
    conv = TorchConversation(pair.ours, pair.stm)
    conv.update(interaction)
    theirs = ref.ref_memory_update(pair.rxlm, pair.stm, interaction)
    _assert_close(conv.stm, theirs, f"{pair.name} new STM")
    # the same write with trailing padding masked out, on both sides
    padded = torch.tensor([interaction + [OUR_SPECIAL["pad"]] * 4])
    mask = torch.ones_like(padded)
    mask[:, len(interaction) :] = 0
    ours = pair.ours.memory(pair.stm, pair.ours.encoder(padded, mask), mask)
    theirs = ref.ref_memory_update(pair.rxlm, pair.stm, padded, mask)
    _assert_close(ours, theirs, f"{pair.name} padded STM")


@torch.no_grad()
def _our_decode(model: RxTModel, stm: torch.Tensor, prompt: list[int], forced: list[int]) -> torch.Tensor:
    """Prefill, then one token at a time through the KV cache (as TorchConversation, in any dtype)."""
    mem_k, mem_v = model.memory_kv(stm)
    past_k, past_v = model.empty_cache()
    past_k = [p.to(stm.dtype) for p in past_k]
    past_v = [p.to(stm.dtype) for p in past_v]
    step_logits, tokens = [], prompt
    for token in forced:
        logits, new_k, new_v = model.decoder(torch.tensor([tokens]), past_k, past_v, mem_k, mem_v)
        past_k = [torch.cat([a, b]) for a, b in zip(past_k, new_k, strict=True)]
        past_v = [torch.cat([a, b]) for a, b in zip(past_v, new_v, strict=True)]
        step_logits.append(logits[0])
        tokens = [token]
    return torch.stack(step_logits)


@torch.no_grad()
def test_multi_turn_with_answers_cut_at_the_limit_matches_interact(pair: Pair):
    """rxlm's own `interact()` over 3 turns whose answers hit the length limit (random weights rarely pick
    [EOS]): every token and the final STM equal ours. A cut answer enters memory without [EOS] on both sides
    (rxt_edge.contract.turn_interaction); appending one makes the STM, then the answers, drift apart."""
    if not hasattr(pair.rxlm, "interact"):
        pytest.skip("per-component models have no interact()")
    new_tokens = 6
    ref.load_stm(pair.rxlm, pair.stm)
    ours = TorchConversation(pair.ours, pair.stm)
    cut = 0
    for t in range(3):
        query = ref.random_token_ids(5, 40 + t)
        prompt = ref.make_prompt(query)
        ref.reset_attention_caches(pair.rxlm)
        # RxTBeta answers without thinking in its "fast" mode, which yields the [A] it appends first
        beta = (
            {"thinking_mode": "fast"}
            if "thinking_mode" in inspect.signature(pair.rxlm.interact).parameters
            else {}
        )
        with ref.one_thread():
            stream = pair.rxlm.interact(
                torch.tensor([prompt[:-1]]),  # interact() appends [A] itself
                attention_mask=torch.ones(1, len(prompt) - 1, dtype=torch.long),
                temperature=1.0,
                top_k=1,  # greedy (rxlm's sampler refuses temperature 0)
                max_seq_len=len(prompt) + new_tokens,
                **beta,
            )
            theirs = [int(x) for x in stream if x >= 0][1 if beta else 0 :]
        if theirs and theirs[-1] == OUR_SPECIAL["eos"]:
            theirs = theirs[:-1]
        else:
            cut += 1
        assert ours.say(query, new_tokens) == theirs, f"{pair.name} turn {t + 1}"
    assert cut >= 2, "the test needs answers cut at the limit"
    # three chained updates compound rounding (STM entries grow to ~200 here): 1e-4 relative, still far below
    # the gap an extra [EOS] makes
    _assert_close(ours.stm, pair.rxlm.memory_attention.model.stm.memory, f"{pair.name} STM, 3 turns", 1e-4)


def test_fp64_parity(pair: Pair):
    """Both sides in fp64: what is left is summation order, so the math itself must agree to ~1e-14."""
    theirs_model = copy.deepcopy(pair.rxlm).double()
    ours_model = copy.deepcopy(pair.ours).double()
    stm = pair.stm.double()
    prompt = ref.make_prompt(pair.query)
    interaction = ref.make_interaction(pair.query, pair.answer)
    ids = torch.tensor([interaction])
    mask = torch.ones_like(ids)
    theirs, tokens = ref.ref_decode_logits(theirs_model, stm, prompt, steps=STEPS)
    assert theirs.dtype == torch.float64
    _assert_close(
        _our_decode(ours_model, stm, prompt, tokens.tolist()), theirs, f"{pair.name} fp64 decode", FP64_TOL
    )
    with torch.no_grad():
        mem_k, mem_v = ours_model.memory_kv(stm)
        past_k, past_v = ([p.double() for p in c] for c in ours_model.empty_cache())
        logits, _, _ = ours_model.decoder(
            torch.tensor([prompt]), past_k, past_v, mem_k, mem_v, all_logits=True
        )
        encoded = ours_model.encoder(ids, mask)
        new_stm = ours_model.memory(stm, encoded, mask)
    theirs_prefill = ref.ref_prefill_logits(theirs_model, stm, prompt)
    _assert_close(logits[0], theirs_prefill, f"{pair.name} fp64 prefill", FP64_TOL)
    _assert_close(
        encoded, ref.ref_encoder_hidden(theirs_model, interaction), f"{pair.name} fp64 encoder", FP64_TOL
    )
    theirs_stm = ref.ref_memory_update(theirs_model, stm, interaction)
    _assert_close(new_stm, theirs_stm, f"{pair.name} fp64 STM", FP64_TOL)


def _ungated_interlayer_components(memory_class: str) -> torch.nn.Module:
    """comp_interlayer with the gates off, memory attention of `memory_class`."""
    cfg = copy.deepcopy(ref.PER_COMPONENT_CONFIGS["comp_interlayer"])
    mem = dict(
        cfg["memory_attention_config"], use_gated_residual=False, residual_gate_slot_status_type="mean"
    )
    models = ref._rxlm_models()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(21)
        model = ref.ComponentRxT(
            models.RxTDecoder(**cfg["decoder_config"]),
            models.RxTEncoder(**cfg["encoder_config"]),
            getattr(models, memory_class)(**mem),
        )
    ref.randomize_(model, 21)
    return model.eval()


@pytest.mark.parametrize(
    ("memory_class", "variant"),
    [("RxTInterlayerMemoryAttention", "interlayer"), ("RxTSelfInterlayerMemoryAttention", "self-interlayer")],
)
def test_ungated_interlayer_components_need_a_declared_variant(memory_class, variant, tmp_path):
    """Without gates both classes store identical tensors and configs: the reader must not guess."""
    model = _ungated_interlayer_components(memory_class)
    _save(model, "comp_interlayer", tmp_path)
    with pytest.raises(CheckpointError, match="memory_attention_variant"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"memory_attention_variant": variant}))
    ours, _ = load_checkpoint(tmp_path)
    assert ours.cfg.memory.variant == variant
    stm = ref.random_stm(model, 22)
    interaction = ref.make_interaction(ref.random_token_ids(6, 23), ref.random_token_ids(5, 24))
    ids = torch.tensor([interaction])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        new = ours.memory(stm, ours.encoder(ids, mask), mask)
    _assert_close(new, ref.ref_memory_update(model, stm, interaction), f"{memory_class} new STM")


# --- the reader refuses what it cannot read faithfully ------------------------------------------------


@pytest.fixture(scope="module")
def saved_dirs(tmp_path_factory) -> dict[str, Path]:
    """One combined and one per-component checkpoint, written once; tests work on copies."""
    out = {}
    for name in ("alpha_mha_dense", "beta_dense_static", "comp_simple"):
        out[name] = _save(ref.build_rxlm_model(name, seed=31), name, tmp_path_factory.mktemp(name))
    return out


@pytest.fixture
def combined(saved_dirs, tmp_path) -> Path:
    return Path(shutil.copytree(saved_dirs["alpha_mha_dense"], tmp_path / "ckpt"))


def _edit_weights(path: Path, edit) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _edit_config(path: Path, edit) -> None:
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))


def test_missing_tensor_is_named(combined):
    key = "decoder.model.layers.1.memory_cross_attention.v_proj.weight"
    _edit_weights(combined / "model.safetensors", lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=rf"missing tensor '{key}'"):
        load_checkpoint(combined)


def test_wrong_shape_is_named(combined):
    key = "memory_attention.model.attention_layers.2.k_proj.weight"
    _edit_weights(combined / "model.safetensors", lambda t: t.update({key: t[key][:, :16].contiguous()}))
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape \(32, 16\)"):
        load_checkpoint(combined)


def test_nan_weight_is_named(combined):
    key = "encoder.model.layers.0.ff.fc2.weight"

    def poison(t):
        t[key][3, 5] = float("nan")

    _edit_weights(combined / "model.safetensors", poison)
    with pytest.raises(CheckpointError, match=rf"'{key}' contains NaN"):
        load_checkpoint(combined)


def test_unexplained_tensor_is_named(combined):
    key = "decoder.model.layers.0.attention.extra_proj.weight"
    _edit_weights(combined / "model.safetensors", lambda t: t.update({key: torch.zeros(4)}))
    with pytest.raises(CheckpointError, match=rf"does not explain.*{key}"):
        load_checkpoint(combined)


def test_gate_weights_the_config_turned_off_are_refused(saved_dirs, tmp_path):
    """Tensors rxlm builds and never uses may be skipped; gates the config says are off may not."""
    directory = Path(shutil.copytree(saved_dirs["beta_dense_static"], tmp_path / "ckpt"))
    _edit_config(
        directory / "config.json", lambda c: c["memory_attention_config"].update(use_gated_residual=False)
    )
    with pytest.raises(CheckpointError, match=r"does not explain.*residual_gate_layers\.0\.gate"):
        load_checkpoint(directory)


def test_unknown_memory_attention_variant_is_named(combined):
    _edit_config(combined / "config.json", lambda c: c.update(memory_attention_variant="sideways"))
    with pytest.raises(CheckpointError, match=r"memory_attention_variant 'sideways'"):
        load_checkpoint(combined)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("decoder_config", "self_att_type"),
        ("decoder_config", "cross_att_type"),
        ("encoder_config", "self_att_type"),
        ("memory_attention_config", "att_type"),
        ("memory_attention_config", "interlayer_att_type"),
    ],
)
def test_unknown_attention_type_is_named(combined, section, key):
    _edit_config(combined / "config.json", lambda c: c[section].update({key: "gma"}))
    with pytest.raises(CheckpointError, match=rf"{section}\.{key}: attention type 'gma' is not supported"):
        load_checkpoint(combined)


def test_pickle_weights_are_refused_unless_allowed(combined):
    reference, _ = load_checkpoint(combined)
    tensors = load_file(str(combined / "model.safetensors"))
    torch.save(tensors, combined / "pytorch_model.bin")
    (combined / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"pytorch_model.bin.*{ALLOW_PICKLE_FLAG}"):
        load_checkpoint(combined)
    model, _ = load_checkpoint(combined, allow_pickle=True)
    theirs = reference.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_per_component_errors_name_the_component_key(saved_dirs, tmp_path):
    directory = Path(shutil.copytree(saved_dirs["comp_simple"], tmp_path / "ckpt"))
    _edit_weights(directory / "decoder" / "model.safetensors", lambda t: t.pop("model.head.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'decoder\.model\.head\.weight'"):
        load_checkpoint(directory)


def test_per_component_without_special_tokens_is_refused(saved_dirs, tmp_path):
    directory = Path(shutil.copytree(saved_dirs["comp_simple"], tmp_path / "ckpt"))
    (directory / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer_config"):
        load_checkpoint(directory)
