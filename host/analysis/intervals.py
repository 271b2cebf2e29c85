"""Confidence intervals for latency figures: order statistics, batch means over consecutive inferences, bootstraps.

Distribution-free throughout (latency is skewed and multi-modal). Each interval says the coverage it has:
autocorrelated inferences (drift, frequency and thermal state) and small samples are accounted for or
reported, never given a 95% label they do not earn. host/analysis/stats.py builds the latency summary on these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: Up to this many samples the ranks of a quantile interval come from the exact binomial distribution;
#: above it a normal approximation with continuity correction and one rank of margin on each side.
EXACT_RANKS_MAX_N = 5000

#: Two-sided 95% Student-t critical values by degrees of freedom (1..30, then a few coarser steps).
_T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
    18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
    26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student-t critical value for ``df`` degrees of freedom.

    Exact table for df 1..30; between the coarse steps above 30 the value of the next smaller tabulated
    df is used (slightly conservative); 1.96 above 120.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df > 120:
        return 1.96
    return _T95[max(k for k in _T95 if k <= df)]


def batch_means_ci95(block_values: np.ndarray, center: float | None = None) -> tuple[float, float]:
    """95% Student-t interval from K batch (block) means: center ± t(K-1) · s / √K.

    ``center`` defaults to the mean of the blocks; callers pass the overall estimate instead so that
    the point estimate always lies inside its interval (equal to the block mean when blocks are equal).
    """
    values = np.asarray(block_values, dtype=np.float64)
    k = values.size
    if k < 2:
        raise ValueError(f"a batch-means interval needs at least 2 blocks, got {k}")
    mid = float(values.mean()) if center is None else float(center)
    half = t_critical_95(k - 1) * float(values.std(ddof=1)) / math.sqrt(k)
    return (mid - half, mid + half)


def _binomial_cdf(n: int, q: float) -> np.ndarray:
    """P(B <= k) for k = 0..n, B ~ Binomial(n, q), from the pmf recurrence in log space (no scipy)."""
    k = np.arange(n, dtype=np.float64)
    log_ratio = np.log((n - k) / (k + 1.0)) + math.log(q / (1.0 - q))
    log_pmf = np.concatenate(([n * math.log1p(-q)], n * math.log1p(-q) + np.cumsum(log_ratio)))
    pmf = np.exp(log_pmf - log_pmf.max())
    cdf = np.cumsum(pmf / pmf.sum())
    cdf[-1] = 1.0
    return cdf


def rank_coverage(n: int, q: float, lower_rank: int, upper_rank: int) -> float:
    """Exact probability that [x_(lower_rank), x_(upper_rank)] (1-based) covers the q-quantile.

    With B the number of samples at or below the true quantile, the interval covers it exactly when
    lower_rank <= B <= upper_rank - 1 (continuous distributions; ties only make it more conservative).
    """
    cdf = _binomial_cdf(n, q)
    return float(cdf[upper_rank - 1] - cdf[lower_rank - 1])


def _exact_ranks(n: int, q: float, confidence: float) -> tuple[int, int]:
    """Equal-tailed ranks where possible; a tail cut off by the sample extreme gives its slack away."""
    alpha = 1.0 - confidence
    cdf = _binomial_cdf(n, q)
    # Lower miss with rank l is P(B <= l-1) = cdf[l-1]; upper miss with rank u is 1 - cdf[u-1].
    lower_ok = np.flatnonzero(cdf[:n] <= alpha / 2)
    upper_ok = np.flatnonzero(1.0 - cdf[:n] <= alpha / 2)
    if lower_ok.size and upper_ok.size:
        return int(lower_ok[-1]) + 1, int(upper_ok[0]) + 1
    if not lower_ok.size:  # even the minimum misses more than alpha/2 below: spend the rest above
        budget = alpha - cdf[0]
        upper_ok = np.flatnonzero(1.0 - cdf[:n] <= budget)
        return 1, (int(upper_ok[0]) + 1 if upper_ok.size else n)
    budget = alpha - (1.0 - cdf[n - 1])
    lower_ok = np.flatnonzero(cdf[:n] <= budget)
    return (int(lower_ok[-1]) + 1 if lower_ok.size else 1), n


def _normal_ranks(n: int, q: float, confidence: float) -> tuple[int, int]:
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    sigma = math.sqrt(n * q * (1.0 - q))
    # Continuity-corrected bounds, widened by one rank each side so coverage stays >= confidence
    # despite the binomial's skew at extreme quantiles.
    lower = math.floor(n * q - z * sigma + 0.5) - 1
    upper = math.ceil(n * q + z * sigma + 0.5) + 1
    return max(lower, 1), min(upper, n)


def quantile_ci(sorted_values: np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the q-quantile from two order statistics of sorted samples.

    Ranks come from the binomial distribution of the number of samples below the true quantile: exact
    up to EXACT_RANKS_MAX_N samples, normal approximation (continuity-corrected, one rank of margin)
    above. Coverage is >= ``confidence`` whenever such ranks exist. When the sample is too small for
    any pair of order statistics to reach that coverage (e.g. n <= 5 for the median at 95%, n < 29 for
    p90 at 95%), (min, max) is returned: the widest interval the data allow, with coverage below the
    nominal level. n = 1 gives (x, x).
    """
    values = np.asarray(sorted_values)
    n = values.size
    if n == 0:
        raise ValueError("quantile_ci needs at least one sample")
    if not 0.0 < q < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"q and confidence must lie in (0, 1), got q={q}, confidence={confidence}")
    if n == 1:
        return (float(values[0]), float(values[0]))
    lower, upper = _exact_ranks(n, q, confidence) if n <= EXACT_RANKS_MAX_N else _normal_ranks(n, q, confidence)
    return (float(values[lower - 1]), float(values[upper - 1]))


