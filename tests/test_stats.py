"""Latency statistics: order-statistic intervals, summary figures, live median and the warmup rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.analysis.stats import (
    P99_MIN_N,
    batch_means_ci95,
    is_stable,
    latency_stats,
    pooled_quantile_interval,
    quantile_ci,
    quantile_interval,
    rank_coverage,
    running_p50_ms,
    t_critical_95,
)


def _ranks(n: int, q: float) -> tuple[int, int]:
    """The 1-based ranks quantile_ci picks, read back from the sample 1..n."""
    lo, hi = quantile_ci(np.arange(1, n + 1, dtype=np.float64), q)
    return int(lo), int(hi)


def test_median_ci_of_ten_uses_exact_binomial_ranks_2_and_9() -> None:
    # P(B <= 1) = 11/1024 = 0.0107 <= 0.025 < P(B <= 2) = 56/1024, so the ranks are 2 and 10 - 2 + 1.
    values = np.array([10.0, 11, 12, 13, 14, 15, 16, 17, 18, 19])

    lo, hi = quantile_ci(values, 0.5)

    assert (lo, hi) == (11.0, 18.0)


@pytest.mark.parametrize("q", [0.5, 0.9])
def test_quantile_ci_covers_the_true_quantile_in_simulation(q: float) -> None:
    rng = np.random.default_rng(7)
    sigma = 0.6
    true_quantile = math.exp(sigma * {0.5: 0.0, 0.9: 1.2815515655446004}[q])
    samples = np.sort(rng.lognormal(0.0, sigma, size=(2000, 50)), axis=1)

    hits = sum(lo <= true_quantile <= hi for lo, hi in (quantile_ci(row, q) for row in samples))

    assert hits / 2000 >= 0.93


@pytest.mark.parametrize("n", [6, 7, 10, 29, 30, 31, 50, 99, 100, 101, 1000, 5000, 5001, 20000, 100000])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_quantile_ci_ranks_reach_95_percent_coverage_when_any_ranks_can(n: int, q: float) -> None:
    lo, hi = _ranks(n, q)

    coverage = rank_coverage(n, q, lo, hi)

    if (lo, hi) == (1, n):  # (min, max) only when no narrower pair of ranks reaches 95%
        assert rank_coverage(n, q, 2, n) < 0.95
        assert rank_coverage(n, q, 1, n - 1) < 0.95
    else:
        assert 0.95 <= coverage <= 0.98  # reaches the level without being needlessly wide


def test_normal_approximation_ranks_stay_close_to_exact_ranks() -> None:
    lo_exact, hi_exact = _ranks(5000, 0.9)

    lo_normal, hi_normal = _ranks(5001, 0.9)

    assert abs(lo_normal - lo_exact) <= 2
    assert abs(hi_normal - hi_exact) <= 3


def test_quantile_ci_too_few_samples_gives_min_max_and_one_sample_gives_the_point() -> None:
    five = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # best interval (min, max) covers the median 93.75% < 95%

    assert quantile_ci(five, 0.5) == (1.0, 5.0)
    assert quantile_ci(np.array([2.5]), 0.9) == (2.5, 2.5)
    with pytest.raises(ValueError):
        quantile_ci(np.array([]), 0.5)


def _back_to_back(latencies_ms: np.ndarray, t0_ns: int = 5_000_000_000) -> tuple[np.ndarray, np.ndarray]:
    lat_ns = (np.asarray(latencies_ms) * 1e6).astype(np.int64)
    ends = t0_ns + np.cumsum(lat_ns)
    return ends - lat_ns, ends


def test_latency_stats_of_1_to_100_ms() -> None:
    shuffled = np.random.default_rng(0).permutation(np.arange(1, 101, dtype=np.float64))
    start_ns, end_ns = _back_to_back(shuffled)

    stats = latency_stats(start_ns, end_ns)

    assert stats.n == 100
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.std_ms == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert (stats.min_ms, stats.max_ms) == (1.0, 100.0)
    lo, hi = stats.p50_ci95_ms or (math.nan, math.nan)
    assert 35.0 <= lo < 50.5 < hi <= 66.0  # in order they are a drift: see the test below
    assert stats.duration_s == pytest.approx(5.050)
    assert stats.throughput_ips == pytest.approx(100 / 5.050)
    assert stats.outliers == 0


def test_far_out_latencies_are_counted_but_kept() -> None:
    latencies = np.concatenate((np.full(98, 10.0) + np.linspace(0, 1, 98), [30.0, 500.0]))
    start_ns, end_ns = _back_to_back(latencies)

    stats = latency_stats(start_ns, end_ns)

    assert stats.outliers == 2
    assert stats.outlier_fraction == pytest.approx(0.02)
    assert stats.max_ms == pytest.approx(500.0)


def test_latency_stats_of_one_inference() -> None:
    start_ns, end_ns = np.array([1_000_000_000]), np.array([1_004_000_000])

    stats = latency_stats(start_ns, end_ns)

    assert stats.n == 1
    assert stats.p50_ms == stats.p99_ms == stats.min_ms == stats.max_ms == pytest.approx(4.0)
    assert stats.std_ms == 0.0
    assert stats.p50_ci95_ms is None  # one sample is no interval, least of all a 95% one
    assert stats.p50_interval.coverage is None
    assert latency_stats(start_ns, end_ns).to_dict()["p50_ci"] is None
    assert stats.throughput_ips == pytest.approx(250.0)


def test_latency_stats_of_no_inference_says_so() -> None:
    with pytest.raises(ValueError, match="no measured inferences"):
        latency_stats(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_latency_dict_has_the_result_document_keys() -> None:
    start_ns, end_ns = _back_to_back(np.array([2.0, 3.0, 4.0]))

    out = latency_stats(start_ns, end_ns).to_dict()

    design_keys = {"p50", "p90", "p99", "mean", "std", "min", "max", "p50_ci95"}
    assert design_keys | {"p90_ci95", "n", "outliers"} <= set(out)
    assert out["p50_ci95"] is None  # (min, max) of 3 covers the median only 75% of the time
    assert out["p50_ci"] == [2.0, 4.0]
    assert out["p50_ci_coverage"] == pytest.approx(0.75)
    assert out["p99_reliable"] is False


def test_running_p50_matches_median_on_100k() -> None:
    rng = np.random.default_rng(3)
    latency_ns = rng.integers(1_000_000, 9_000_000, size=100_000)

    p50 = running_p50_ms(latency_ns)

    assert p50 == pytest.approx(float(np.median(latency_ns)) / 1e6)
    assert running_p50_ms(latency_ns[:-1]) == pytest.approx(float(np.median(latency_ns[:-1])) / 1e6)
    assert running_p50_ms([3_000_000]) == pytest.approx(3.0)
    assert running_p50_ms([]) is None


def test_warmup_is_stable_only_after_latency_stops_falling() -> None:
    warming = list(np.linspace(20e6, 10e6, 60).astype(int))
    settled = [10_000_000 + (i % 7) * 20_000 for i in range(60)]

    assert not is_stable(warming, block=20)
    assert not is_stable(warming + settled[:20], block=20)
    assert is_stable(warming + settled, block=20)


def test_one_slow_outlier_does_not_break_stability() -> None:
    latencies = [10_000_000] * 60
    latencies[45] = 90_000_000

    assert is_stable(latencies, block=20)


def test_slow_drift_across_blocks_is_not_stable() -> None:
    # 3% per block: each neighbour pair is within 5%, the three blocks together are not.
    latencies = [10_000_000] * 20 + [10_300_000] * 20 + [10_609_000] * 20

    assert not is_stable(latencies, block=20, tolerance=0.05)
    assert not is_stable(latencies[:59], block=20)


def test_t_interval_on_batch_means_by_hand() -> None:
    # mean 3, s = sqrt(2.5), t(4) = 2.776: half-width 2.776 * 1.5811 / sqrt(5) = 1.9629.
    lo, hi = batch_means_ci95(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))

    assert lo == pytest.approx(3 - 1.9629, abs=1e-3)
    assert hi == pytest.approx(3 + 1.9629, abs=1e-3)
    assert t_critical_95(1) == 12.706
    assert t_critical_95(30) == 2.042
    assert t_critical_95(45) == 2.021
    assert t_critical_95(1000) == 1.96


def test_a_drifting_run_gets_no_p50_interval() -> None:
    # 1..100 ms in this order: every consecutive batch lies wholly on one side of the median.
    start_ns, end_ns = _back_to_back(np.arange(1, 101, dtype=np.float64))

    stats = latency_stats(start_ns, end_ns)

    assert stats.p50_ci95_ms is None
    assert stats.to_dict()["p50_ci95"] is None
    assert "too few for their correlation" in stats.p50_interval.method


def test_five_samples_report_the_coverage_they_have_not_95() -> None:
    interval = quantile_interval(np.array([3.0, 1.0, 5.0, 2.0, 4.0]), 0.5)

    assert (interval.low, interval.high) == (1.0, 5.0)
    assert interval.coverage == pytest.approx(1 - 2 / 32)  # 0.9375: misses only when all 5 fall on one side
    assert interval.as_ci95() is None


def test_autocorrelated_latency_widens_the_interval() -> None:
    rng = np.random.default_rng(9)
    noise = rng.standard_normal(2000)
    ar = np.empty(2000)
    ar[0] = noise[0]
    for t in range(1, 2000):
        ar[t] = 0.9 * ar[t - 1] + math.sqrt(1 - 0.81) * noise[t]
    independent = quantile_interval(np.exp(0.1 * noise), 0.5)
    correlated = quantile_interval(np.exp(0.1 * ar), 0.5)

    assert independent.low is not None and independent.high is not None
    assert correlated.low is not None and correlated.high is not None
    # n_eff of phi = 0.9 is about n / 13 for the median: the interval must be ~3x wider, not the same.
    assert (correlated.high - correlated.low) > 2.5 * (independent.high - independent.low)


def test_p99_is_unreliable_below_the_loadgen_style_minimum() -> None:
    # The largest of n samples bounds p99 from above with 95% confidence once 1 - 0.99^n >= 0.95.
    assert 1 - 0.99**P99_MIN_N >= 0.95 > 1 - 0.99 ** (P99_MIN_N - 1)
    below = latency_stats(*_back_to_back(np.full(P99_MIN_N - 1, 5.0)))
    enough = latency_stats(*_back_to_back(np.full(P99_MIN_N, 5.0)))

    assert below.to_dict()["p99_reliable"] is False
    assert enough.to_dict()["p99_reliable"] is True


def test_pooled_interval_over_repetitions_includes_the_between_run_spread() -> None:
    rng = np.random.default_rng(4)
    shifts = np.array([0.97, 1.0, 1.03, 0.99, 1.02])
    groups = [4.0 * s * np.exp(0.02 * rng.standard_normal(400)) for s in shifts]
    one_run = quantile_interval(np.concatenate(groups[1:2]), 0.5)

    pooled = pooled_quantile_interval(groups, 0.5)

    assert pooled.low is not None and pooled.high is not None and one_run.low is not None and one_run.high is not None
    assert pooled.low < float(np.median(np.concatenate(groups))) < pooled.high
    assert pooled.high - pooled.low > 3 * (one_run.high - one_run.low)
    assert pooled.as_ci95() is not None and "5 repetitions" in pooled.method
    assert pooled_quantile_interval(groups[:1], 0.5).low is None


def test_three_repetitions_get_a_t_interval_on_their_log_quantiles() -> None:
    # Three runs whose medians are 3.9, 4.0, 4.1 ms and whose own spread is tiny: t with 2 df on their logs.
    groups = [m * np.exp(0.001 * np.linspace(-1, 1, 101)) for m in (3.9, 4.0, 4.1)]
    logs = np.log([3.9, 4.0, 4.1])
    half = 4.303 * float(logs.std(ddof=1)) / math.sqrt(3)

    pooled = pooled_quantile_interval(groups, 0.5)

    assert pooled.low == pytest.approx(math.exp(logs.mean() - half), rel=1e-3)
    assert pooled.high == pytest.approx(math.exp(logs.mean() + half), rel=1e-3)


def test_a_short_run_warns_that_its_p99_is_unreliable() -> None:
    from host.analysis.validity import assess

    def entry(n: int) -> dict:
        start_ns, end_ns = _back_to_back(np.full(n, 5.0))
        return {
            "status": "ok",
            "n_inferences": n,
            "duration_s": 10.0,
            "latency_ms": latency_stats(start_ns, end_ns).to_dict(),
        }

    short = assess(entry(100), runs=100, min_duration_s=0)
    enough = assess(entry(P99_MIN_N), runs=100, min_duration_s=0)

    assert any(
        f"p99 from 100 inferences is unreliable: a tail percentile needs at least {P99_MIN_N}" in w
        for w in short["warnings"]
    )
    assert not any("p99" in w for w in enough["warnings"])


# Edges of the rules (issue 18: mutation testing found each of these unchecked).
def test_outliers_are_strictly_beyond_the_far_out_fence() -> None:
    from host.analysis.stats import count_outliers

    # Q1 = 2, Q3 = 4 (IQR 2): the fence is 4 + 3 * 2 = 10; a value on it is not an outlier.
    values = np.array([2.0] * 40 + [3.0] * 20 + [4.0] * 40 + [10.0, 10.000001])

    assert count_outliers(values) == 1


def test_latency_inputs_that_cannot_be_inferences_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"must be 1-D of equal length, got \(2,\) and \(3,\)"):
        latency_stats(np.array([0, 1]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"must be 1-D of equal length, got \(1, 2\) and \(1, 2\)"):
        latency_stats(np.array([[0, 1]]), np.array([[1, 2]]))
    with pytest.raises(ValueError, match=r"^an inference ends before it starts: end_ns < start_ns$"):
        latency_stats(np.array([0, 10]), np.array([5, 9]))


def test_zero_length_inferences_are_valid_and_a_zero_span_has_no_throughput() -> None:
    stats = latency_stats(np.array([100, 100]), np.array([100, 100]))

    assert stats.p50_ms == 0.0 and stats.duration_s == 0.0
    assert stats.throughput_ips is None


def test_latency_document_names_every_interval_and_the_outlier_share() -> None:
    starts = np.arange(1000, dtype=np.int64) * 10_000_000
    latency_ns = np.full(1000, 5_000_000, dtype=np.int64)
    latency_ns[::100] = 9_000_000  # ten slow ones: 1% outliers (IQR is 0)

    doc = latency_stats(starts, starts + latency_ns).to_dict()
    few = latency_stats(starts[:3], starts[:3] + 5_000_000).to_dict()

    assert doc["outliers"] == 10 and doc["outlier_fraction"] == pytest.approx(0.01)
    assert doc["p90_ci"] is not None and len(doc["p90_ci"]) == 2
    assert doc["p90_ci"][0] <= doc["p90"] <= doc["p90_ci"][1]
    assert doc["ci_method"] == latency_stats(starts, starts + latency_ns).p50_interval.method
    assert isinstance(doc["ci_method"], str) and doc["ci_method"]
    assert doc["p50_ci95"] is not None and doc["p50_ci95"][0] <= 5.0 <= doc["p50_ci95"][1]
    assert few["p50_ci95"] is None  # three inferences cannot give a genuine 95% interval


def test_running_median_of_an_even_count_averages_the_two_middle_values() -> None:
    assert running_p50_ms([4_000_000, 1_000_000, 3_000_000, 2_000_000]) == pytest.approx(2.5)
    assert running_p50_ms([5_000_000, 1_000_000, 9_000_000, 7_000_000, 2_000_000, 8_000_000]) == pytest.approx(6.0)


def test_stability_rule_edges() -> None:
    with pytest.raises(ValueError, match="need block >= 1 and blocks >= 2, got block=0, blocks=3"):
        is_stable([1] * 10, block=0)
    with pytest.raises(ValueError, match="need block >= 1 and blocks >= 2, got block=5, blocks=1"):
        is_stable([1] * 10, block=5, blocks=1)
    # block = 1 and blocks = 2 are allowed: the last two values themselves.
    assert is_stable([100, 104], block=1, blocks=2)
    assert not is_stable([100, 106], block=1, blocks=2)
    # A spread of exactly the tolerance is stable (5% of 100 = 5).
    assert is_stable([100, 105, 100], block=1, blocks=3, tolerance=0.05)
    # A zero median is never stable (no relative spread exists).
    assert not is_stable([0, 0, 0], block=1, blocks=3)
    # Spread 100% of the smallest median: 2 = 2 + 0 only when the rule divides by the smallest.
    assert not is_stable([2, 4, 2], block=1, blocks=3, tolerance=0.5)
