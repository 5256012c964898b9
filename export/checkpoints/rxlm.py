"""Reader for checkpoints written by Reactive AI's `rxlm` (RxTAlpha / RxTBeta `save_pretrained`).

Facts about the format (learned from rxlm 0.3.92, no code taken from it):
- combined layout: `config.json` with `decoder_config`, `encoder_config`, `memory_attention_config`,
  `tokenizer_config`, `memory_attention_variant`, plus `model.safetensors` with keys under `decoder.model.`,
  `encoder.model.` and `memory_attention.model.`;
- per-component layout: `decoder/`, `encoder/`, `memory_attention/`, each with its own config and weights (keys
  under `model.`); the memory-attention class is recognised from its weights;
- `share_components()` aliases the encoder embedding into the decoder and the memory-attention STM into the
  decoder, and `save_pretrained` keeps only one name of each alias: we accept whichever survived;
- `memory_attention_variant='interlayer'` builds the self-interlayer network in RxTAlpha (reproduced here);
- RoPE tables, STM copies and EMA statistics are buffers we recompute or ignore.
"""

from __future__ import annotations

import re
from collections import ChainMap
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..config import (
    AttentionConfig,
    BlockConfig,
    ConfigError,
    DecoderConfig,
    EncoderConfig,
    FeedForwardConfig,
    GateConfig,
    MemoryAttentionConfig,
    MemoryNormConfig,
    RxTConfig,
)
from ..model import RxTModel
from .common import CheckpointError, SourceInfo, fill_model, fingerprint, load_tensors, read_json, weight_file

COMPONENT_DIRS = ("decoder", "encoder", "memory_attention")
SPECIAL_NAMES = {  # tokenizer_config key -> our name
    "bos_token_id": "bos",
    "eos_token_id": "eos",
    "query_token_id": "query",
    "answer_token_id": "answer",
    "pad_token_id": "pad",
    "think_token_id": "think",
    "tool_call_token_id": "tool_call",
    "tool_use_token_id": "tool_use",
    "internal_token_id": "internal",
}
# Defaults of rxlm's component constructors, used when config.json leaves a key out.
COMPONENT_DEFAULTS = dict(
    num_layers=12,
    vocab_size=20000,
    embed_dim=512,
    ff_dim=1536,
    att_heads=16,
    seq_len=1024,
    stm_size=1024,
    use_gated=True,
    ff_activation="swish",
    use_rms_norm=True,
    att_groups=1,
    use_moe=False,
    num_experts=1,
    num_shared_experts=1,
    shared_expert_dim=None,
    moe_top_k=1,
    self_att_type="sqa",
    cross_att_type="sqa",
    att_query_groups=None,
    cross_att_groups=None,
    cross_att_query_groups=None,
    use_head_norm=False,
    skip_memory_cross_attention=False,
    stateless_layers_config=None,
    final_stateless_layers_config=None,
    dense_layer_dim=1536,
    use_nope=False,
    head_norm_type="layer_norm",
    use_vectorized_moe=True,
    moe_bias_mode="global",
    moe_shared_experts_bias_mode="local",
    moe_use_weighted_shared_experts=False,
    use_gated_attention=False,
    gated_attention_activation="sigmoid",
    use_gated_cross_attention=None,
    use_attention_output_bias=True,
    rope_base=10000,
    legacy_stm_in_encoder=False,
)
MEMORY_DEFAULTS = dict(
    num_layers=12,
    embed_dim=512,
    att_heads=16,
    seq_len=1024,
    stm_size=1024,
    att_groups=1,
    att_type="sqa",
    att_query_groups=None,
    interlayer_att_groups=1,
    interlayer_att_type="sqa",
    interlayer_att_query_groups=None,
    self_att_groups=1,
    self_att_type="sqa",
    self_att_query_groups=None,
    norm_type="classic-rms",
    norm_per_dim_scale=False,
    use_gated_residual=False,
    residual_per_slot_gate=True,
    residual_gate_type="static",
    residual_gate_slot_status_type="mean",
    use_tanh_residual_gate=True,
    disable_residual=False,
    use_gate_for_self_attention=False,
    num_groups=1,
    rope_base=10000,
)