#: Below this many inferences the quantile interval comes from order statistics alone (independence assumed);
#: from it on, from batch means over consecutive inferences (at least BATCHES_MIN batches).
BATCH_MEANS_MIN_N = 50
BATCHES_MIN = 7
BATCHES_MAX = 30
#: A batch spans at least this many autocorrelation times, so that neighbouring batch means are nearly
#: independent. With 7..30 batches and the bias correction below, the p50 interval covered 94-96% of
#: simulated AR(1) latency series (phi 0, 0.5, 0.9; n 200 and 1000; tests/test_compare_simulation.py).
BATCH_AUTOCORR_TIMES = 5
#: pooled_quantile_ci resamples at most this many inferences of each repetition (evenly thinned beyond).
POOLED_BOOTSTRAP_MAX_PER_GROUP = 2000


@dataclass(frozen=True)
class QuantileInterval:
    """An interval for a quantile and the coverage it actually has.

    ``coverage`` is >= the requested confidence when the data reach it, the lower exact coverage of the
    widest interval the data allow when they do not (order statistics, independent samples), or None
    with ``low``/``high`` None when no interval can be given (one sample; or autocorrelated data too
    short for batch means to reach the confidence). ``method`` names how it was made.
    """

    low: float | None
    high: float | None
    coverage: float | None
    method: str

    def as_ci95(self) -> tuple[float, float] | None:
        """The interval only when it is a genuine 95% interval (never a narrower-coverage one relabelled)."""
        if self.low is None or self.high is None or self.coverage is None or self.coverage < 0.95:
            return None
        return (self.low, self.high)

    def as_list(self) -> list[float] | None:
        return None if self.low is None or self.high is None else [self.low, self.high]


