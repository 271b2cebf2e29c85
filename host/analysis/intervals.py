"""Confidence intervals for latency figures: order statistics placed by the precision of a correlated series.

Distribution-free throughout (latency is skewed and multi-modal): an interval is two order statistics, and
where they sit comes from how precisely the empirical CDF at the quantile is known, which for inferences in
measurement order (drift, frequency and thermal state) is a correlated series (host/analysis/autocorr.py), for
tokens the generations they belong to, and for repetitions the spread between them. Each interval says the
coverage it has: too few values to check their correlation give an interval whose coverage assumes
independence, never labelled 95%. host/analysis/stats.py builds the latency summary on these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from host.analysis.autocorr import MIN_VALUES, MeanPrecision, mean_precision
from host.analysis.distributions import t_two_sided

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


@dataclass(frozen=True)
class QuantileInterval:
    """An interval for a quantile and the coverage it actually has.

    ``coverage`` is the confidence reached when the data's own correlation was accounted for; with too few values
    to check that correlation it is the exact coverage *if the values were independent*, and ``assumption`` says
    so (such an interval is never given as a 95% interval: see as_ci95). ``low``/``high``/``coverage`` are None
    when no interval can be given (one value; a correlation the series is too short for; a band past the
    sample's ends), and ``method`` says why. ``estimates`` names the quantity the interval is for.
    """

    low: float | None
    high: float | None
    coverage: float | None
    method: str
    assumption: str = ""

    def as_ci95(self) -> tuple[float, float] | None:
        """The interval only when it is a genuine 95% interval (never a narrower-coverage one relabelled, never
        one whose coverage rests on an unchecked independence)."""
        if self.low is None or self.high is None or self.coverage is None or self.coverage < 0.95 or self.assumption:
            return None
        return (self.low, self.high)

    def as_list(self) -> list[float] | None:
        return None if self.low is None or self.high is None else [self.low, self.high]


def _order_statistic_interval(sorted_values: np.ndarray, q: float, confidence: float) -> QuantileInterval:
    n = sorted_values.size
    lower, upper = _exact_ranks(n, q, confidence) if n <= EXACT_RANKS_MAX_N else _normal_ranks(n, q, confidence)
    coverage = rank_coverage(n, q, lower, upper) if n <= EXACT_RANKS_MAX_N else confidence
    return QuantileInterval(
        float(sorted_values[lower - 1]),
        float(sorted_values[upper - 1]),
        coverage,
        f"order statistics: {n} values are too few to check how correlated they are",
        "independent values",
    )


def _rank_band(
    sorted_values: np.ndarray, q: float, se: float, df: float, confidence: float, method: str
) -> QuantileInterval:
    """Order statistics at the ends of the probability band q ± t(df) se (se of the empirical CDF at the quantile)."""
    n = sorted_values.size
    t = t_two_sided(confidence, df)
    # [x_(l), x_(u)] covers the quantile exactly when l <= #(x <= quantile) <= u - 1.
    lower = math.ceil(n * (q - t * se))
    upper = math.floor(n * (q + t * se)) + 1
    if lower < 1 or upper > n:
        why = ": too few values for the interval (its band runs past them)"
        return QuantileInterval(None, None, None, method + why)
    return QuantileInterval(float(sorted_values[lower - 1]), float(sorted_values[upper - 1]), confidence, method)


def _share_precision(values: np.ndarray, q: float, clusters: np.ndarray | None) -> tuple[MeanPrecision, str]:
    """Precision of the share of values at or below the sample q-quantile, as a correlated series (or over clusters)."""
    n = values.size
    below = (values <= float(np.quantile(values, q))).astype(np.float64)
    if clusters is None:
        return mean_precision(below), "values"
    starts = np.flatnonzero(np.concatenate(([True], clusters[1:] != clusters[:-1])))
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    hits = np.add.reduceat(below, starts)
    # The ratio hits / values linearised: each cluster's residual count, a series over the clusters.
    residual = mean_precision(hits - below.mean() * counts)
    scale2 = (starts.size / n) ** 2
    var = None if residual.var_of_mean is None else residual.var_of_mean * scale2
    return replace(residual, var_of_mean=var), f"{starts.size} clusters"


def quantile_interval(
    values_in_order: np.ndarray,
    q: float,
    confidence: float = 0.95,
    clusters: np.ndarray | None = None,
) -> QuantileInterval:
    """Interval for the q-quantile of values given in measurement order, honest about its coverage.

    Consecutive values are not independent (drift, frequency and thermal state), so the precision of the
    empirical CDF at the sample quantile comes from the indicator x <= quantile as a correlated series: its
    mean's variance from the autocovariances over a self-consistent window (host/analysis/autocorr.py), a
    Student-t band of probabilities with the estimate's own degrees of freedom, and the order statistics at the
    band's ends. Away from the median the indicator is sparse and its correlation poorly seen, so the median
    indicator's correlation is used there too when it is larger. With ``clusters`` (e.g. the generation each
    token belongs to, contiguous) the series is the clusters' residual counts: values of one cluster are one
    correlated unit (tokens of one generation share its speed) and neighbouring clusters may be correlated.
    No interval when the correlation outlasts what the series can resolve or the band runs past the sample's
    ends (``method`` says which). Below MIN_VALUES values (or clusters): exact binomial order statistics whose
    coverage assumes independence (``assumption``), never a 95% interval; one value gives none.
    """
    values = np.asarray(values_in_order, dtype=np.float64)
    n = values.size
    if n == 0:
        raise ValueError("quantile_interval needs at least one sample")
    if not 0.0 < q < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"q and confidence must lie in (0, 1), got q={q}, confidence={confidence}")
    if n == 1:
        return QuantileInterval(None, None, None, "none (one sample)")
    cluster_ids = None if clusters is None else np.asarray(clusters)
    if cluster_ids is not None and cluster_ids.shape != values.shape:
        raise ValueError(f"clusters must match the values, got {cluster_ids.shape} and {values.shape}")
    sorted_values = np.sort(values)
    units = n if cluster_ids is None else int(np.count_nonzero(cluster_ids[1:] != cluster_ids[:-1])) + 1
    if units < MIN_VALUES:
        if cluster_ids is None:
            return _order_statistic_interval(sorted_values, q, confidence)
        why = f"none: {units} clusters are too few to check how correlated they are"
        return QuantileInterval(None, None, None, why)
    precision, unit = _share_precision(values, q, cluster_ids)
    own = precision.var_of_mean
    if own is not None and q != 0.5:
        median = _share_precision(values, 0.5, cluster_ids)[0]
        if median.var_of_mean is None:
            precision = replace(precision, var_of_mean=None, reason=median.reason)
        elif median.var_of_mean * q * (1.0 - q) / 0.25 > own:
            scaled = median.var_of_mean * q * (1.0 - q) / 0.25
            precision = replace(precision, var_of_mean=scaled, tau=median.tau, df=min(precision.df, median.df))
    if precision.var_of_mean is None:
        return QuantileInterval(None, None, None, f"none: {precision.reason}")
    method = f"autocorrelation of the {unit} (tau {precision.tau:.1f}, {precision.window} lags, df {precision.df:.0f})"
    return _rank_band(sorted_values, q, math.sqrt(precision.var_of_mean), precision.df, confidence, method)


def pooled_quantile_interval(
    groups_in_order: Sequence[np.ndarray], q: float, confidence: float = 0.95
) -> QuantileInterval:
    """Interval for the q-quantile pooled over repetitions (the process, run-to-run shifts included).

    Two intervals over the K repetitions as units, and the hull of both (with the pooled estimate):
      - a Student-t interval (K-1 df) on the repetitions' own log q-quantiles: exact for normal log figures at
        any K >= 2, so K=3 gets a 95% interval (t with 2 df) where a 3-value bootstrap cannot resolve its tails;
      - the pooled quantile's own band: each repetition's share of values at or below it, a ratio estimator
        whose variance comes from the spread between repetitions (K/(K-1) times the summed squared residual
        counts), t with K-1 df, and the pooled order statistics at its ends (when they lie inside the data).
    The first is for a typical run's quantile, the second for the quantile of everything the runs sampled;
    they differ by little unless the runs differ a lot, and the hull covers both (bench/RESULTS.md (w)).
    None with fewer than two non-empty repetitions or a quantile that is not positive.
    """
    groups = [np.asarray(g, dtype=np.float64).ravel() for g in groups_in_order]
    groups = [g for g in groups if g.size]
    k = len(groups)
    if k < 2:
        return QuantileInterval(None, None, None, "none: fewer than two repetitions")
    pooled = np.concatenate(groups)
    n = pooled.size
    estimate = float(np.quantile(pooled, q))
    per_run = np.array([np.quantile(g, q) for g in groups])
    if np.any(per_run <= 0.0) or estimate <= 0.0:
        return QuantileInterval(None, None, None, "none: a repetition's quantile is not positive")
    logs = np.log(per_run)
    half = t_two_sided(confidence, k - 1) * float(logs.std(ddof=1)) / math.sqrt(k)
    low, high = min(math.exp(logs.mean() - half), estimate), max(math.exp(logs.mean() + half), estimate)
    hits = np.array([np.count_nonzero(g <= estimate) for g in groups], dtype=np.float64)
    counts = np.array([g.size for g in groups], dtype=np.float64)
    residual = hits - hits.sum() / n * counts
    se = math.sqrt(k / (k - 1) * float(np.sum(residual**2))) / n
    band = _rank_band(np.sort(pooled), q, se, k - 1, confidence, "")
    if band.low is not None and band.high is not None:
        low, high = min(low, band.low), max(high, band.high)
    method = f"{k} repetitions: t ({k - 1} df) on their log quantiles, with the pooled share's spread"
    return QuantileInterval(low, high, confidence, method)


def pooled_quantile_ci(
    groups_in_order: Sequence[np.ndarray], q: float, confidence: float = 0.95
) -> tuple[float, float] | None:
    """The pooled interval as (low, high) when there is one (see pooled_quantile_interval)."""
    interval = pooled_quantile_interval(groups_in_order, q, confidence)
    return None if interval.low is None or interval.high is None else (interval.low, interval.high)
