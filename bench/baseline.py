"""The stateless baseline for `rxt-edge bench`: an RxT decoder without memory, re-reading the whole chat each turn.

RxT is compared against a same-size decoder-only chat model: the RxT model's own decoder blocks (same dims,
layers, heads, feed-forward, vocabulary and weights) with the memory cross-attention removed. It has no STM, so
every turn it re-reads the whole conversation (every earlier query and answer, then the new query), as a chat LLM
does. It is exported to ONNX like the RxT decoder and run through the same onnxruntime machinery (IOBinding, one
preallocated sequence-major KV buffer per layer written in place: `rxt_edge.decoding.KVCache`), so the two
latency curves differ only by what each model has to read. The graph follows the decoder contract (rxt_edge/contract.py) with
zero memory layers: `input_ids, past_key.i, past_value.i -> logits, new_key.i, new_value.i`.

The export half needs torch (imported inside the functions); `StatelessChat`, the runner, does not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
from rxt_edge.runtimes import providers

from rxt_edge import contract
from rxt_edge.contract import ModelDims
from rxt_edge.decoding import KVCache
from rxt_edge.engine import DeviceBuffers
from rxt_edge.package_writer import PackageWriter
from rxt_edge.sampling import SamplingConfig, sample_next

if TYPE_CHECKING:
    from rxt_edge.export.config import DecoderConfig, RxTConfig
    from rxt_edge.export.model import RxTModel

GRAPH_FILE = "baseline_decoder.onnx"
META_FILE = "baseline.json"
GREEDY = SamplingConfig(temperature=0.0)


# ------------------------------------------------------------------------------------------- export (torch)
def baseline_decoder_config(cfg: RxTConfig) -> DecoderConfig:
    """Every decoder layer of `cfg` (memory-free ones included) with its memory cross-attention removed."""
    from rxt_edge.export.config import DecoderConfig

    layers = [replace(b, cross_attn=None) for b in cfg.decoder.all_layers]
    return DecoderConfig(
        memory_layers=layers,
        norm=cfg.decoder.norm,
        head_norm=cfg.decoder.head_norm,
        rope_base=cfg.decoder.rope_base,
        max_seq_len=cfg.decoder.max_seq_len,
    )


def baseline_dims(model: RxTModel) -> ModelDims:
    """The RxT decoder's dims with no memory: the contract then declares no memory_key/value inputs."""
    from rxt_edge.export.graphs import model_dims

    return replace(model_dims(model), memory_layers=0, stm_slots=0, cross_kv_heads=0)


def baseline_module(model: RxTModel):
    """A torch module `(input_ids, past_key.0, past_value.0, ...) -> (logits, new_key.0, new_value.0, ...)`
    holding the RxT decoder's weights (all but the cross-attention)."""
    import torch
    from rxt_edge.export.model import Decoder
    from torch import nn

    class BaselineGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            cfg = model.cfg
            embed = nn.Embedding(cfg.vocab_size, cfg.dim)
            self.decoder = Decoder(baseline_decoder_config(cfg), cfg.dim, cfg.vocab_size, embed)
            own = self.decoder.state_dict()
            src = {k: v for k, v in model.decoder.state_dict().items() if k in own}
            missing = sorted(set(own) - set(src))
            if missing:
                raise RuntimeError(f"baseline decoder: the RxT decoder has no weight for {missing[:5]}")
            self.decoder.load_state_dict(src, strict=True)
            self.decoder.to(model.decoder.embed.weight.dtype)

        def forward(self, input_ids: torch.Tensor, *state: torch.Tensor):
            logits, nk, nv = self.decoder(input_ids, list(state[0::2]), list(state[1::2]), [], [])
            return (logits, *[t for pair in zip(nk, nv, strict=True) for t in pair])

    return BaselineGraph().eval()


