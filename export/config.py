"""The canonical RxT configuration: every architecture option, explicit and per layer.

Checkpoint readers translate their trainer's config into this one; the model, the exporter and the native
checkpoint format (docs/native-format.md) read only this. Plain dataclasses, JSON round-trip, and errors
that name the offending key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

Activation = Literal["silu", "swish", "gelu", "relu", "sigmoid", "tanh", "linear"]
NormKind = Literal["rms", "layer"]
BiasMode = Literal["global", "local", "off"]
MemoryNormKind = Literal["classic-rms", "rms", "layer", "adaptive", "positional"]
GateMode = Literal["add", "replace", "static", "elementwise", "linear"]
MemoryVariant = Literal["simple", "self", "interlayer", "self-interlayer", "grouped-self-interlayer"]


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or inconsistent."""


@dataclass
class AttentionConfig:
    """One attention block. Query heads may be more (GQA-like) or fewer (reverse SQA: queries tiled) than K/V heads."""

    q_heads: int
    kv_heads: int
    head_dim: int
    gated: bool = False  # out_proj(attn * act(gate_proj(normed_query_input)))
    gate_activation: Activation = "sigmoid"
    out_bias: bool = True

    @property
    def out_heads(self) -> int:
        return max(self.q_heads, self.kv_heads)

    def check(self, where: str) -> None:
        big, small = max(self.q_heads, self.kv_heads), min(self.q_heads, self.kv_heads)
        if small <= 0 or big % small:
            raise ConfigError(
                f"{where}: q_heads={self.q_heads} and kv_heads={self.kv_heads} must divide one another"
            )


@dataclass
class FeedForwardConfig:
    """Dense (num_experts == 0) or Mixture-of-Experts feed-forward; `gated` selects the GLU form."""

    hidden_dim: int
    activation: Activation = "silu"
    gated: bool = True
    bias: bool = True  # dense layers only
    num_experts: int = 0
    top_k: int = 1
    num_shared_experts: int = 0
    shared_hidden_dim: int = 0
    expert_bias: BiasMode = "global"
    shared_bias: BiasMode = "local"
    weighted_shared: bool = False

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def check(self, where: str) -> None:
        if self.is_moe and not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(f"{where}: top_k={self.top_k} must be in 1..num_experts={self.num_experts}")


@dataclass
class BlockConfig:
    """A pre-norm transformer block; `cross_attn` present only on memory layers of the decoder."""

    self_attn: AttentionConfig
    ffn: FeedForwardConfig
    cross_attn: AttentionConfig | None = None


@dataclass
class DecoderConfig:
    memory_layers: list[BlockConfig]
    layers_before: list[BlockConfig] = field(default_factory=list)  # memory-free ("stateless") layers
    layers_after: list[BlockConfig] = field(default_factory=list)
    norm: NormKind = "rms"
    head_norm: NormKind | None = None
    rope_base: float = 10000.0
    max_seq_len: int = 1024

    @property
    def all_layers(self) -> list[BlockConfig]:
        return [*self.layers_before, *self.memory_layers, *self.layers_after]


@dataclass
class EncoderConfig:
    layers: list[BlockConfig]
    norm: NormKind = "rms"
    rope_base: float = 10000.0
    max_seq_len: int = 1024


@dataclass
class GateConfig:
    """Residual gate of a memory write: add (old+new), replace (new), or a learned gate G.

    static: G = act(param); elementwise: G = act(param * status); linear: G = act(Linear_SxS(status)),
    status = mean over D of (old+new) or a Linear(D,1) of it. tanh: (1+G)*new + (1-G)*old; sigmoid: G*new + (1-G)*old.
    """

    mode: GateMode = "add"
    activation: Literal["tanh", "sigmoid"] = "tanh"
    per_slot: bool = True
    slot_status: Literal["mean", "linear"] = "mean"


@dataclass
class MemoryNormConfig:
    kind: MemoryNormKind = "classic-rms"
    per_dim_scale: bool = False  # positional only


@dataclass
class MemoryAttentionConfig:
    variant: MemoryVariant
    num_layers: int
    attn: AttentionConfig  # the STM write (RoPE on the encoded-data keys)
    norm: MemoryNormConfig = field(default_factory=MemoryNormConfig)
    residual_gate: GateConfig = field(default_factory=GateConfig)
    aux_attn: AttentionConfig | None = None  # self / interlayer attention over slots (no RoPE)
    aux_residual_gate: GateConfig = field(default_factory=GateConfig)
    mix_gate: GateConfig = field(default_factory=GateConfig)  # self-interlayer: mixes own layer and mean
    num_groups: int = 1  # grouped-self-interlayer
    rope_base: float = 10000.0


