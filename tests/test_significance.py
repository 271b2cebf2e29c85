"""Significance for `host compare`: Mann-Whitney U, Hodges-Lehmann shift, interval overlap."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from host.significance import (
    compare_estimates,
    compare_metric,
    hodges_lehmann_shift,
    intervals_overlap,
    mann_whitney_u,
)


def test_mann_whitney_on_a_hand_computed_case_without_ties() -> None:
    # U = 0 (every a below every b); sigma = sqrt(3*3*7/12) = 2.2913; z = (4.5 - 0.5)/2.2913 = 1.7457.
    u, p = mann_whitney_u(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))

    assert u == 0.0
    assert p == pytest.approx(math.erfc(1.7457 / math.sqrt(2)), abs=1e-4)
    assert p == pytest.approx(0.0809, abs=1e-4)


def test_mann_whitney_averages_tied_ranks_and_corrects_the_variance() -> None:
    # Pooled 1,2,2,2,3,3,4,5 -> ranks 1,3,3,3,5.5,5.5,7,8; a's rank sum 12.5, so U = 12.5 - 10 = 2.5.
    # Ties 3 and 2: sum(t^3 - t) = 30; sigma^2 = 16/12 * (9 - 30/56) = 11.2857; z = (5.5 - 0.5)/3.3594.
    u, p = mann_whitney_u(np.array([1.0, 2.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0, 5.0]))

    assert u == 2.5
    assert p == pytest.approx(math.erfc(5 / math.sqrt(16 / 12 * (9 - 30 / 56)) / math.sqrt(2)), rel=1e-9)


def test_mann_whitney_u_counts_pairs_where_a_is_larger() -> None:
    rng = np.random.default_rng(11)
    a = rng.integers(0, 20, size=40).astype(float)
    b = rng.integers(0, 20, size=30).astype(float)

    u, _ = mann_whitney_u(a, b)

    pairs = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    assert u == pytest.approx(pairs)


def test_identical_constant_samples_are_not_different() -> None:
    assert mann_whitney_u(np.full(10, 3.0), np.full(12, 3.0))[1] == 1.0


def test_a_five_percent_slowdown_is_a_significant_regression() -> None:
    rng = np.random.default_rng(1)
    base = rng.lognormal(np.log(10.0), 0.2, size=2000)
    slower = rng.lognormal(np.log(10.5), 0.2, size=2000)

    result = compare_metric(base, slower)

    assert result.p_value is not None and result.p_value < 1e-6
    assert result.significant and result.regression
    assert result.change_pct == pytest.approx(5.0, abs=1.5)


def test_a_speedup_is_significant_but_not_a_regression_unless_lower_is_worse() -> None:
    rng = np.random.default_rng(2)
    base = rng.lognormal(np.log(10.0), 0.2, size=2000)
    faster = rng.lognormal(np.log(9.0), 0.2, size=2000)

    latency = compare_metric(base, faster, higher_is_worse=True)
    throughput = compare_metric(1 / base, 1 / faster, higher_is_worse=False)

    assert latency.significant and not latency.regression
    assert throughput.significant and not throughput.regression
    assert compare_metric(1 / faster, 1 / base, higher_is_worse=False).regression


def test_a_significant_regression_below_the_threshold_does_not_fail() -> None:
    rng = np.random.default_rng(3)
    base = rng.lognormal(np.log(10.0), 0.1, size=20000)
    slightly_slower = rng.lognormal(np.log(10.1), 0.1, size=20000)

    result = compare_metric(base, slightly_slower, min_change_pct=2.0)

    assert result.significant and not result.regression


def test_a_a_pairs_are_rarely_significant_and_p_values_look_uniform() -> None:
    rng = np.random.default_rng(4)
    p_values = np.array([mann_whitney_u(rng.lognormal(0, 0.3, 200), rng.lognormal(0, 0.3, 200))[1] for _ in range(400)])

    assert np.mean(p_values < 0.05) < 0.08
    assert np.mean(p_values < 0.01) < 0.03
    assert 0.44 < np.mean(p_values) < 0.56
    assert np.histogram(p_values, bins=4, range=(0, 1))[0].min() > 70  # each quarter near 100


def test_mann_whitney_on_100k_samples_a_side_is_fast() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(1_000_000, 2_000_000, size=100_000)
    b = rng.integers(1_000_000, 2_000_000, size=100_000)

    began = time.perf_counter()
    mann_whitney_u(a, b)

    assert time.perf_counter() - began < 0.5


def test_hodges_lehmann_matches_brute_force_median_of_pairwise_differences() -> None:
    rng = np.random.default_rng(6)
    a = rng.lognormal(0, 0.5, size=31)
    b = rng.lognormal(0.3, 0.5, size=40)
    diffs = np.sort((b[None, :] - a[:, None]).ravel())

    shift, (lo, hi) = hodges_lehmann_shift(a, b)

    assert shift == pytest.approx(float(np.median(diffs)), rel=1e-9)
    # C = floor(1240/2 - 1.96 * sqrt(31 * 40 * 72 / 12)) = floor(620 - 169.06) = 450.
    assert lo == pytest.approx(diffs[450 - 1], rel=1e-9)
    assert hi == pytest.approx(diffs[1240 - 450], rel=1e-9)
    assert lo < shift < hi


def test_hodges_lehmann_recovers_a_pure_shift() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(10.0, 1.0, size=500)
    b = rng.normal(10.0, 1.0, size=500) + 3.0

    shift, (lo, hi) = hodges_lehmann_shift(a, b)

    assert shift == pytest.approx(3.0, abs=0.2)
    assert lo < 3.0 < hi


def test_intervals_overlap_when_they_share_a_point() -> None:
    assert intervals_overlap((1.0, 2.0), (2.0, 3.0))
    assert intervals_overlap((1.0, 5.0), (2.0, 3.0))
    assert not intervals_overlap((1.0, 2.0), (2.1, 3.0))


def test_energy_regression_needs_disjoint_intervals() -> None:
    hungrier = compare_estimates(40.0, (39.0, 41.0), 44.0, (43.0, 45.0))
    noisy = compare_estimates(40.0, (36.0, 44.0), 42.0, (38.0, 46.0))

    assert hungrier.significant and hungrier.regression and hungrier.p_value is None
    assert hungrier.change_pct == pytest.approx(10.0)
    assert not noisy.significant and not noisy.regression


def test_empty_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="no samples"):
        compare_metric(np.array([]), np.array([1.0]))