def is_rxlm(directory: Path) -> bool:
    if all((directory / d).is_dir() for d in COMPONENT_DIRS):
        return True
    cfg = directory / "config.json"
    return cfg.is_file() and "decoder_config" in cfg.read_text(errors="replace")


# --- config translation ----------------------------------------------------------------------------
def _get(cfg: dict, key: str, defaults: dict):
    return cfg[key] if key in cfg and cfg[key] is not None else defaults.get(key)


def _heads(
    kind: str, heads: int, groups: int | None, query_groups: int | None, dim: int, where: str
) -> AttentionConfig:
    hd = dim // heads
    if kind == "mha":
        return AttentionConfig(heads, heads, hd)
    if kind == "gqa":
        return AttentionConfig(heads, groups, hd)
    if kind == "mqa":
        return AttentionConfig(heads, 1, hd)
    if kind == "sqa":
        if query_groups is None:
            raise CheckpointError(f"{where}: SQA attention needs att_query_groups (the query head count)")
        return AttentionConfig(query_groups, groups, hd)
    raise CheckpointError(f"{where}: attention type {kind!r} is not supported (mha, gqa, mqa, sqa)")


def _component(
    c: dict, where: str, causal: bool
) -> tuple[list[BlockConfig], list[BlockConfig], list[BlockConfig], dict]:
    g = lambda k: _get(c, k, COMPONENT_DEFAULTS)  # noqa: E731
    if g("use_nope"):
        raise CheckpointError(f"{where}.use_nope: position-free attention is not supported")
    if g("self_att_type") == "hybrid":
        raise CheckpointError(f"{where}.self_att_type: 'hybrid' (linear attention layers) is not supported")
    if g("use_moe") and not g("use_vectorized_moe"):
        raise CheckpointError(
            f"{where}.use_vectorized_moe: the legacy per-expert MoE layout is not supported"
        )
    dim = g("embed_dim")
    self_attn = _heads(
        g("self_att_type"),
        g("att_heads"),
        g("att_groups"),
        g("att_query_groups"),
        dim,
        f"{where}.self_att_type",
    )
    self_attn.gated, self_attn.gate_activation = (
        bool(g("use_gated_attention")),
        g("gated_attention_activation"),
    )
    self_attn.out_bias = bool(g("use_attention_output_bias"))
    act = g("ff_activation")
    if g("use_moe"):
        main_ffn = FeedForwardConfig(
            hidden_dim=g("ff_dim"),
            activation=act,
            gated=g("use_gated"),
            num_experts=g("num_experts"),
            top_k=g("moe_top_k"),
            num_shared_experts=g("num_shared_experts"),
            shared_hidden_dim=g("shared_expert_dim") or g("ff_dim"),
            expert_bias=g("moe_bias_mode"),
            shared_bias=g("moe_shared_experts_bias_mode"),
            weighted_shared=bool(g("moe_use_weighted_shared_experts")),
        )
    else:
        main_ffn = FeedForwardConfig(hidden_dim=g("ff_dim"), activation=act, gated=g("use_gated"))
    cross = None
    if causal and not g("skip_memory_cross_attention"):
        cross = _heads(
            g("cross_att_type"),
            g("att_heads"),
            g("cross_att_groups") or g("att_groups"),
            g("cross_att_query_groups") or g("att_query_groups"),
            dim,
            f"{where}.cross_att_type",
        )
        gated_cross = g("use_gated_cross_attention")
        cross.gated = bool(g("use_gated_attention") if gated_cross is None else gated_cross)
        cross.gate_activation, cross.out_bias = g("gated_attention_activation"), self_attn.out_bias
    mem = [BlockConfig(self_attn=self_attn, ffn=main_ffn, cross_attn=cross) for _ in range(g("num_layers"))]

    def stateless(kinds: list[str] | None, key: str) -> list[BlockConfig]:
        if (
            not kinds or cross is None
        ):  # rxlm builds memory-free layers only for decoders with cross-attention
            return []
        out = []
        for i, kind in enumerate(kinds):
            if kind not in ("dense", "moe"):
                raise CheckpointError(f"{where}.{key}[{i}]: unknown layer kind {kind!r}")
            ffn = (
                main_ffn
                if kind == "moe"
                else FeedForwardConfig(hidden_dim=g("dense_layer_dim"), activation=act, gated=g("use_gated"))
            )
            out.append(BlockConfig(self_attn=self_attn, ffn=ffn))
        return out

    before = stateless(g("stateless_layers_config"), "stateless_layers_config")
    after = stateless(g("final_stateless_layers_config"), "final_stateless_layers_config")
    return (
        before,
        mem,
        after,
        {k: g(k) for k in ("embed_dim", "vocab_size", "seq_len", "stm_size", "rope_base")},
    )


