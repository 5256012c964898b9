"""The onnxruntime-genai peer: where rxt-edge stands against the generic runtime a user would pick instead.

For an RxT configuration, the peer is a random-weight Hugging Face `LlamaForCausalLM` with the same decoder
dims (hidden, layers, self-attention query and K/V heads, head_dim, SwiGLU width, vocabulary, max_seq_len),
converted by onnxruntime-genai's own model builder with its defaults for the precision and provider, and timed
with `onnxruntime_genai` on the bench's protocol: the same 35-token prompts, greedy, fixed-length answers (no
[EOS] stop), decode ms/token = (total - time to first token) / (n - 1), median over turns after a warm-up.
It is not the same model: RxT's decoder also runs memory cross-attention (and has biases), so it does a little
more work per token; configurations with no Llama shape (MoE, reverse SQA, gated attention) get no peer.

Built peers are cached under `workdir/<dims key>/<precision>-<provider>` (rebuilt when genai's version
changes). The build runs in one child process (`python -m rxt_edge.bench.peer`: torch, transformers and the
builder), the timing in a torch-free one (job `genai_turns` of `rxt_edge.bench.child`). This module imports
neither torch nor genai at import time.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rxt_edge import contract

from .options import WARMUP_TURN, BenchError, query_ids

STAMP = "peer.json"
BUILD_SEED = 0
# precisions of a peer per provider: the builder's valid combinations for cpu and cuda, less fp32 on cuda
# (seen on the lent H200 with genai 0.18: its fp32 CUDA model fails to load, "Graph output present.0.key does
# not exist"; fp16 loads)
BUILDER_PRECISIONS = {"cpu": ("fp32", "int8", "int4"), "cuda": ("fp16", "int8", "int4")}
REQUIRED = ("onnxruntime_genai", "transformers", "torch", "onnx_ir", "onnx")  # all but the first: its builder


def genai_precision(precision: str) -> str | None:
    """A package precision or `rxt-edge quantize` scheme -> genai's nearest precision (int8-* -> int8, ...)."""
    if precision in ("fp32", "fp16"):
        return precision
    for bits in ("int8", "int4"):
        if precision == bits or precision.startswith(bits + "-"):
            return bits
    return None


@dataclass(frozen=True)
class PeerDims:
    """The decoder dims a Llama shares with an RxT decoder."""

    hidden: int
    layers: int
    q_heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_seq_len: int
    rope_base: float

    @property
    def key(self) -> str:
        """The cache folder of these dims (precision and provider are one level below)."""
        return (
            f"llama-d{self.hidden}-l{self.layers}-q{self.q_heads}x{self.head_dim}-kv{self.kv_heads}"
            f"-ffn{self.intermediate}-v{self.vocab}-ctx{self.max_seq_len}-rope{self.rope_base:g}"
        )

    def llama_config(self, special: dict[str, int]) -> dict[str, Any]:
        """`transformers.LlamaConfig` keyword arguments (head_dim explicit: SQA's q_heads x head_dim < hidden)."""
        return {
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.q_heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate,
            "max_position_embeddings": self.max_seq_len,
            "rope_theta": self.rope_base,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": special.get("bos"),
            "eos_token_id": special.get("eos"),
            "pad_token_id": special.get("pad"),
        }


def peer_dims(cfg) -> tuple[PeerDims | None, str | None]:
    """The Llama dims of an `RxTConfig`'s decoder, or (None, why) where no Llama has its shape."""
    layers = cfg.decoder.all_layers
    why = []
    if any(b.ffn.is_moe for b in layers):
        why.append("a Mixture-of-Experts feed-forward")
    if any(b.self_attn.q_heads < b.self_attn.kv_heads for b in layers):
        why.append("reverse SQA (fewer query than K/V heads)")
    if any(b.self_attn.gated for b in layers):
        why.append("gated self-attention")
    if any(not b.ffn.gated or b.ffn.activation not in ("silu", "swish") for b in layers if not b.ffn.is_moe):
        why.append("a feed-forward that is not SwiGLU")
    if cfg.decoder.norm != "rms":
        why.append("LayerNorm (Llama has RMSNorm)")
    shapes = {
        (b.self_attn.q_heads, b.self_attn.kv_heads, b.self_attn.head_dim, b.ffn.hidden_dim) for b in layers
    }
    if len(shapes) > 1:
        why.append("layers of different shapes")
    if why:
        return None, "the decoder has " + ", ".join(why) + ": no same-dims Llama to compare with"
    (q, kv, hd, ffn) = shapes.pop()
    return PeerDims(
        cfg.dim, len(layers), q, kv, hd, ffn, cfg.vocab_size, cfg.decoder.max_seq_len, cfg.decoder.rope_base
    ), None


