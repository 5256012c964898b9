"""An independent minimal RxT runtime, written from docs/graph-contract.md alone, for the conformance test.

It imports nothing from `rxt_edge`: plain json, hashlib, struct, numpy, onnxruntime and the tokenizer library the
manifest names. Every section of the contract it relies on is cited (`contract: ...`), so when the Python runtime
and this file disagree, one of them (or the doc) drifted. Deliberately simple: one conversation, greedy decoding,
numpy buffers; `inplace=True` binds the decoder's cache outputs over views of preallocated arrays (the pattern
for bindings without an IOBinding-like API), `inplace=False` runs plainly and copies the new rows in.
"""

from __future__ import annotations

import ast
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort

FORMAT, MAX_FORMAT_VERSION = "rxt-edge-package", 6
GRAPHS = ("decoder", "encoder", "memory_update", "memory_kv")


class ConformanceError(ValueError):
    """What the contract says a runtime must refuse."""


def read_npy(path: Path) -> np.ndarray:
    """contract 'initial_stm.npy': NPY version 1.0, little-endian float, C order, no pickle."""
    data = path.read_bytes()
    if data[:6] != b"\x93NUMPY" or data[6:8] != b"\x01\x00":
        raise ConformanceError(f"{path}: not an NPY 1.0 file")
    (header_len,) = struct.unpack_from("<H", data, 8)
    header = ast.literal_eval(data[10 : 10 + header_len].decode("latin1"))
    if header["fortran_order"] or header["descr"] not in ("<f4", "<f2"):
        raise ConformanceError(f"{path}: unexpected NPY header {header}")
    return np.frombuffer(data, np.dtype(header["descr"]), offset=10 + header_len).reshape(header["shape"])


def canonical_fingerprint(manifest: dict) -> str:
    """contract 'model fingerprint': sha256 of the canonical JSON (sorted keys, ',' ':' separators, ASCII)."""
    canon = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode("ascii")).hexdigest()


# contract 'snapshot': magic, u32 version, u32 header length, u64 payload length, JSON header, payload, sha256
SNAP_MAGIC, SNAP_PREFIX = b"RXTSNAP\0", struct.Struct("<8sIIQ")


def write_snapshot(path: Path, stm: np.ndarray, fingerprint: str, metadata: dict) -> None:
    header = json.dumps(
        {"fingerprint": fingerprint, "dtype": stm.dtype.name, "shape": list(stm.shape), "metadata": metadata},
        separators=(",", ":"),
    ).encode("utf-8")
    payload = np.ascontiguousarray(stm, stm.dtype.newbyteorder("<")).tobytes()
    body = SNAP_PREFIX.pack(SNAP_MAGIC, 1, len(header), len(payload)) + header + payload
    path.write_bytes(body + hashlib.sha256(body).digest())


def read_snapshot(path: Path, fingerprint: str) -> tuple[np.ndarray, dict]:
    data = path.read_bytes()
    magic, version, header_len, payload_len = SNAP_PREFIX.unpack_from(data)
    if magic != SNAP_MAGIC or version != 1 or len(data) != SNAP_PREFIX.size + header_len + payload_len + 32:
        raise ConformanceError(f"{path}: not a version-1 snapshot")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ConformanceError(f"{path}: checksum mismatch")
    header = json.loads(data[SNAP_PREFIX.size : SNAP_PREFIX.size + header_len])
    if header["fingerprint"] != fingerprint:
        raise ConformanceError(f"{path}: snapshot of another model")
    start = SNAP_PREFIX.size + header_len
    stm = np.frombuffer(data[start : start + payload_len], np.dtype(header["dtype"]).newbyteorder("<"))
    return stm.reshape(header["shape"]).astype(header["dtype"]), header["metadata"]


def greedy(logits: np.ndarray) -> int:
    """contract 'greedy': the first index of the maximum over the logits as float32 (numpy argmax); NaN refused."""
    x = np.asarray(logits).astype(np.float32)
    if np.isnan(x).any():
        raise ConformanceError("logits contain NaN")
    return int(np.argmax(x))


class Tokenizer:
    """contract 'tokenizer': the library the manifest names; user text never yields special ids."""

    def __init__(self, kind: str, path: Path):
        self.kind = kind
        if kind == "sentencepiece":
            import sentencepiece

            self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        elif kind == "tokenizers":
            from tokenizers import Tokenizer as HFTokenizer

            self._tk = HFTokenizer.from_file(str(path))
            self._tk.encode_special_tokens = True
        else:
            raise ConformanceError(f"unknown tokenizer kind {kind!r}")

    def encode(self, text: str) -> list[int]:
        if self.kind == "sentencepiece":
            return self._sp.encode(text, out_type=int, add_bos=False, add_eos=False)
        return self._tk.encode(text, add_special_tokens=False).ids