def _gate(use: bool, c: dict, replace: bool = False) -> GateConfig:
    g = lambda k: _get(c, k, MEMORY_DEFAULTS)  # noqa: E731
    if replace:
        return GateConfig(mode="replace")
    if not use:
        return GateConfig(mode="add")
    return GateConfig(
        mode=g("residual_gate_type"),
        activation="tanh" if g("use_tanh_residual_gate") else "sigmoid",
        per_slot=bool(g("residual_per_slot_gate")),
        slot_status=g("residual_gate_slot_status_type"),
    )


def _memory(c: dict, variant: str, where: str) -> MemoryAttentionConfig:
    g = lambda k: _get(c, k, MEMORY_DEFAULTS)  # noqa: E731
    dim, heads = g("embed_dim"), g("att_heads")
    attn = _heads(g("att_type"), heads, g("att_groups"), g("att_query_groups"), dim, f"{where}.att_type")
    prefix = "self" if variant == "self" else "interlayer"
    aux = None
    if variant != "simple":
        aux = _heads(
            g(f"{prefix}_att_type"),
            heads,
            g(f"{prefix}_att_groups"),
            g(f"{prefix}_att_query_groups"),
            dim,
            f"{where}.{prefix}_att_type",
        )
    use = bool(g("use_gated_residual"))
    return MemoryAttentionConfig(
        variant=variant,
        num_layers=g("num_layers"),
        attn=attn,
        aux_attn=aux,
        norm=MemoryNormConfig(kind=g("norm_type"), per_dim_scale=bool(g("norm_per_dim_scale"))),
        residual_gate=_gate(use, c, replace=variant == "simple" and bool(g("disable_residual"))),
        aux_residual_gate=_gate(bool(g("use_gate_for_self_attention")) if variant == "self" else use, c),
        mix_gate=_gate(use, c),
        num_groups=g("num_groups"),
        rope_base=float(g("rope_base")),
    )


def translate_config(
    dec: dict, enc: dict, mem: dict, variant: str, special: dict[str, int], where: str
) -> RxTConfig:
    before, layers, after, d = _component(dec, f"{where}.decoder_config", causal=True)
    _, enc_layers, _, e = _component(enc, f"{where}.encoder_config", causal=False)
    if not layers or layers[0].cross_attn is None:
        raise CheckpointError(f"{where}.decoder_config: the decoder must have memory cross-attention")
    g = lambda k: _get(dec, k, COMPONENT_DEFAULTS)  # noqa: E731
    head_norm = None
    if g("use_head_norm"):
        head_norm = {"rms_norm": "rms", "layer_norm": "layer"}.get(g("head_norm_type"))
        if head_norm is None:
            raise CheckpointError(f"{where}.decoder_config.head_norm_type: unknown {g('head_norm_type')!r}")
    norm = "rms" if g("use_rms_norm") else "layer"
    enc_norm = "rms" if _get(enc, "use_rms_norm", COMPONENT_DEFAULTS) else "layer"
    try:
        cfg = RxTConfig(
            vocab_size=d["vocab_size"],
            dim=d["embed_dim"],
            stm_slots=d["stm_size"],
            decoder=DecoderConfig(
                memory_layers=layers,
                layers_before=before,
                layers_after=after,
                norm=norm,
                head_norm=head_norm,
                rope_base=float(d["rope_base"]),
                max_seq_len=d["seq_len"],
            ),
            encoder=EncoderConfig(
                layers=enc_layers, norm=enc_norm, rope_base=float(e["rope_base"]), max_seq_len=e["seq_len"]
            ),
            memory=_memory(mem, variant, f"{where}.memory_attention_config"),
            special_tokens=special,
        )
        cfg.check()
    except ConfigError as err:
        raise CheckpointError(f"{where}: {err}") from None
    if e["embed_dim"] != d["embed_dim"] or e["vocab_size"] != d["vocab_size"]:
        raise CheckpointError(f"{where}: encoder and decoder disagree on embed_dim/vocab_size")
    return cfg