def peer_unavailable() -> str | None:
    """Why no peer can be built or run here (a module missing), or None."""
    for name in REQUIRED:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{name} is not importable (pip install 'rxt-edge[export,peer]')"
    return None


def _version(module: str) -> str | None:
    """`version (distribution)` of the installed distribution that provides the importable `module`: the one
    Python would import, even where several provide it (onnxruntime and onnxruntime-gpu, genai and genai-cuda)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    site = str(Path(spec.origin).parent.parent)
    for dist in importlib.metadata.distributions(path=[site]):
        if any(f.parts[:1] == (module,) for f in dist.files or ()):
            return f"{dist.version} ({dist.metadata['Name']})"
    return None


def versions() -> dict[str, str | None]:
    """Versions of what builds and runs the peer."""
    return {m: _version(m) for m in ("onnxruntime_genai", "onnxruntime", "transformers")}


def peer_plan(cfg, precisions: list[str], provider: str) -> tuple[PeerDims | None, dict[str, str], list[str]]:
    """What can be compared: the dims, {our precision: genai precision} of those with a peer on `provider`,
    and notes saying why the others (or all) have none."""
    reason = peer_unavailable() or (None if provider in BUILDER_PRECISIONS else f"no peer on {provider!r}")
    if reason is None:
        dims, reason = peer_dims(cfg)
    if reason is not None:
        return None, {}, [f"no onnxruntime-genai peer row: {reason}"]
    mapping, notes = {}, []
    for p in precisions:
        g = genai_precision(p)
        if g in BUILDER_PRECISIONS[provider]:
            mapping[p] = g
        else:
            have = ", ".join(BUILDER_PRECISIONS[provider])
            notes.append(f"no onnxruntime-genai peer for {p} on {provider} (compared there: {have})")
    return dims, mapping, notes


def peer_settings(threads: int, provider: str) -> dict[str, Any]:
    """How peers are built and run (recorded with every peer row)."""
    return {
        "model": "random-weight transformers LlamaForCausalLM (seed 0), untied embeddings, no biases",
        "builder": "onnxruntime_genai.models.builder defaults for the precision and provider "
        "(int8/int4: MatMulNBits, its block size and accuracy level; see each row's graph)",
        "provider": provider,
        "session_options": session_overlay(threads)["model"]["decoder"]["session_options"],
        "search": "greedy; min_length = max_length = prompt + answer tokens (no [EOS] stop)",
    }


def peer_row(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """A speed row of a timed peer, with what it is (versions, builder command, the graph's ops)."""
    from .stats import speed_from_turns

    stamp = read_stamp(path)
    genai = (stamp["versions"]["onnxruntime_genai"] or "?").split(" ")[0]
    return {
        "engine": f"onnxruntime-genai {genai} (same-dims Llama, {stamp['precision']}, {stamp['provider']})",
        "precision": stamp["precision"],
        **speed_from_turns(result["turns"]),
        "answer_tokens": [t["answer_tokens"] for t in result["turns"]],
        "peak_rss_mb": result["peak_rss_mb"],
        "rss_after_load_mb": result["rss_after_load_mb"],
        "device_memory": result["device_memory"],
        "torch_imported": result["torch_imported"],
        "load_average_after": result.get("load_average_after"),
        "builder_command": stamp["builder_command"],
        "graph": stamp["graph"],
    }


# ------------------------------------------------------------------------------------------------ building


def peer_dir(root: Path, dims: PeerDims, precision: str, provider: str) -> Path:
    return Path(root) / dims.key / f"{precision}-{provider}"


def _cached(path: Path, genai: str | None) -> dict[str, Any] | None:
    try:
        stamp = json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if stamp.get("versions", {}).get("onnxruntime_genai") == genai else None


def build_peers(
    dims: PeerDims,
    precisions: list[str],
    provider: str,
    root: Path,
    special: dict[str, int],
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """The peer of each precision, built where not cached (all missing ones in one child process)."""
    for p in precisions:
        if p not in BUILDER_PRECISIONS.get(provider, ()):
            have = ", ".join(BUILDER_PRECISIONS.get(provider, ()))
            raise BenchError(f"no onnxruntime-genai peer in {p} on {provider!r} (there: {have or 'none'})")
    genai = versions()["onnxruntime_genai"]
    out = {p: peer_dir(root, dims, p, provider) for p in precisions}
    missing = [p for p in precisions if _cached(out[p], genai) is None]
    if missing:
        if progress:
            progress(f"building the onnxruntime-genai peer ({', '.join(missing)}, {provider}; {dims.key})")
        base = Path(root) / dims.key
        base.mkdir(parents=True, exist_ok=True)
        job = {
            "dims": asdict(dims),
            "special": special,
            "provider": provider,
            "hf_dir": str(base / "hf"),
            "cache_dir": str(base / "builder-cache"),
            "builds": [[p, str(out[p])] for p in missing],
        }
        log = base / "build.log"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        with log.open("w") as f:
            rc = subprocess.run(
                [sys.executable, "-m", "rxt_edge.bench.peer"],
                input=json.dumps(job),
                text=True,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
            ).returncode
        bad = [p for p in missing if _cached(out[p], genai) is None]
        if rc != 0 or bad:
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchError(
                f"building the onnxruntime-genai peer failed (exit code {rc}, log {log}):\n{tail}"
            )
    return out


def read_stamp(path: Path) -> dict[str, Any]:
    """What a built peer records: dims, precision, provider, versions, builder options and its graph's ops."""
    return json.loads((Path(path) / STAMP).read_text())


def weight_bytes_per_token(path: Path) -> dict[str, int]:
    """Weight bytes one decode step of a built peer reads (bench/active_weights.py's rules: the embedding's
    row, everything else whole), from its genai_config.json's decoder file, without its external data."""
    from .active_weights import decoder_file_weight_bytes

    config = json.loads((Path(path) / "genai_config.json").read_text())["model"]
    return decoder_file_weight_bytes(Path(path) / config["decoder"]["filename"])


def graph_summary(model_path: Path) -> dict[str, Any]:
    """Op types of a built decoder and its MatMulNBits settings (what genai's builder chose by default)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    ops: dict[str, int] = {}
    nbits: dict[str, set] = {"bits": set(), "block_size": set(), "accuracy_level": set()}
    zero_points = False
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for k in nbits:
                nbits[k].add(attrs.get(k, 0 if k == "accuracy_level" else None))
            zero_points |= len(node.input) > 3 and bool(node.input[3])
    head = next((n.op_type for n in model.graph.node if n.name.startswith("/lm_head/")), None)
    out: dict[str, Any] = {"op_types": dict(sorted(ops.items())), "lm_head": head}
    if ops.get("MatMulNBits"):
        out["matmul_nbits"] = {k: sorted(v) for k, v in nbits.items()} | {"symmetric": not zero_points}
    return out


def _save_llama(dims: PeerDims, special: dict[str, int], hf_dir: Path) -> None:
    """A random-weight Llama and a tokenizer the builder can load (ids are fed directly; it is never used)."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if hf_dir.is_dir():
        return
    staging = hf_dir.with_name(f".{hf_dir.name}.saving")  # renamed into place whole: never half a model
    shutil.rmtree(staging, ignore_errors=True)
    torch.manual_seed(BUILD_SEED)
    LlamaForCausalLM(LlamaConfig(**dims.llama_config(special))).eval().save_pretrained(staging)
    names = {"<pad>": special.get("pad", 0), "<s>": special.get("bos", 1), "</s>": special.get("eos", 2)}
    vocab = {**{f"t{i}": i for i in range(8, 16) if i not in names.values()}, **names}
    unk = next(iter(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=unk, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    ).save_pretrained(staging)
    os.replace(staging, hf_dir)


def _build_main(job: dict[str, Any]) -> None:
    """Child entry: save the Llama once, then run genai's builder (its Python entry point) per precision."""
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    dims = PeerDims(**job["dims"])
    hf_dir, provider = Path(job["hf_dir"]), job["provider"]
    _save_llama(dims, job["special"], hf_dir)
    for precision, dest in job["builds"]:
        dest = Path(dest)
        staging = dest.with_name(f".{dest.name}.building")
        shutil.rmtree(staging, ignore_errors=True)
        t0 = time.perf_counter()
        # the builder's defaults for the precision and provider: no extra options but disabling hub auth
        extra = ["hf_token=false"]
        kw = parse_extra_options(
            None, str(hf_dir), str(staging), precision, provider, job["cache_dir"], extra
        )
        create_model(None, str(hf_dir), str(staging), precision, provider, job["cache_dir"], **kw)
        config = json.loads((staging / "genai_config.json").read_text())["model"]
        got = config["decoder"]
        want = {"hidden_size": dims.hidden, "num_hidden_layers": dims.layers, "head_size": dims.head_dim,
                "num_attention_heads": dims.q_heads, "num_key_value_heads": dims.kv_heads}  # fmt: skip
        wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        if wrong or config.get("vocab_size") != dims.vocab:
            raise SystemExit(f"the builder's genai_config.json disagrees with the requested dims: {wrong}")
        stamp = {
            "dims": asdict(dims),
            "precision": precision,
            "provider": provider,
            "versions": versions(),
            "builder_command": f"python -m onnxruntime_genai.models.builder -i HF_DIR -o OUT -p {precision} "
            f"-e {provider} --extra_options {' '.join(extra)}",
            "build_s": round(time.perf_counter() - t0, 2),
            "graph": graph_summary(staging / config["decoder"]["filename"]),
        }
        (staging / STAMP).write_text(json.dumps(stamp, indent=2))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(staging, dest)
    shutil.rmtree(job["cache_dir"], ignore_errors=True)  # the builder's scratch files


# ------------------------------------------------------------------------------------------------- timing


def genai_job(
    path: Path,
    *,
    provider: str,
    threads: int,
    turns: int,
    query_tokens: int,
    answer_tokens: int,
    special: dict[str, int],
    seed: int = 0,
    warmup: int = 1,
) -> dict[str, Any]:
    """The child job (`rxt_edge.bench.child`, kind `genai_turns`) that times one built peer."""
    return {
        "kind": "genai_turns",
        "peer_dir": str(path),
        "provider": provider,
        "threads": threads,
        "turns": turns,
        "query_tokens": query_tokens,
        "answer_tokens": answer_tokens,
        "special": special,
        "seed": seed,
        "warmup": warmup,
    }


def session_overlay(threads: int) -> dict[str, Any]:
    """genai_config.json session options of a timed run (applied with `og.Config.overlay`, files untouched)."""
    return {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}


def genai_turns(job: dict[str, Any]) -> dict[str, Any]:
    """Turns of the peer on the bench's prompts (`[BOS][Q] query [A]`), greedy, exactly `answer_tokens` each:
    min_length = max_length keeps genai from choosing [EOS] (its stop), so no answer ends early."""
    import onnxruntime_genai as og

    from .machine import peak_rss_mb, run_record

    cfg = og.Config(job["peer_dir"])
    cfg.overlay(json.dumps(session_overlay(job["threads"])))
    cfg.clear_providers()
    if job["provider"] == "cuda":
        cfg.append_provider("cuda")
    elif job["provider"] != "cpu":
        raise BenchError(f"the peer runs on cpu or cuda, not {job['provider']!r}")
    model = og.Model(cfg)
    rss_loaded = peak_rss_mb()
    vocab = json.loads((Path(job["peer_dir"]) / "genai_config.json").read_text())["model"]["vocab_size"]
    q, a, special = job["query_tokens"], job["answer_tokens"], job["special"]

    def turn(t: int) -> dict[str, Any]:
        prompt = contract.turn_prompt(special, query_ids(t, q, vocab, job["seed"]))
        params = og.GeneratorParams(model)
        n = len(prompt) + a
        params.set_search_options(do_sample=False, max_length=n, min_length=n)
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(prompt)
        gen.generate_next_token()
        answer = [int(gen.get_next_tokens()[0])]
        t1 = time.perf_counter()
        while len(answer) < a:
            gen.generate_next_token()
            answer.append(int(gen.get_next_tokens()[0]))
        t2 = time.perf_counter()
        return {
            "prompt_tokens": len(prompt),
            "answer_tokens": len(answer),
            "first_token": answer[0],
            "ttft_s": t1 - t0,
            "total_s": t2 - t0,
            "update_s": None,  # no memory: a Llama re-reads or caches, it does not update
        }

    for w in range(job.get("warmup", 1)):
        turn(WARMUP_TURN + w)
    turns = []
    for t in range(job["turns"]):
        turns.append(turn(t))
        print(f"P {t + 1} {job['turns']}", flush=True)
    return run_record(turns, rss_loaded, job["provider"])


if __name__ == "__main__":  # the build child: one JSON job on stdin
    _build_main(json.loads(sys.stdin.read()))