class MinimalRuntime:
    """One conversation over one package, from the contract."""

    def __init__(self, package_dir: str | Path, inplace: bool = True, threads: int = 1):
        self.dir = Path(package_dir)
        self.manifest = json.loads((self.dir / "manifest.json").read_text(encoding="utf-8"))
        m = self.manifest
        if m.get("format") != FORMAT or not 1 <= m.get("format_version", 0) <= MAX_FORMAT_VERSION:
            raise ConformanceError("not a package this runtime reads")
        self._check_files()
        self._check_requires()
        self.dims, self.special = m["model"], m["special_tokens"]
        self.tokenizer = Tokenizer(m["tokenizer"]["kind"], self.dir / m["tokenizer"]["file"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.sessions = {
            g: ort.InferenceSession(
                str(self.dir / m["graphs"][g]["file"]), opts, providers=["CPUExecutionProvider"]
            )
            for g in GRAPHS
        }
        for g in GRAPHS:  # contract 'graphs.<name>.inputs/outputs': names in graph order
            got = [i.name for i in self.sessions[g].get_inputs()] + [
                o.name for o in self.sessions[g].get_outputs()
            ]
            want = [t["name"] for t in m["graphs"][g]["inputs"] + m["graphs"][g]["outputs"]]
            if got != want:
                raise ConformanceError(f"{g}: graph I/O {got} != manifest {want}")
        decoder = m["graphs"]["decoder"]
        (past_key,) = [t for t in decoder["inputs"] if t["name"] == "past_key.0"]
        self.float = np.dtype(past_key["dtype"])  # contract: the package float is past_key.0's
        self.static = decoder.get("kv_cache", "dynamic") == "static"  # contract 'decoder variants'
        self.takes_system_prompt = m.get("system_prompt", True)
        self.inplace = inplace
        self.fingerprint = canonical_fingerprint(m)
        d = self.dims
        if self.static:  # one [B, Hs, T_max, hd] buffer per layer, updated in place by the graph
            self.kv_shape = (1, d["self_kv_heads"], d["max_seq_len"], d["head_dim"])
        else:
            self.kv_shape = (d["max_seq_len"], 1, d["self_kv_heads"], d["head_dim"])
        self.cache = [(np.zeros(self.kv_shape, self.float), np.zeros(self.kv_shape, self.float))
                      for _ in range(d["decoder_layers"])]  # fmt: skip
        self.initial_stm = read_npy(self.dir / m["initial_stm"]["file"]).astype(self.float)
        self.set_stm(self.initial_stm)

    def _check_files(self) -> None:
        m, refs = self.manifest, [self.manifest["initial_stm"]]
        refs += [m["tokenizer"]] if "sha256" in m["tokenizer"] else []
        for g in m["graphs"].values():
            refs += [g, *g.get("external_data", [])]
        for ref in refs:
            if hashlib.sha256((self.dir / ref["file"]).read_bytes()).hexdigest() != ref["sha256"]:
                raise ConformanceError(f"{ref['file']}: sha256 mismatch")

    def _check_requires(self) -> None:
        """contract 'requires': refuse early a package needing an operator domain onnxruntime lacks."""
        from onnxruntime.capi import onnxruntime_pybind11_state as capi

        known = {k.domain for k in capi.get_all_operator_schema()} | {"", "ai.onnx"}
        for domain in self.manifest.get("requires", {}).get("ops", {}):
            if domain not in known:
                raise ConformanceError(f"operator domain {domain!r} is not available")

    # --- memory ---------------------------------------------------------------------------------------
    def _memory_names(self) -> list[str]:
        """contract 'memory layers': memory_key.i / memory_value.i (and, `memory_kv` "int8", their scales): the
        memory_kv graph's outputs, matched by name across graphs."""
        return [t["name"] for t in self.manifest["graphs"]["memory_kv"]["outputs"]]

    def set_stm(self, stm: np.ndarray) -> None:
        """contract 'memory_kv': project an STM that did not come out of memory_update."""
        self.stm = np.array(stm, self.float)
        outs = self.sessions["memory_kv"].run(self._memory_names(), {"stm": self.stm})
        self.memory_kv = dict(zip(self._memory_names(), outs, strict=True))

    def _update(self, interaction: list[int]) -> None:
        """contract 'one turn' step 5: encoder (mask all ones), then memory_update on the current STM."""
        ids = np.array([interaction], np.int64)
        mask = np.ones_like(ids)
        (encoded,) = self.sessions["encoder"].run(["encoded"], {"input_ids": ids, "attention_mask": mask})
        names = ["new_stm", *self._memory_names()]
        outs = self.sessions["memory_update"].run(
            names, {"stm": self.stm, "encoded": encoded, "attention_mask": mask}
        )
        self.stm = outs[0]
        self.memory_kv = dict(zip(self._memory_names(), outs[1:], strict=True))

    def system_prompt(self, text: str, truncate: bool = False) -> None:
        """contract 'system prompt': [BOS] [internal] text [EOS]; at most max_system_tokens, keep the start."""
        if not self.takes_system_prompt:  # contract 'system_prompt': false -> refuse, memory untouched
            raise ConformanceError("this model takes no system prompt")
        sp, ids = self.special, self.tokenizer.encode(text)
        head = [sp["bos"], sp["internal"]] if "internal" in sp else [sp["bos"]]
        room = self.dims["max_seq_len"] - len(head) - 1
        if len(ids) > room and not truncate:
            raise ConformanceError("system prompt too long")
        self._update([*head, *ids[:room], sp["eos"]])

    # --- a turn ---------------------------------------------------------------------------------------
    def _decode(self, tokens: list[int], past: int) -> np.ndarray:
        """contract 'decoder' + 'in-place cache binding': rows [0, past) in, rows [past, past+n) out. Static
        cache ('decoder variants'): the whole cache in, seqlens_k = past + n - 1, present_* = past_* with this
        run's rows written (bound to the same memory, or copied back)."""
        n = len(tokens)
        if past + n > self.dims["max_seq_len"]:
            raise ConformanceError("past_seq + seq > max_seq_len")
        feed = {"input_ids": np.array([tokens], np.int64), **self.memory_kv}
        if self.static:
            feed["seqlens_k"] = np.array([past + n - 1], np.int32)
        out, rows = ("present", slice(None)) if self.static else ("new", slice(past, past + n))
        for i, (k, v) in enumerate(self.cache):
            feed[f"past_key.{i}"], feed[f"past_value.{i}"] = (k, v) if self.static else (k[:past], v[:past])
        outputs = {
            f"{out}_{kind}.{i}": buf
            for i, kv in enumerate(self.cache)
            for kind, buf in zip(("key", "value"), kv, strict=True)
        }
        if not self.inplace:
            logits, *written = self.sessions["decoder"].run(["logits", *outputs], feed)
            for buf, rows_out in zip(outputs.values(), written, strict=True):
                buf[rows] = rows_out
            return logits[0]
        binding = self.sessions["decoder"].io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        logits = np.empty((1, self.dims["vocab_size"]), self.float)
        binding.bind_output("logits", "cpu", 0, self.float, list(logits.shape), logits.ctypes.data)
        for (
            name,
            buf,
        ) in outputs.items():  # preallocated outputs over the cache: rows (dynamic) or all (static)
            view = buf[rows]
            binding.bind_output(name, "cpu", 0, self.float, list(view.shape), view.ctypes.data)
        self.sessions["decoder"].run_with_iobinding(binding)
        return logits[0]

    def turn(self, query: list[int], max_new_tokens: int = 128, truncate: bool = False) -> list[int]:
        """contract 'one turn': template, limits, budget, greedy loop, memory update."""
        sp, limit = self.special, self.dims["max_seq_len"]
        if max_new_tokens <= 0:
            raise ConformanceError("max_new_tokens must be >= 1")
        if not query:
            raise ConformanceError("empty query")
        room = limit - 5
        if len(query) > room:
            if not truncate:
                raise ConformanceError("query too long")
            query = query[-room:]
        prompt = [sp["bos"], sp["query"], *query, sp["answer"]]
        budget = min(max_new_tokens, limit - len(prompt) - 1)
        answer: list[int] = []
        ended = False
        logits = self._decode(prompt, 0)
        while True:
            token = greedy(logits)
            if token == sp["eos"]:
                ended = True
                break
            answer.append(token)
            if len(answer) == budget:
                break
            logits = self._decode([token], len(prompt) + len(answer) - 1)
        tail = [sp["eos"]] if ended else []  # contract: a cut answer is written without [EOS]
        self._update([*prompt, *answer, *tail])
        return answer

    def say(self, text: str, max_new_tokens: int = 128) -> list[int]:
        return self.turn(self.tokenizer.encode(text), max_new_tokens)