# --- weight names ------------------------------------------------------------------------------------
_BLOCK = [  # our block-relative name -> rxlm layer-relative name
    (r"norm_self\.", "norm1."),
    (r"norm_cross\.", "norm2."),
    (r"norm_stm\.", "stm_norm."),
    (r"norm_ffn\.", "norm3."),
    (r"self_attn\.", "attention."),
    (r"cross_attn\.", "memory_cross_attention."),
    (r"ffn\.router\.weight", "ff.router.gate.weight"),
    (r"ffn\.shared_gate\.", "ff.shared_expert_gate."),
    (r"ffn\.shared_global_bias", "ff.shared_experts_bias"),
    (r"ffn\.shared\.", "ff.shared_expert."),
    (r"ffn\.", "ff."),
]
_MEMORY = [
    ("stm_norms", "memory_norm_layers"),
    ("input_norms", "memory_input_norm_layers"),
    ("attn", "attention_layers"),
    ("gates", "residual_gate_layers"),
    ("mix_gates", "interlayer_gate_layers"),
    ("mean_norm", "mean_stm_norm"),
]


def _block_name(rest: str, gated_ffn: bool) -> str:
    for pat, rep in _BLOCK:
        if re.match(pat, rest):
            rest = re.sub("^" + pat, rep, rest)
            break
    # a gated dense FFN (or single shared expert) keeps fc1 inside a GLU module: fc1.linear.*
    rest = re.sub(
        r"^(ff(?:\.shared_expert)?)\.fc1\.",
        lambda m: m.group(1) + (".fc1.linear." if gated_ffn else ".fc1."),
        rest,
    )
    return rest


def rxlm_names(model: RxTModel, variant: str, prefixes: dict[str, str]):
    """Map our key -> candidate rxlm keys. `prefixes` gives each component's key prefix in the file."""
    cfg = model.cfg
    n_before, n_mem = len(cfg.decoder.layers_before), len(cfg.decoder.memory_layers)
    aux = {
        "self": "self",
        "interlayer": "mean",
        "self-interlayer": "mean",
        "grouped-self-interlayer": "mean",
    }.get(variant)
    dec, enc, mem = prefixes["decoder"], prefixes["encoder"], prefixes["memory_attention"]

    def names(key: str) -> list[str]:
        if key == "initial_stm":
            return [mem + "stm.memory", dec + "stm.memory"]
        if key in ("decoder.embed.weight", "encoder.embed.weight"):
            own, other = (dec, enc) if key.startswith("decoder") else (enc, dec)
            # share_components() + save_pretrained keep only one name of the shared embedding
            return [own + "embedding.weight"] + ([other + "embedding.weight"] if cfg.shared_embedding else [])
        m = re.match(r"(decoder|encoder)\.blocks\.(\d+)\.(.*)", key)
        if m:
            part, i, rest = m.group(1), int(m.group(2)), m.group(3)
            blocks = cfg.decoder.all_layers if part == "decoder" else cfg.encoder.layers
            rest = _block_name(rest, blocks[i].ffn.gated)
            if part == "encoder":
                return [f"{enc}layers.{i}.{rest}"]
            if i < n_before:
                return [f"{dec}stateless_layers.{i}.{rest}"]
            if i < n_before + n_mem:
                return [f"{dec}layers.{i - n_before}.{rest}"]
            return [f"{dec}final_stateless_layers.{i - n_before - n_mem}.{rest}"]
        if key.startswith("decoder."):
            return [dec + key[len("decoder.") :]]  # head.*, head_norm.*
        if key.startswith("memory."):
            rest = key[len("memory.") :]
            rest = re.sub(r"^aux_norms", f"{aux}_memory_norm_layers", rest)
            rest = re.sub(r"^aux_attn", f"{aux}_attention_layers", rest)
            rest = re.sub(r"^aux_gates", f"{aux}_residual_gate_layers", rest)
            for ours, theirs in _MEMORY:
                rest = re.sub(rf"^{ours}\b", theirs, rest)
            # classic-rms memory norms are plain nn.RMSNorm: `.norm.weight` is just `.weight` there
            if cfg.memory.norm.kind == "classic-rms":
                rest = re.sub(r"^((?:\w+_)?(?:memory_norm_layers\.\d+|mean_stm_norm))\.norm\.", r"\1.", rest)
            rest = re.sub(r"\.gate_linear\.", ".gate.", rest)
            return [mem + rest]
        return [key]

    return names


