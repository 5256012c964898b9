"""Sampling: greedy limits, seeding, the sampled distribution, top-k/top-p support, repetition penalty."""

from __future__ import annotations

import numpy as np
import pytest

from rxt_edge.sampling import SamplingConfig, _draw, apply_repetition_penalty, sample_next

# chi-square critical value, alpha = 1e-4 (a flaky failure is one in ten thousand runs)
CHI2_CRIT = {3: 21.11, 5: 25.74, 7: 29.88}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _counts(logits, cfg, n=20000, seed=0, previous=()):
    rng = np.random.default_rng(seed)
    c = np.zeros(len(logits), dtype=np.int64)
    for _ in range(n):
        c[sample_next(logits, cfg, rng, previous)] += 1
    return c


def _chi2(counts: np.ndarray, probs: np.ndarray) -> float:
    keep = probs > 0
    assert counts[~keep].sum() == 0, "sampled an id with zero probability"
    exp = probs[keep] * counts.sum()
    return float((((counts[keep] - exp) ** 2) / exp).sum())


@pytest.fixture
def logits():
    return np.random.default_rng(1).normal(0, 2, size=1000).astype(np.float32)


def test_greedy_is_argmax(logits):
    assert sample_next(logits, SamplingConfig(temperature=0)) == int(np.argmax(logits))
    assert sample_next(logits.astype(np.float16), SamplingConfig(temperature=0)) == int(np.argmax(logits))


def test_greedy_on_float16_rows_orders_every_value_as_floats_do():
    """float16 rows take the bit-pattern path: negatives, zeros of both signs, subnormals, infinities and the
    largest finite values rank exactly as they do as floats; a NaN of either sign is refused."""
    rng = np.random.default_rng(7)
    special = np.array([-np.inf, np.inf, -0.0, 0.0, 6e-8, -6e-8, 65504, -65504], dtype=np.float16)
    for trial in range(300):
        scale = rng.choice([1e-6, 1e-2, 1.0, 1e3, 6e4])
        x = np.clip(rng.normal(0, scale, 257), -65504, 65504).astype(np.float16)
        if trial % 3 == 0:
            x[rng.integers(0, 257, 4)] = rng.choice(special, 4)
        if trial % 5 == 0:
            x = -np.abs(x)  # every value negative: the largest is the one closest to zero
        best = sample_next(x, SamplingConfig(temperature=0))
        assert x[best] == x.astype(np.float32).max(), trial
        assert best == int(np.argmax(x.astype(np.float32))) or x[best] == 0  # ties only between -0 and +0
    for nan in (np.float16("nan"), -np.float16("nan")):
        x = np.zeros(5, np.float16)
        x[3] = nan
        with pytest.raises(ValueError, match="NaN"):
            sample_next(x, SamplingConfig(temperature=0))


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0, 100.0])
def test_top_k_1_is_greedy_at_any_temperature(logits, temperature):
    rng = np.random.default_rng(0)
    cfg = SamplingConfig(temperature=temperature, top_k=1)
    assert {sample_next(logits, cfg, rng) for _ in range(50)} == {int(np.argmax(logits))}


def test_tiny_top_p_is_greedy(logits):
    rng = np.random.default_rng(0)
    cfg = SamplingConfig(temperature=3.0, top_p=1e-6)
    assert {sample_next(logits, cfg, rng) for _ in range(50)} == {int(np.argmax(logits))}


def test_same_seed_same_sequence(logits):
    cfg = SamplingConfig(temperature=1.3, top_k=50, top_p=0.9, repetition_penalty=1.2)

    def run(seed):
        rng, out = np.random.default_rng(seed), []
        for _ in range(40):
            out.append(sample_next(logits, cfg, rng, out))
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_distribution_matches_softmax(temperature):
    x = np.array([2.0, 1.0, 0.5, 0.0, -1.0, 1.5], dtype=np.float32)
    counts = _counts(x, SamplingConfig(temperature=temperature))
    assert _chi2(counts, _softmax(x / temperature)) < CHI2_CRIT[5]


def test_large_vocab_distribution():
    # beyond 4096 ids the draw goes block by block: check ids in different blocks, edges included
    x = np.zeros(10000, dtype=np.float32)
    hot = [0, 1023, 1024, 5000, 9999]
    x[hot] = [6.0, 5.0, 5.5, 4.0, 6.5]
    counts = _counts(x, SamplingConfig(), n=20000)
    p = _softmax(x.astype(np.float64))
    grouped = np.append(counts[hot], counts.sum() - counts[hot].sum())
    assert _chi2(grouped, np.append(p[hot], 1 - p[hot].sum())) < CHI2_CRIT[5]


