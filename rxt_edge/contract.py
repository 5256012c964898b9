"""The graph contract: every graph's inputs and outputs, declared once.

Export names the ONNX inputs/outputs from here, `verify` and the package loader check the graphs against
it, and the runtime binds buffers by these names. The manifest stores the resolved declaration, so a
runtime in another language can work from the manifest alone (see docs/graph-contract.md).

Shapes are tuples of ints (fixed) and strings (symbolic: batch, seq, past_seq).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DECODER = "decoder"
ENCODER = "encoder"
MEMORY_UPDATE = "memory_update"
MEMORY_KV = "memory_kv"
GRAPH_NAMES = (DECODER, ENCODER, MEMORY_UPDATE, MEMORY_KV)
# The decoder's two self-attention cache layouts (docs/graph-contract.md): "dynamic" grows per step (any
# runtime, any provider); "static" is one [B, Hs, T_max, hd] buffer per layer updated in place by the graph
# (GroupQueryAttention: fixed shapes and addresses, what fused kernels and CUDA-graph capture need).
KV_CACHES = ("dynamic", "static")
SEQLENS = "seqlens_k"  # static decoder: int32 [batch], tokens in the cache after this run minus one
# Optional last decoder output (GPU packages): int64 [batch], the argmax of `logits` (first of equal maxima), so a
# greedy step copies one id to the host instead of a row of logits (docs/graph-contract.md "The greedy pick").
NEXT_TOKEN = "next_token"
# How the memory graphs hand the decoder each memory layer's cross-attention keys and values
# (docs/graph-contract.md): "float" in the graphs' float dtype, [B, Hkv, S, hd]; "int8" (CPU-quantized packages):
# keys transposed to [B, Hkv, hd, S] with one float32 scale per slot, values [B, Hkv, S, hd] with one per channel
# (symmetric), read by DynamicQuantizeMatMul - a quarter of the bytes every generated token reads from the STM;
# "expanded" (GPU packages): float, each K/V head repeated for the query heads that read it, [B, Hq, S, hd]
# (`ModelDims.cross_query_heads`): one query row a head, which CUDA's split-KV decode attention kernel needs.
MEMORY_KVS = ("float", "int8", "expanded")


TENSOR_DTYPES = (
    "float32",
    "float16",
    "int8",
    "int32",
    "int64",
)  # what graph I/O may be (the manifest schema's)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # one of TENSOR_DTYPES
    shape: tuple[int | str, ...]

    @property
    def conversation_shape(self) -> tuple[int, ...]:
        """The shape for one conversation: batch 1 (a per-conversation buffer has no other free dimension)."""
        return tuple(1 if d == "batch" else int(d) for d in self.shape)

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @staticmethod
    def from_json(d: dict) -> TensorSpec:
        return TensorSpec(str(d["name"]), str(d["dtype"]), tuple(d["shape"]))


@dataclass(frozen=True)
class ModelDims:
    """The numbers a runtime needs to allocate every buffer."""

    vocab_size: int
    dim: int
    decoder_layers: int  # all decoder layers with self-attention (memory-free ones included)
    memory_layers: int  # STM layers = decoder memory layers = encoder layers
    stm_slots: int
    head_dim: int
    self_kv_heads: int
    cross_kv_heads: int
    max_seq_len: int  # longest turn (prompt + answer) the decoder's position table covers
    # memory cross-attention query heads; recorded (non-zero) only where a memory K/V form needs it ("expanded")
    cross_query_heads: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        if not self.cross_query_heads:  # unrecorded: manifests stay readable by runtimes that predate it
            del d["cross_query_heads"]
        return d

    @staticmethod
    def from_json(d: dict) -> ModelDims:
        return ModelDims(**{k: int(d[k]) for k in ModelDims.__dataclass_fields__ if k in d})


def past_key(i: int) -> str:
    return f"past_key.{i}"


def past_value(i: int) -> str:
    return f"past_value.{i}"


def new_key(i: int) -> str:
    return f"new_key.{i}"


def new_value(i: int) -> str:
    return f"new_value.{i}"


def present_key(i: int) -> str:
    return f"present_key.{i}"


def present_value(i: int) -> str:
    return f"present_value.{i}"


def memory_key(i: int) -> str:
    return f"memory_key.{i}"


def memory_value(i: int) -> str:
    return f"memory_value.{i}"


def memory_key_scale(i: int) -> str:
    return f"memory_key_scale.{i}"


def memory_value_scale(i: int) -> str:
    return f"memory_value_scale.{i}"


def memory_kv_specs(d: ModelDims, fdt: str, memory_kv: str = "float") -> list[TensorSpec]:
    """The memory cross-attention K/V tensors (and, for "int8", their scales), layer by layer."""
    if memory_kv not in MEMORY_KVS:
        raise ValueError(f"unknown memory_kv {memory_kv!r}; expected one of {MEMORY_KVS}")
    h, s, hd = d.cross_kv_heads, d.stm_slots, d.head_dim
    if memory_kv == "expanded":
        if d.cross_query_heads < h or d.cross_query_heads % h:
            raise ValueError(
                f"memory_kv expanded needs cross_query_heads, a multiple of {h} (got {d.cross_query_heads})"
            )
        h = d.cross_query_heads
    out = []
    for i in range(d.memory_layers):
        if memory_kv == "int8":
            out += [
                TensorSpec(memory_key(i), "int8", ("batch", h, hd, s)),
                TensorSpec(memory_key_scale(i), "float32", (s,)),
                TensorSpec(memory_value(i), "int8", ("batch", h, s, hd)),
                TensorSpec(memory_value_scale(i), "float32", (hd,)),
            ]
        else:
            out += [
                TensorSpec(memory_key(i), fdt, ("batch", h, s, hd)),
                TensorSpec(memory_value(i), fdt, ("batch", h, s, hd)),
            ]
    return out


def graph_io(
    d: ModelDims,
    graph: str,
    float_dtype: str = "float32",
    kv_cache: str = "dynamic",
    memory_kv: str = "float",
    next_token: bool = False,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of one graph.

    decoder, `kv_cache="dynamic"`: the self-attention cache is sequence-major (`[past_seq, batch, kv_heads,
    head_dim]`) so that the cache of a turn is one preallocated buffer per layer: the runtime binds its first
    `past_seq` rows as `past_*` and the rows right after them as the `new_*` outputs, so the graph writes the
    new keys and values in place and nothing is copied or reallocated per step. Positions are
    `past_seq + arange(seq)`.
    decoder, `kv_cache="static"`: `past_*` and `present_*` are the same `[batch, kv_heads, max_seq_len,
    head_dim]` buffer (bind one memory to both); `seqlens_k` (int32 [batch]) says how many tokens the cache
    holds after this run, minus one; positions are `seqlens_k + 1 - seq + arange(seq)`.
    Only the last position's logits leave the graph. `memory_kv`: the memory K/V form (`MEMORY_KVS`) of the
    decoder, memory-update and memory-K/V graphs. `next_token`: the decoder also outputs the greedy pick
    (`NEXT_TOKEN`, last).
    """
    if next_token and graph != DECODER:
        raise ValueError(f"next_token is a decoder output, not one of {graph!r}")
    pick = [TensorSpec(NEXT_TOKEN, "int64", ("batch",))] if next_token else []
    if kv_cache not in KV_CACHES:
        raise ValueError(f"unknown kv_cache {kv_cache!r}; expected one of {KV_CACHES}")
    if graph == ENCODER and memory_kv != "float":
        raise ValueError("memory_kv applies to the graphs that carry the memory K/V, not the encoder")
    mkv = memory_kv_specs(d, float_dtype, memory_kv)
    f = float_dtype
    stm = TensorSpec("stm", f, (d.memory_layers, "batch", d.stm_slots, d.dim))
    encoded = TensorSpec("encoded", f, (d.memory_layers, "batch", "seq", d.dim))
    mask = TensorSpec("attention_mask", "int64", ("batch", "seq"))
    ids = TensorSpec("input_ids", "int64", ("batch", "seq"))
    if graph == DECODER and kv_cache == "static":
        cache = ("batch", d.self_kv_heads, d.max_seq_len, d.head_dim)
        ins = [ids, TensorSpec(SEQLENS, "int32", ("batch",))]
        outs = [TensorSpec("logits", f, ("batch", d.vocab_size))]
        for i in range(d.decoder_layers):
            ins += [TensorSpec(past_key(i), f, cache), TensorSpec(past_value(i), f, cache)]
            outs += [TensorSpec(present_key(i), f, cache), TensorSpec(present_value(i), f, cache)]
        return ins + mkv, outs + pick
    if graph == DECODER:
        kv_past = ("past_seq", "batch", d.self_kv_heads, d.head_dim)
        kv_new = ("seq", "batch", d.self_kv_heads, d.head_dim)
        ins = [ids]
        outs = [TensorSpec("logits", f, ("batch", d.vocab_size))]
        for i in range(d.decoder_layers):
            ins += [TensorSpec(past_key(i), f, kv_past), TensorSpec(past_value(i), f, kv_past)]
            outs += [TensorSpec(new_key(i), f, kv_new), TensorSpec(new_value(i), f, kv_new)]
        ins += mkv
        return ins, outs + pick
    if kv_cache != "dynamic":
        raise ValueError(f"kv_cache applies to the decoder only, not {graph!r}")
    if graph == ENCODER:
        return [ids, mask], [encoded]
    if graph == MEMORY_UPDATE:
        return [stm, encoded, mask], [TensorSpec("new_stm", f, stm.shape)] + mkv
    if graph == MEMORY_KV:
        return [stm], mkv
    raise ValueError(f"unknown graph {graph!r}; expected one of {GRAPH_NAMES}")