_IGNORABLE = re.compile(r"(rope\.(inv_freq|cache)$|\.ema_rms$|\.aux_loss$|stm\.memory$|shared_gate_loss$)")


# Gate tensors rxlm builds but never uses (only ever ignored when our model does not ask for them):
# with slot status 'linear' every gate gets a slot-status linear, even an ungated or static one; with
# `disable_residual` the simple variant's gates keep their parameters but the write replaces the STM.
_UNUSED_SLOT_STATUS = re.compile(r"gate_layers\.\d+\.slot_status\.(weight|bias)$")
_UNUSED_REPLACED_GATE = re.compile(r"(^|\.)residual_gate_layers\.\d+\.gate(\.weight|\.bias)?$")


def _ignorable(model: RxTModel, mem_cfg: dict):
    kind = model.cfg.memory.norm.kind
    g = lambda k: _get(mem_cfg, k, MEMORY_DEFAULTS)  # noqa: E731
    slot_status_built = g("residual_gate_slot_status_type") == "linear"
    gates_replaced = model.cfg.memory.residual_gate.mode == "replace"

    def ok(key: str) -> bool:
        if key.endswith(".ema_rms") and kind == "positional":
            return False  # positional norms normalise by it at inference: it must be used
        if slot_status_built and _UNUSED_SLOT_STATUS.search(key):
            return True
        if gates_replaced and _UNUSED_REPLACED_GATE.search(key):
            return True
        return bool(_IGNORABLE.search(key))

    return ok


def _special_tokens(tok_cfg: dict | None, directory: Path) -> dict[str, int]:
    if tok_cfg:
        return {ours: int(tok_cfg[k]) for k, ours in SPECIAL_NAMES.items() if tok_cfg.get(k) is not None}
    tok = directory / "tokenizer.json"
    if tok.is_file():  # per-component layouts carry no tokenizer_config: look the tokens up by name
        vocab = read_json(tok).get("model", {}).get("vocab", {})
        added = {t["content"]: t["id"] for t in read_json(tok).get("added_tokens", [])}
        table = {**vocab, **added}
        found = {
            ours: table[s]
            for ours, s in {
                "bos": "[BOS]",
                "eos": "[EOS]",
                "query": "[Q]",
                "answer": "[A]",
                "pad": "[PAD]",
            }.items()
            if s in table
        }
        if {"bos", "eos", "query", "answer"} <= set(found):
            return found
    raise CheckpointError(
        f"{directory}: no tokenizer_config in config.json and no [BOS]/[EOS]/[Q]/[A] in tokenizer.json"
    )


def _variant_from_weights(keys: Iterable[str], mem_cfg: dict, declared: str | None, where: str) -> str:
    """Which memory-attention class wrote a per-component directory (its name is not stored).

    The self and grouped classes have their own config keys and weights; the simple one builds no slot
    attention. Interlayer and self-interlayer differ only by the self-interlayer mix gates, which have no
    tensors when the gates are off: then only a `memory_attention_variant` in the top-level config.json
    can tell them apart, and guessing would silently compute the wrong STM.
    """
    keys = " ".join(keys)
    if "self_attention_layers." in keys or "self_att_type" in mem_cfg:
        return "self"
    if "mean_attention_layers." not in keys:
        return "simple"
    if "num_groups" in mem_cfg:
        return "grouped-self-interlayer"
    if "interlayer_gate_layers." in keys:
        return "self-interlayer"
    if declared in ("interlayer", "self-interlayer"):
        return declared
    g = lambda k: _get(mem_cfg, k, MEMORY_DEFAULTS)  # noqa: E731
    if g("use_gated_residual") or g("residual_gate_slot_status_type") == "linear":
        return "interlayer"  # a self-interlayer network would have stored its mix-gate tensors
    raise CheckpointError(
        f"{where}: an ungated interlayer memory attention stores the same tensors as an ungated "
        'self-interlayer one; add "memory_attention_variant": "interlayer" or "self-interlayer" '
        "to a config.json next to decoder/, encoder/, memory_attention/"
    )


