"""Significance for `host compare`: Mann-Whitney U, Hodges-Lehmann shift, interval overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.analysis.gate import detectable_pct, gate_p_value, holm_rejections
from host.analysis.significance import (
    EVIDENCE_HISTORY,
    EVIDENCE_REPETITIONS,
    EVIDENCE_WITHIN_RUN,
    compare_estimates,
    compare_metric,
    history_change,
    hodges_lehmann_shift,
    intervals_overlap,
    log_spread,
    mann_whitney_u,
    repetitions_change,
    within_run_change,
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


def test_mann_whitney_on_100k_samples_a_side_counts_every_pair() -> None:
    # a_i > b_j = a_j + 0.5 exactly when i > j: U = n(n-1)/2, no ties; p near 1 (the shift is tiny).
    a = np.arange(100_000, dtype=np.float64)

    u, p = mann_whitney_u(a, a + 0.5)

    assert u == 100_000 * 99_999 / 2
    assert p > 0.99


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


def test_repetitions_change_is_welch_t_on_log_figures_by_hand() -> None:
    base = np.array([4.00, 4.08, 3.96, 4.04, 3.92])
    cand = base * 1.10

    change = repetitions_change(base, cand)

    assert change.evidence == EVIDENCE_REPETITIONS
    assert change.change_pct == pytest.approx(10.0)
    # Equal spreads: Welch's df is 2(k-1) = 8, t_8 = 2.306, se = sd(log base) sqrt(2/5).
    se = float(np.std(np.log(base), ddof=1)) * math.sqrt(2 / 5)
    assert change.df == pytest.approx(8.0)
    assert change.se_log == pytest.approx(se)
    lo, hi = change.ci_pct or (math.nan, math.nan)
    assert lo == pytest.approx(np.expm1(math.log(1.1) - 2.306 * se) * 100, abs=1e-3)
    assert hi == pytest.approx(np.expm1(math.log(1.1) + 2.306 * se) * 100, abs=1e-3)


def test_three_repetitions_a_side_get_an_interval_that_covers_95_percent() -> None:
    # A percentile bootstrap over 3 values covers ~89%; t on the logs is exact for normal log figures.
    rng = np.random.default_rng(3)
    logs = rng.normal(0.0, 0.02, size=(4000, 2, 3))

    covered = [(lambda c: c.ci_pct[0] <= 0.0 <= c.ci_pct[1])(repetitions_change(np.exp(b), np.exp(c))) for b, c in logs]

    assert 0.935 <= np.mean(covered) <= 0.965  # 4000 pairs: binomial sd 0.34%


def test_a_noisier_candidate_gets_welch_degrees_of_freedom() -> None:
    quiet = np.array([4.0, 4.01, 3.99])
    noisy = np.array([4.0, 4.4, 3.6])

    change = repetitions_change(quiet, noisy)

    assert change.df is not None and 2.0 <= change.df < 2.2  # nearly all the variance on one side of 3: df ~ 2


def test_history_interval_scales_the_run_to_run_spread_with_repetition_counts() -> None:
    one_each = history_change(np.array([4.0]), np.array([4.4]), spread_log_sd=0.02, spread_df=8)
    three_each = history_change(np.full(3, 4.0), np.full(3, 4.4), spread_log_sd=0.02, spread_df=8)

    assert one_each.evidence == EVIDENCE_HISTORY
    lo, hi = one_each.ci_pct or (math.nan, math.nan)
    assert math.log1p(hi / 100) - math.log(1.1) == pytest.approx(2.306 * 0.02 * math.sqrt(2), rel=1e-5)
    lo3, hi3 = three_each.ci_pct or (math.nan, math.nan)
    assert (hi3 - lo3) == pytest.approx((hi - lo) / math.sqrt(3), rel=0.02)


def test_log_spread_pools_groups_and_needs_two_degrees_of_freedom() -> None:
    sd, df = log_spread([np.array([1.0, math.e**0.02]), np.array([2.0, 2.0 * math.e**0.02, 2.0 * math.e**0.04])]) or (
        0,
        0,
    )

    assert df == 3
    # sums of squares: 0.0002 and 0.0008 over 3 df
    assert sd == pytest.approx(math.sqrt(0.001 / 3))
    assert log_spread([np.array([1.0, 1.1])]) is None


def test_within_run_change_combines_both_intervals_and_needs_both() -> None:
    change = within_run_change(4.0, (3.9, 4.1), 4.4, (4.29, 4.51))

    assert change.evidence == EVIDENCE_WITHIN_RUN
    assert change.change_pct == pytest.approx(10.0)
    lo, hi = change.ci_pct or (math.nan, math.nan)
    assert lo < 10.0 < hi
    assert within_run_change(4.0, None, 4.4, (4.29, 4.51)).ci_pct is None


def test_gate_p_value_is_one_sided_against_the_gate_not_against_zero() -> None:
    # A 10% slowdown measured with se 2% of log ratio on 8 df, against a 5% gate.
    change = repetitions_change(np.full(5, 4.0) * np.exp([0.0, 0.02, -0.02, 0.01, -0.01]), np.full(5, 4.4))

    p = gate_p_value(change, True, 5.0)
    p_zero = gate_p_value(change, True, 0.0)

    assert p is not None and p_zero is not None and p_zero < p < 0.05
    assert gate_p_value(change, False, 5.0) == pytest.approx(1.0, abs=1e-4)  # faster is never a regression
    slower_throughput = repetitions_change(np.full(3, 100.0) * np.exp([0.0, 0.01, -0.01]), np.full(3, 85.0))
    assert (gate_p_value(slower_throughput, False, 5.0) or 1.0) < 0.01  # lower is worse: a 15% drop


def test_holm_steps_down_and_stops_at_the_first_p_value_that_does_not_pass() -> None:
    assert holm_rejections([0.01, 0.04, None]) == [True, True, False]  # 0.01 <= 0.05/2, then 0.04 <= 0.05/1
    assert holm_rejections([0.03, 0.04]) == [False, False]  # 0.03 > 0.025: nothing after it either
    assert holm_rejections([0.001, 0.2, 0.02]) == [True, False, True]


def test_detectable_change_grows_with_spread_and_shrinks_with_repetitions() -> None:
    rng = np.random.default_rng(1)
    spread = rng.normal(0.0, 0.02, size=8)
    k3 = repetitions_change(np.exp(spread[:3]), np.exp(spread[3:6]))
    k8 = repetitions_change(np.exp(spread), np.exp(spread[::-1]))

    reach3, reach8 = detectable_pct(k3, True, 5.0, tests=2), detectable_pct(k8, True, 5.0, tests=2)

    assert reach3 is not None and reach8 is not None and 5.0 < reach8 < reach3
    # By hand: log(1.05) + (t_(1-0.025, df) + t_(0.8, df)) se.
    from host.analysis.distributions import t_quantile

    df, se = k8.df or 0.0, k8.se_log or 0.0
    expected = math.expm1(math.log(1.05) + (t_quantile(0.975, df) + t_quantile(0.8, df)) * se) * 100
    assert reach8 == pytest.approx(expected)