# --- the turn template ------------------------------------------------------------------------------------
# One turn is `[BOS][Q] query [A] answer [EOS]`; the decoder sees the prompt part, the encoder and memory update
# the whole interaction. A system prompt is `[BOS][internal] text [EOS]` (`[BOS] text [EOS]` without an
# internal token). Every component (runtime, exporter's torch chat, benchmarks, verify) builds turns from here.

PROMPT_OVERHEAD = 3  # [BOS] [Q] ... [A]
TURN_OVERHEAD = PROMPT_OVERHEAD + 2  # + at least one answer token + [EOS]


def turn_prompt(special: dict[str, int], query: list[int]) -> list[int]:
    """`[BOS][Q] query [A]`: what the decoder prefills."""
    return [special["bos"], special["query"], *query, special["answer"]]


def turn_interaction(
    special: dict[str, int], prompt: list[int], answer: list[int], ended: bool = True
) -> list[int]:
    """What the encoder and memory update read once the turn is over: `prompt answer [EOS]` when the model
    ended its answer, `prompt answer` when the answer was cut at the length limit (as rxlm's `interact()`
    writes it: the memory sees exactly the tokens that were generated)."""
    return [*prompt, *answer, special["eos"]] if ended else [*prompt, *answer]


def system_prompt_head(special: dict[str, int]) -> list[int]:
    return [special["bos"], special["internal"]] if "internal" in special else [special["bos"]]


def system_interaction(special: dict[str, int], text_ids: list[int]) -> list[int]:
    """`[BOS][internal] text [EOS]`: a system prompt written into the memory."""
    return [*system_prompt_head(special), *text_ids, special["eos"]]


def max_query_tokens(max_seq_len: int) -> int:
    """The longest query one turn takes: the template and at least one answer token must fit too."""
    return max_seq_len - TURN_OVERHEAD


def max_system_tokens(special: dict[str, int], max_seq_len: int) -> int:
    return max_seq_len - len(system_prompt_head(special)) - 1


def answer_budget(max_new_tokens: int, prompt_len: int, max_seq_len: int) -> int:
    """How many answer tokens fit after a prompt: [EOS] must still fit in the interaction."""
    return min(max_new_tokens, max_seq_len - prompt_len - 1)