def load_rxlm(
    directory: Path, allow_pickle: bool = False, narrow_experts: bool = False
) -> tuple[RxTModel, SourceInfo]:
    if all((directory / d).is_dir() for d in COMPONENT_DIRS):
        return _load_components(directory, allow_pickle, narrow_experts)
    top = read_json(directory / "config.json")
    for key in ("decoder_config", "encoder_config", "memory_attention_config"):
        if not isinstance(top.get(key), dict):
            raise CheckpointError(f"{directory / 'config.json'}: missing or malformed {key!r}")
    requested = top.get("memory_attention_variant") or (
        "self-interlayer" if "think_token_id" in (top.get("tokenizer_config") or {}) else "interlayer"
    )
    variant = {"interlayer": "self-interlayer"}.get(
        requested, requested
    )  # rxlm builds self-interlayer for 'interlayer'
    if variant not in ("self-interlayer", "grouped-self-interlayer"):
        raise CheckpointError(
            f"{directory / 'config.json'}: memory_attention_variant {requested!r} is unknown"
        )
    wfile = weight_file(directory, allow_pickle)
    tensors = load_tensors(wfile, allow_pickle)
    cfg = translate_config(
        top["decoder_config"],
        top["encoder_config"],
        top["memory_attention_config"],
        variant,
        _special_tokens(top.get("tokenizer_config"), directory),
        str(directory / "config.json"),
    )
    cfg.shared_embedding = _embeddings_shared(tensors, "decoder.model.", "encoder.model.")
    model = RxTModel(cfg).eval()
    prefixes = {
        "decoder": "decoder.model.",
        "encoder": "encoder.model.",
        "memory_attention": "memory_attention.model.",
    }
    fill_model(
        model,
        tensors,
        rxlm_names(model, variant, prefixes),
        _ignorable(model, top["memory_attention_config"]),
        str(wfile),
        narrow_experts,
    )
    tok = directory / "tokenizer.json"
    return model, SourceInfo(
        "rxlm",
        str(directory),
        fingerprint([directory / "config.json", wfile]),
        tok if tok.is_file() else None,
    )


def _embeddings_shared(tensors: Mapping[str, torch.Tensor], dec: str, enc: str) -> bool:
    a, b = tensors.get(dec + "embedding.weight"), tensors.get(enc + "embedding.weight")
    return a is None or b is None or (a.shape == b.shape and torch.equal(a, b))


def _load_components(
    directory: Path, allow_pickle: bool, narrow_experts: bool
) -> tuple[RxTModel, SourceInfo]:
    parts, cfgs, files = [], {}, []
    for comp in COMPONENT_DIRS:
        sub = directory / comp
        cfgs[comp] = read_json(sub / "config.json")
        wfile = weight_file(sub, allow_pickle)
        files += [sub / "config.json", wfile]
        parts.append(load_tensors(wfile, allow_pickle, prefix=f"{comp}."))
    tensors = ChainMap(*parts)  # lazy: each tensor is read when the model asks for it
    top = read_json(directory / "config.json") if (directory / "config.json").is_file() else {}
    variant = _variant_from_weights(
        [k for k in tensors if k.startswith("memory_attention.")],
        cfgs["memory_attention"],
        top.get("memory_attention_variant"),
        str(directory / "memory_attention"),
    )
    cfg = translate_config(
        cfgs["decoder"],
        cfgs["encoder"],
        cfgs["memory_attention"],
        variant,
        _special_tokens(top.get("tokenizer_config"), directory),
        str(directory),
    )
    cfg.shared_embedding = _embeddings_shared(tensors, "decoder.model.", "encoder.model.")
    model = RxTModel(cfg).eval()
    prefixes = {c: f"{c}.model." for c in COMPONENT_DIRS}
    fill_model(
        model,
        tensors,
        rxlm_names(model, variant, prefixes),
        _ignorable(model, cfgs["memory_attention"]),
        str(directory),
        narrow_experts,
    )
    tok = directory / "tokenizer.json"
    return model, SourceInfo(
        "rxlm-components", str(directory), fingerprint(files), tok if tok.is_file() else None
    )
