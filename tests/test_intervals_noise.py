"""Intervals that cover under realistic noise, not only AR(1): slow components, small samples, generations.

Small seeded simulations through the real functions; bench/bench_calibration.py runs the full table.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.noise_models import BY_NAME, ar1
from host.analysis.autocorr import mean_precision, ratio_precision
from host.analysis.generation import Generation, decode_rate_ci95
from host.analysis.stats import latency_stats, quantile_interval


def _coverage(intervals: list, truth: float) -> tuple[float, int]:  # type: ignore[type-arg]
    given = [iv for iv in intervals if iv.as_ci95() is not None]
    return float(np.mean([iv.low <= truth <= iv.high for iv in given])), len(given)


def test_fast_jitter_plus_slow_wander_is_seen_where_lag_1_correlation_is_not() -> None:
    # Half the variance in AR(0.5) jitter, half in an AR(0.98) wander: lag-1 correlation ~0.74 of the
    # total, an AR(1) reading of it says tau ~7; the real integrated autocorrelation time is ~50.
    rng = np.random.default_rng(5)
    x = 0.03 * ar1(rng, 1, 5000, 0.5)[0] + 0.03 * ar1(rng, 1, 5000, 0.98)[0]
    rho1 = float(np.corrcoef(x[1:], x[:-1])[0, 1])

    precision = mean_precision(x)

    assert (1 + rho1) / (1 - rho1) < 8
    assert precision.tau > 30


def test_p50_interval_covers_under_fast_jitter_and_slow_wander() -> None:
    model = BY_NAME["fast+slow"]
    runs = model.series(np.random.default_rng(11), 120, 1000)

    covered, given = _coverage([quantile_interval(r, 0.5) for r in runs], model.truth(0.5))

    assert given >= 80 and covered >= 0.9


def test_two_state_latency_gets_intervals_that_cover() -> None:
    model = BY_NAME["two-state"]
    runs = model.series(np.random.default_rng(12), 150, 200)

    p50 = _coverage([quantile_interval(r, 0.5) for r in runs], model.truth(0.5))
    p90 = _coverage([quantile_interval(r, 0.9) for r in runs], model.truth(0.9))

    assert p50[1] >= 130 and p50[0] >= 0.9
    assert p90[1] >= 50 and p90[0] >= 0.9


def test_under_50_values_no_interval_is_labelled_95_and_the_assumption_is_said() -> None:
    rng = np.random.default_rng(3)

    small = quantile_interval(rng.lognormal(0, 0.05, 49), 0.5)
    enough = quantile_interval(rng.lognormal(0, 0.05, 50), 0.5)

    assert small.low is not None and small.as_ci95() is None
    assert small.assumption == "independent values" and "too few to check" in small.method
    assert small.coverage is not None and small.coverage >= 0.95  # what it would have if they were independent
    assert enough.as_ci95() is not None and enough.assumption == ""


def test_p99_gets_an_interval_only_where_the_data_reach_it() -> None:
    rng = np.random.default_rng(8)
    start = np.arange(20_000, dtype=np.int64) * 10_000_000
    latency = (rng.lognormal(np.log(4e6), 0.05, 20_000)).astype(np.int64)

    many = latency_stats(start, start + latency).to_dict()
    few = latency_stats(start[:300], start[:300] + latency[:300]).to_dict()

    assert many["p99_ci95"] is not None and many["p99_ci95"][0] <= many["p99"] <= many["p99_ci95"][1]
    assert few["p99_ci95"] is None


def _generations(itl_ms: np.ndarray, ttft_ms: np.ndarray) -> list[Generation]:
    gens, t = [], 1_000_000_000
    for g in range(itl_ms.shape[0]):
        tokens = t + int(ttft_ms[g] * 1e6) + np.concatenate(([0], np.cumsum(itl_ms[g] * 1e6))).astype(np.int64)
        gens.append(Generation(16, t, int(tokens[0]), tokens))
        t = int(tokens[-1]) + 1_000_000
    return gens


def _speeds(rng: np.random.Generator, rows: int, generations: int) -> np.ndarray:
    """A generation's speed (sd 5%) shared by its tokens, persisting from one generation to the next (AR 0.7)."""
    return np.exp(0.05 * ar1(rng, rows, generations, 0.7))


def test_itl_interval_clusters_by_generation_where_tokens_share_its_speed() -> None:
    rng = np.random.default_rng(21)
    runs, generations, tokens = 120, 200, 17
    itl = (
        5.0
        * _speeds(rng, runs, generations)[..., None]
        * np.exp(0.03 * rng.standard_normal((runs, generations, tokens)))
    )
    ids = np.repeat(np.arange(generations), tokens)

    clustered = _coverage([quantile_interval(r.ravel(), 0.5, clusters=ids) for r in itl], 5.0)
    as_series = _coverage([quantile_interval(r.ravel(), 0.5) for r in itl], 5.0)

    assert clustered[1] >= 80 and clustered[0] >= 0.9
    assert as_series[0] < clustered[0]  # tokens as one series see only the within-generation correlation


def test_decode_rate_interval_allows_for_speed_that_persists_across_generations() -> None:
    rng = np.random.default_rng(22)
    runs, generations = 100, 120
    speed = _speeds(rng, runs, generations)
    itl = 5.0 * speed[..., None] * np.exp(0.03 * rng.standard_normal((runs, generations, 15)))
    truth = 1e3 / (5.0 * math.exp((0.05**2 + 0.03**2) / 2))

    intervals = [decode_rate_ci95(_generations(itl[r], 30.0 * speed[r])) for r in range(runs)]

    given = [iv for iv in intervals if iv is not None]
    assert len(given) >= 70  # speed persisting over ~6 generations: some runs are too short to say
    assert np.mean([lo <= truth <= hi for lo, hi in given]) >= 0.9


def test_ratio_precision_of_exactly_proportional_units_is_exact() -> None:
    precision = ratio_precision(np.full(60, 2.0), np.full(60, 4.0))

    assert precision.var_of_mean == 0.0
    with pytest.raises(ValueError, match="positive total"):
        ratio_precision(np.ones(3), np.zeros(3))