def test_draw_never_returns_zero_weight():
    for n in (3, 10000):
        w = np.zeros(n, dtype=np.float32)
        w[1] = 1.0
        assert _draw(w, 0.0) == 1
        assert _draw(w, np.nextafter(1.0, 0.0)) == 1


def test_tiny_temperature_is_near_greedy(logits):
    rng = np.random.default_rng(0)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert sample_next(logits, SamplingConfig(temperature=1e-30), rng) == int(np.argmax(logits))


def test_top_k_distribution():
    x = np.array([0.1, 2.0, -1.0, 1.0, 3.0, 0.0, 2.5, -2.0], dtype=np.float32)
    counts = _counts(x, SamplingConfig(temperature=1.0, top_k=4))
    probs = np.zeros_like(x)
    top4 = np.argsort(-x)[:4]
    probs[top4] = _softmax(x[top4])
    assert _chi2(counts, probs) < CHI2_CRIT[3]


def test_top_p_keeps_smallest_nucleus():
    x = np.log(np.array([0.05, 0.4, 0.1, 0.3, 0.15], dtype=np.float32))
    # sorted: 0.4, 0.3, 0.15 -> cumulative 0.85 reaches 0.8: three tokens, renormalised
    counts = _counts(x, SamplingConfig(top_p=0.8))
    probs = np.array([0, 0.4, 0, 0.3, 0.15]) / 0.85
    assert _chi2(counts, probs) < CHI2_CRIT[3]


def test_top_p_nucleus_beyond_first_candidates():
    # a flat distribution over 1000 ids: the nucleus needs far more than the first 64 candidates
    x = np.zeros(1000, dtype=np.float32)
    x[:10] = 0.01
    counts = _counts(x, SamplingConfig(top_p=0.5), n=4000)
    assert 400 < np.count_nonzero(counts) <= 501


def test_top_k_and_top_p_together():
    x = np.log(np.array([0.3, 0.25, 0.2, 0.15, 0.1], dtype=np.float32))
    counts = _counts(x, SamplingConfig(top_k=3, top_p=0.6), n=5000)
    # top_k keeps {0,1,2} (mass 0.75 -> 0.4, 0.333, 0.267); top_p 0.6 then keeps {0,1}
    assert set(np.flatnonzero(counts)) == {0, 1}


def test_repetition_penalty_lowers_repeated_tokens():
    x = np.array([2.0, -1.0, 1.0, 0.5], dtype=np.float32)
    pen = apply_repetition_penalty(x, [0, 1, 0], 2.0)
    np.testing.assert_allclose(pen, [1.0, -2.0, 1.0, 0.5])
    assert x[0] == 2.0  # input untouched
    # greedy would pick 0; penalised, 2 wins
    assert sample_next(x, SamplingConfig(temperature=0, repetition_penalty=2.5), previous_ids=[0]) == 2
    base = _counts(x, SamplingConfig(), n=5000)
    penalised = _counts(x, SamplingConfig(repetition_penalty=1.5), n=5000, previous=[0])
    assert penalised[0] < base[0] * 0.8


def test_non_finite_logits():
    x = np.array([0.0, np.inf, 1.0], dtype=np.float32)
    assert sample_next(x, SamplingConfig(), np.random.default_rng(0)) == 1
    masked = np.array([-np.inf, 0.0, -np.inf], dtype=np.float32)
    assert {sample_next(masked, SamplingConfig(), np.random.default_rng(s)) for s in range(20)} == {1}
    with pytest.raises(ValueError, match="NaN"):
        sample_next(np.array([0.0, np.nan]), SamplingConfig(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="-inf"):
        sample_next(np.full(3, -np.inf), SamplingConfig(), np.random.default_rng(0))


def test_bad_inputs():
    with pytest.raises(ValueError, match="one non-empty row"):
        sample_next(np.zeros((1, 5)), SamplingConfig(temperature=0))
    with pytest.raises(ValueError, match="Generator"):
        sample_next(np.zeros(5), SamplingConfig(temperature=1.0))
    with pytest.raises(ValueError, match="previous_ids"):
        sample_next(np.zeros(5), SamplingConfig(temperature=0, repetition_penalty=1.2), previous_ids=[5])


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.0}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ],
)
def test_config_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**kw)