@dataclass
class RxTConfig:
    vocab_size: int
    dim: int
    stm_slots: int
    decoder: DecoderConfig
    encoder: EncoderConfig
    memory: MemoryAttentionConfig
    special_tokens: dict[str, int] = field(default_factory=dict)
    shared_embedding: bool = True

    @property
    def memory_layers(self) -> int:
        return len(self.decoder.memory_layers)

    def check(self) -> None:
        """Structural consistency; raises ConfigError naming the offending part."""
        n = self.memory_layers
        if n == 0:
            raise ConfigError("decoder.memory_layers: at least one memory layer is required")
        if len(self.encoder.layers) != n or self.memory.num_layers != n:
            raise ConfigError(
                f"layer counts disagree: decoder memory layers={n}, encoder layers={len(self.encoder.layers)}, "
                f"memory.num_layers={self.memory.num_layers} (all three must match the STM)"
            )
        for name, blocks in (("decoder", self.decoder.all_layers), ("encoder", self.encoder.layers)):
            for i, b in enumerate(blocks):
                b.self_attn.check(f"{name}.layers[{i}].self_attn")
                b.ffn.check(f"{name}.layers[{i}].ffn")
                if b.self_attn.head_dim % 2:
                    raise ConfigError(f"{name}.layers[{i}].self_attn.head_dim must be even for RoPE")
        for i, b in enumerate(self.decoder.memory_layers):
            if b.cross_attn is None:
                raise ConfigError(f"decoder.memory_layers[{i}].cross_attn is required")
        heads = {(b.self_attn.kv_heads, b.self_attn.head_dim) for b in self.decoder.all_layers}
        if len(heads) != 1:
            raise ConfigError(
                f"decoder layers must share kv_heads/head_dim for one KV-cache layout, got {heads}"
            )
        cross = {(b.cross_attn.kv_heads, b.cross_attn.head_dim) for b in self.decoder.memory_layers}
        if len(cross) != 1:
            raise ConfigError(f"decoder memory cross-attention must share kv_heads/head_dim, got {cross}")
        if self.memory.variant not in typing.get_args(MemoryVariant):
            raise ConfigError(
                f"memory.variant: unknown {self.memory.variant!r}; known {typing.get_args(MemoryVariant)}"
            )
        if self.memory.variant != "simple" and self.memory.aux_attn is None:
            raise ConfigError(f"memory.aux_attn is required for variant {self.memory.variant!r}")
        groups = self.memory.num_groups
        if self.memory.variant == "grouped-self-interlayer" and not (1 <= groups <= n and n % groups == 0):
            # equal groups only: the reference fails on uneven ones (its chunking and indexing disagree)
            raise ConfigError(f"memory.num_groups={groups} must divide the {n} memory layers")

    # --- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RxTConfig:
        cfg = _build(RxTConfig, d, "config")
        cfg.check()
        return cfg


def build_config(
    *,
    vocab: int,
    dim: int,
    layers: int,
    heads: int,
    kv_heads: int,
    ffn: int,
    slots: int,
    special_tokens: dict[str, int],
    q_heads: int | None = None,
    encoder_ffn: int | None = None,
    experts: int = 0,
    top_k: int = 1,
    shared_experts: int = 0,
    expert_ffn: int | None = None,
    stateless: int = 0,
    gated_attention: bool = False,
    variant: MemoryVariant = "self-interlayer",
    memory_heads: tuple[int, int] | None = None,
    groups: int = 1,
    gate: GateMode = "elementwise",
    max_seq_len: int = 1024,
) -> RxTConfig:
    """An RxT of `layers` identical memory layers from a few shape numbers: the one builder behind the
    benchmark presets, the test configurations and the demo recipe (checkpoints carry their full config).

    head_dim = dim // heads; `q_heads` (default `heads`) and `kv_heads` shape every self- and cross-attention,
    `memory_heads` (q, kv) the memory attention (default the same). `ffn` is the dense feed-forward of every
    decoder layer (`encoder_ffn` of the encoder's, default `ffn`); `experts` > 0 turns the decoder's memory
    layers into MoE of `expert_ffn` (default `ffn`) with `shared_experts`. `stateless` memory-free layers go
    before and after the memory layers (with an RMS head norm). Gates are `gate`-mode sigmoid gates; the
    memory's self/interlayer attention exists for every variant but "simple"."""
    hd = dim // heads
    q_heads = heads if q_heads is None else q_heads
    attn = AttentionConfig(q_heads, kv_heads, hd, gated=gated_attention)
    dense = FeedForwardConfig(hidden_dim=ffn)
    hidden = expert_ffn or ffn
    moe = FeedForwardConfig(
        hidden, num_experts=experts, top_k=top_k, num_shared_experts=shared_experts, shared_hidden_dim=hidden
    )
    mem_block = BlockConfig(
        attn, moe if experts else dense, cross_attn=AttentionConfig(q_heads, kv_heads, hd)
    )
    plain = BlockConfig(attn, dense)
    encoder_block = BlockConfig(attn, FeedForwardConfig(hidden_dim=encoder_ffn or ffn))
    mq, mkv = memory_heads or (q_heads, kv_heads)
    g = GateConfig(mode=gate, activation="sigmoid")
    return RxTConfig(
        vocab_size=vocab,
        dim=dim,
        stm_slots=slots,
        decoder=DecoderConfig(
            memory_layers=[mem_block] * layers,
            layers_before=[plain] * stateless,
            layers_after=[plain] * stateless,
            head_norm="rms" if stateless else None,
            max_seq_len=max_seq_len,
        ),
        encoder=EncoderConfig(layers=[encoder_block] * layers, max_seq_len=max_seq_len),
        memory=MemoryAttentionConfig(
            variant=variant,
            num_layers=layers,
            attn=AttentionConfig(mq, mkv, hd),
            aux_attn=None if variant == "simple" else AttentionConfig(mq, mkv, hd),
            norm=MemoryNormConfig("classic-rms"),
            residual_gate=g,
            aux_residual_gate=g,
            mix_gate=g,
            num_groups=groups,
        ),
        special_tokens=dict(special_tokens),
    )


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from JSON data, naming the key path on any mismatch."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}.{name}: missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