def unique_params(module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Exporter chatter (warnings about the exporter's own internals) is no news to a bench user."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_baseline(model: RxTModel, directory: str | Path) -> Path:
    """Write `baseline_decoder.onnx` and `baseline.json` (dims, parameters, [EOS] id) into the new `directory`.

    Through the package writer (staged beside it, swapped in whole): an interrupted export leaves no directory,
    so a `baseline.json` always comes with its graph. Not a model package (one graph, no manifest), so it is
    published as staged and never replaces an existing directory."""
    import torch
    from rxt_edge.export.graphs import example_inputs
    from rxt_edge.export.onnx_export import DEFAULT_OPSET, EXTERNAL_DATA_BYTES, _dynamic_shapes, check_graph

    dims = baseline_dims(model)
    wrapper = baseline_module(model)
    ins, outs = contract.graph_io(dims, contract.DECODER)
    args = example_inputs(dims, contract.DECODER, model.decoder.embed.weight.dtype)
    shapes = _dynamic_shapes(ins)
    n_bytes = sum(p.numel() * p.element_size() for p in wrapper.parameters())
    with PackageWriter(directory) as writer:
        path = writer.path(GRAPH_FILE)
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            open(os.devnull, "w") as devnull,
            contextlib.redirect_stdout(devnull),
            _quiet_loggers("torch.onnx", "onnx_ir"),  # onnx_ir: "Attribute type is ambiguous" (empty INTS)
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper,
                args,
                dynamic_shapes=(shapes[0], tuple(shapes[1:])),  # forward(input_ids, *state)
                input_names=[s.name for s in ins],
                output_names=[s.name for s in outs],
                opset_version=DEFAULT_OPSET,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        program.save(str(path), external_data=n_bytes > EXTERNAL_DATA_BYTES)
        check_graph(path)
        meta = {
            "dims": dims.to_json(),
            "params": unique_params(wrapper),
            "eos": int(model.cfg.special_tokens["eos"]),
        }
        writer.path(META_FILE).write_text(json.dumps(meta, indent=2))
        return writer.publish() / GRAPH_FILE


# ------------------------------------------------------------------------------------------- runner (no torch)
@dataclass
class BaselineTurn:
    context_tokens: int  # tokens read before the first answer token (history + the new prompt)
    prefilled_tokens: int  # of which actually run through the decoder this turn (all of them when re-reading)
    answer: list[int]
    time_to_first_token_s: float
    total_s: float


class StatelessChat:
    """A chat with the baseline graph: each turn re-reads the history, then decodes a fixed-length answer.

    `reuse_cache=False` (the stateless chat LLM of the RxT paper) prefills the whole conversation every turn;
    `reuse_cache=True` keeps the KV cache across turns (prefix caching), so only the new tokens are prefilled but
    attention still reads the whole history. Prefill runs in chunks of `prefill_chunk` tokens through the same
    in-place cache, which bounds the attention score buffers without changing the work done.
    """

    def __init__(
        self,
        directory: str | Path,
        max_context: int,
        provider: str = "cpu",
        threads: int | None = None,
        reuse_cache: bool = False,
        prefill_chunk: int = 512,
    ):
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        self.dims = ModelDims.from_json(meta["dims"])
        self.params = int(meta["params"])
        self.eos = int(meta["eos"])
        plist, popts = providers.resolve_provider(provider)
        opts = providers.make_session_options(provider, threads=threads)
        self.session = ort.InferenceSession(
            str(directory / GRAPH_FILE), opts, providers=plist, provider_options=popts
        )
        if provider != "cpu":
            providers.check_session_provider(self.session, provider)
        device, device_id = providers.device_for(provider)
        self.buffers = DeviceBuffers(device, device_id, np.float32)
        d = self.dims
        self._cache = KVCache(self.buffers, d.decoder_layers, max_context, d.self_kv_heads, d.head_dim)
        self.max_context = max_context
        self.reuse_cache = reuse_cache
        self.prefill_chunk = max(2, int(prefill_chunk))
        self._logits = np.zeros((1, d.vocab_size), np.float32)
        self._ids = np.zeros((1, max(self.prefill_chunk, 2)), np.int64)
        self._binding = self.session.io_binding()
        self._binding.bind_output(
            "logits", "cpu", 0, np.float32, list(self._logits.shape), self._logits.ctypes.data
        )
        self.history: list[int] = []  # every token of the conversation so far
        self._cached = 0  # leading history tokens whose K/V are in the cache

    def _step(self, tokens: list[int], past: int) -> np.ndarray:
        n = len(tokens)
        self._ids[0, :n] = tokens
        b = self._binding
        b.bind_input("input_ids", "cpu", 0, np.int64, [1, n], self._ids.ctypes.data)
        self._cache.bind(b, past, n)  # the runtime's own in-place cache binding
        self.session.run_with_iobinding(b)
        return self._logits[0]

    def _next(self, logits: np.ndarray, answer: list[int]) -> int:
        logits[self.eos] = -np.inf  # fixed-length answers: [EOS] is never chosen
        return sample_next(logits, GREEDY, None, answer)

    def turn(self, prompt: list[int], answer_tokens: int) -> BaselineTurn:
        """Append `prompt` to the conversation and answer with exactly `answer_tokens` tokens (greedy)."""
        started = time.perf_counter()
        if not self.reuse_cache:
            self._cached = 0
        context = self.history + list(prompt)
        if len(context) + answer_tokens > self.max_context:
            raise ValueError(
                f"the conversation needs {len(context) + answer_tokens} tokens; max_context is {self.max_context}"
            )
        todo = context[self._cached :]
        pos = self._cached
        logits = None
        for i in range(0, len(todo), self.prefill_chunk):
            chunk = todo[i : i + self.prefill_chunk]
            logits = self._step(chunk, pos)
            pos += len(chunk)
        answer = [self._next(logits, [])]
        ttft = time.perf_counter() - started
        while len(answer) < answer_tokens:
            logits = self._step([answer[-1]], pos)
            pos += 1
            answer.append(self._next(logits, answer))
        total = time.perf_counter() - started
        self._cached = pos  # the last answer token was sampled but never fed
        self.history = context + answer + [self.eos]
        return BaselineTurn(len(context), len(todo), answer, ttft, total)
