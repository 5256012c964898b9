"""Choosing the next token from one row of logits (numpy; runs once per generated token).

Order, as in common practice: repetition penalty -> temperature -> top-k -> top-p -> draw.
Temperature 0 or top_k 1 is greedy (argmax, no randomness used). With top_k set, only the k best
logits are ever sorted (argpartition), so the per-token cost stays O(vocab).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 = greedy; top_k 0 = off; top_p 1 = off; repetition_penalty 1 = off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"SamplingConfig.{name} must be a finite number, got {v!r}")
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be an integer >= 0, got {self.top_k!r}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"SamplingConfig.repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


@dataclass(frozen=True)
class GenerationConfig:
    """Everything one turn's generation takes, in one place for the API, chat, bench and server.

    Greedy by default (temperature 0). `seed` makes sampling reproducible; `truncate` keeps the end of an
    over-long query instead of refusing it; `ignore_eos` never picks [EOS] (fixed-length answers, benchmarks)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    truncate: bool = False
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {n!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
        ):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        self.sampling  # validates the sampling fields  # noqa: B018

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.repetition_penalty)

    def replace(self, **changes) -> GenerationConfig:
        return replace(self, **changes)


def apply_repetition_penalty(logits: np.ndarray, previous_ids: Iterable[int], penalty: float) -> np.ndarray:
    """CTRL-style: a seen token's logit is divided by `penalty` if positive, multiplied if negative.

    Returns a new array (the caller's logits are never modified)."""
    out = np.array(logits, dtype=np.float32, copy=True)
    if penalty == 1.0:
        return out
    ids = np.unique(np.asarray(list(previous_ids), dtype=np.int64))
    if ids.size:
        if ids[0] < 0 or ids[-1] >= out.shape[0]:
            raise ValueError(
                f"previous_ids must lie in [0, {out.shape[0]}), got {int(ids[0])}..{int(ids[-1])}"
            )
        seen = out[ids].astype(np.float64)
        with np.errstate(over="ignore"):  # an extreme penalty saturates at +-inf: float32 max overflows
            out[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    return out


def _argmax(x: np.ndarray) -> int:
    """argmax of a float16/float32 row, or ValueError if any value is NaN.

    float16 goes through its bits: numpy compares and converts float16 in software (~20x slower than the integer
    ops; 0.1-0.3 ms per 32k-token row, a fifth of a CUDA decode step). Flipping the magnitude bits of negative
    values makes IEEE order the signed-integer order (-inf < -1 < -0 < +0 < 1 < inf)."""
    if x.dtype == np.float16:
        bits = x.view(np.int16)
        if ((bits & 0x7FFF) > 0x7C00).any():  # exponent all ones, mantissa non-zero: NaN of either sign
            raise ValueError("logits contain NaN")
        return int(np.argmax(bits ^ ((bits >> 15) & 0x7FFF)))
    best = int(np.argmax(x))  # a NaN anywhere wins argmax: one pass finds both
    if np.isnan(x[best]):
        raise ValueError("logits contain NaN")
    return best


def sample_next(
    logits: np.ndarray,
    cfg: SamplingConfig,
    rng: np.random.Generator | None = None,
    previous_ids: Iterable[int] = (),
) -> int:
    """The next token id from a 1-D row of logits (float16/32). `rng` is needed unless greedy."""
    logits = np.asarray(logits)
    if logits.ndim != 1 or logits.shape[0] == 0:
        raise ValueError(f"logits must be one non-empty row [vocab], got shape {logits.shape}")
    if cfg.repetition_penalty != 1.0:
        x = apply_repetition_penalty(logits, previous_ids, cfg.repetition_penalty)
    else:
        x = logits
    best = _argmax(x)  # (runs for every token: greedy reads the row once, float16 as it came from the device)
    top = float(x[best])
    if cfg.greedy or top == np.inf:  # +inf (fp16 overflow) dominates any distribution
        return best
    x = x.astype(np.float32, copy=False)
    if top == -np.inf:
        raise ValueError("every logit is -inf: nothing can be sampled")
    if rng is None:
        raise ValueError("sampling (temperature > 0, top_k != 1) needs a numpy Generator")

    ids = None  # candidate ids; None = the whole vocabulary
    if 0 < cfg.top_k < x.shape[0]:
        ids = np.argpartition(x, -cfg.top_k)[-cfg.top_k :]
        x = x[ids]
    # Divide in float64: a tiny temperature (5e-324) would round to 0 in float32 (0/0 = NaN for the best
    # logit); in float64 it sends every other logit to -inf, probability 0 (the overflow is expected).
    with np.errstate(over="ignore", under="ignore"):
        p = np.exp(np.divide(x - top, cfg.temperature, dtype=np.float64)).astype(np.float32)  # in [0, 1]
    if cfg.top_p < 1.0:
        order = _nucleus_candidates(p, cfg.top_p)
        sorted_p = p[order] / p.sum(dtype=np.float64)
        # keep the smallest prefix whose mass reaches top_p (the most likely token always stays)
        keep = int(np.searchsorted(np.cumsum(sorted_p, dtype=np.float64), cfg.top_p, side="left")) + 1
        order = order[:keep]
        p = p[order]
        ids = order if ids is None else ids[order]
    k = _draw(p, rng.random())
    return int(k if ids is None else ids[k])


def _nucleus_candidates(p: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of `p` by descending probability, enough of them to hold the top_p nucleus.

    The nucleus is usually a few tokens: sort the best m (argpartition) and grow m only when their
    mass falls short, instead of sorting the whole vocabulary every step."""
    need = top_p * p.sum(dtype=np.float64)
    m = 64
    while m < p.shape[0]:
        cand = np.argpartition(p, -m)[-m:]
        if p[cand].sum(dtype=np.float64) >= need:
            return cand[np.argsort(-p[cand], kind="stable")]
        m *= 4
    return np.argsort(-p, kind="stable")


_BLOCK = 1024


def _draw(p: np.ndarray, u: float) -> int:
    """Index i with probability p[i] / sum(p), for u uniform in [0, 1), by inverting the CDF.

    A cumulative sum is sequential and slow over a whole vocabulary, so large vocabularies go in two
    levels: pick a block by its (vectorised) sum, then an index within the block."""
    if p.shape[0] <= 4 * _BLOCK:
        return _pick(p, u * float(p.sum(dtype=np.float64)))
    sums = np.add.reduceat(p, np.arange(0, p.shape[0], _BLOCK), dtype=np.float64)
    cdf = np.cumsum(sums)
    target = u * cdf[-1]
    b = _pick(sums, target, cdf)
    start = b * _BLOCK
    return start + _pick(p[start : start + _BLOCK], target - (cdf[b - 1] if b else 0.0))


def _pick(w: np.ndarray, target: float, cdf: np.ndarray | None = None) -> int:
    """First i with cdf[i] > target; never an index of zero weight, even when rounding overshoots."""
    if cdf is None:
        cdf = np.cumsum(w, dtype=np.float64)
    i = int(np.searchsorted(cdf, target, side="right"))
    if i >= w.shape[0]:
        i = int(np.flatnonzero(w)[-1])
    return i