def rank_autocorrelation_time(values: np.ndarray) -> float:
    """Integrated autocorrelation time of a series, from the lag-1 correlation of its ranks as AR(1).

    tau = (1 + rho) / (1 - rho): 1 for independent samples, 19 for phi = 0.9. Ranks so that one slow
    straggler cannot dominate; rho clipped to [0, 0.99] (negative correlation only helps precision).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size < 3:
        return 1.0
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)
    centred = ranks - ranks.mean()
    denom = float(np.dot(centred, centred))
    if denom == 0.0:
        return 1.0
    rho = min(max(float(np.dot(centred[1:], centred[:-1])) / denom, 0.0), 0.99)
    return (1.0 + rho) / (1.0 - rho)


def _order_statistic_interval(sorted_values: np.ndarray, q: float, confidence: float) -> QuantileInterval:
    n = sorted_values.size
    lower, upper = _exact_ranks(n, q, confidence) if n <= EXACT_RANKS_MAX_N else _normal_ranks(n, q, confidence)
    coverage = rank_coverage(n, q, lower, upper) if n <= EXACT_RANKS_MAX_N else confidence
    return QuantileInterval(
        float(sorted_values[lower - 1]), float(sorted_values[upper - 1]), coverage, "order statistics"
    )


def quantile_interval(values_in_order: np.ndarray, q: float, confidence: float = 0.95) -> QuantileInterval:
    """Interval for the q-quantile of latencies given in measurement order, honest about its coverage.

    Consecutive inferences are not independent (drift, frequency and thermal state), so from
    BATCH_MEANS_MIN_N samples on the precision of the empirical CDF at the sample quantile comes from
    batch means: the indicator x <= quantile is averaged over b batches of consecutive inferences, each
    BATCH_AUTOCORR_TIMES autocorrelation times long (b clamped to BATCHES_MIN..BATCHES_MAX), its standard
    error (corrected for the batch-means bias) times Student-t with b-1 degrees of freedom gives a
    band of probabilities, and the order statistics at its ends are the interval. When that band runs
    past the sample's ends no interval is given (null, coverage null). Below BATCH_MEANS_MIN_N: exact
    binomial order statistics (independence assumed), or (min, max) with its lower exact coverage; one
    sample gives no interval.
    """
    values = np.asarray(values_in_order, dtype=np.float64)
    n = values.size
    if n == 0:
        raise ValueError("quantile_interval needs at least one sample")
    if not 0.0 < q < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"q and confidence must lie in (0, 1), got q={q}, confidence={confidence}")
    if n == 1:
        return QuantileInterval(None, None, None, "none (one sample)")
    sorted_values = np.sort(values)
    if n < BATCH_MEANS_MIN_N:
        return _order_statistic_interval(sorted_values, q, confidence)
    tau = rank_autocorrelation_time(values)
    batches = int(min(max(n // math.ceil(BATCH_AUTOCORR_TIMES * tau), BATCHES_MIN), BATCHES_MAX))
    size = n // batches
    estimate = float(np.quantile(values, q))
    below = (values[: size * batches] <= estimate).astype(np.float64).reshape(batches, size).mean(axis=1)
    # Batch means under-estimate the variance by about (b+1)/n times the sum of k-weighted covariances
    # (Song & Schmeiser), 2 rho / ((1 - rho)(1 + rho)) variances for AR(1): undone here, capped at 30% (a
    # larger cap pushed short strongly correlated runs past the sample's ends: null intervals).
    rho = (tau - 1.0) / (tau + 1.0)
    bias = min((batches + 1) / n * 2.0 * rho / ((1.0 - rho) * (1.0 + rho)), 0.3)
    se = float(below.std(ddof=1)) / math.sqrt(batches) / math.sqrt(1.0 - bias)
    t = _t_critical(batches - 1, confidence)
    # [x_(l), x_(u)] covers the quantile exactly when l <= #(x <= quantile) <= u - 1.
    lower = math.ceil(n * (q - t * se))
    upper = math.floor(n * (q + t * se)) + 1
    method = f"batch means ({batches} batches of {size}, autocorrelation time {tau:.1f})"
    if lower < 1 or upper > n:
        return QuantileInterval(None, None, None, method + ": too few inferences for the interval")
    return QuantileInterval(float(sorted_values[lower - 1]), float(sorted_values[upper - 1]), confidence, method)


def _t_critical(df: int, confidence: float) -> float:
    """Two-sided Student-t critical value: the table at 95%, else a Cornish-Fisher expansion of the normal."""
    if confidence == 0.95:
        return t_critical_95(df)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def expanded_tail(k: int, confidence: float = 0.95) -> float:
    """Tail probability for a percentile bootstrap over k groups that still covers (Hesterberg's expansion).

    A percentile bootstrap over few units under-covers by about sqrt((k-1)/k) and the normal-vs-t gap;
    using the tail Phi(-sqrt(k/(k-1)) t_{k-1}) instead of (1-confidence)/2 corrects both.
    """
    if k < 2:
        return (1.0 - confidence) / 2
    return NormalDist().cdf(-math.sqrt(k / (k - 1)) * _t_critical(k - 1, confidence))


def pooled_quantile_ci(
    groups_in_order: Sequence[np.ndarray],
    q: float,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Interval for the q-quantile pooled over repetitions: a hierarchical (two-stage) bootstrap.

    Each bootstrap draws the repetitions with replacement, then within each drawn repetition a moving-block
    resample of its inferences (blocks of about 2 autocorrelation times, at least n^(1/3)), and takes the
    q-quantile of everything drawn. Percentiles of those, with the tails expanded for the number of
    repetitions (see expanded_tail). Repetitions longer than POOLED_BOOTSTRAP_MAX_PER_GROUP are thinned.
    None with fewer than two repetitions of at least BATCHES_MIN inferences (use quantile_interval on the
    one run instead). Seeded: the same data give the same interval.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in groups_in_order if np.asarray(g).size >= BATCHES_MIN]
    # Long repetitions are thinned to every s-th inference so a bootstrap costs the same at 100k inferences
    # as at 2k: fewer samples only widen each repetition's share of the interval, never narrow it.
    groups = [g[:: math.ceil(g.size / POOLED_BOOTSTRAP_MAX_PER_GROUP)] for g in groups]
    k = len(groups)
    if k < 2:
        return None
    rng = np.random.default_rng(seed)
    blocks = [max(math.ceil(2 * rank_autocorrelation_time(g)), round(g.size ** (1 / 3)), 1) for g in groups]
    estimates = np.empty(n_boot)
    for b in range(n_boot):
        drawn = []
        for i in rng.integers(0, k, size=k):
            g, length = groups[i], min(blocks[i], groups[i].size)
            count = math.ceil(g.size / length)
            starts = rng.integers(0, g.size - length + 1, size=count)
            drawn.append(g[(starts[:, None] + np.arange(length)[None, :]).ravel()[: g.size]])
        estimates[b] = np.quantile(np.concatenate(drawn), q)
    tail = expanded_tail(k, confidence)
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return (float(low), float(high))
