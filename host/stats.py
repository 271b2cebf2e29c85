"""Latency statistics from measured inference windows: percentiles with order-statistic intervals.

Every interval here is distribution-free (latency is skewed and multi-modal, so no normal model of the
samples themselves), and every figure is in milliseconds unless its name says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

#: Up to this many samples the ranks of a quantile interval come from the exact binomial distribution;
#: above it a normal approximation with continuity correction and one rank of margin on each side.
EXACT_RANKS_MAX_N = 5000

#: Tukey's "far out" fence: values above Q3 + 3·IQR are counted as outliers (reported, never dropped).
OUTLIER_FENCE_IQR = 3.0

#: Two-sided 95% Student-t critical values by degrees of freedom (1..30, then a few coarser steps).
_T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
    18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
    26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip

_NS_PER_MS = 1e6


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


@dataclass
class LatencyStats:
    """Summary of measured inference latencies; everything in ms unless the name says otherwise."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ci95_ms: tuple[float, float]
    p90_ci95_ms: tuple[float, float]
    #: Inferences per second over the measured span; None when that span has zero length.
    throughput_ips: float | None
    #: Last end minus first start.
    duration_s: float
    #: Count of latencies above Q3 + 3·IQR (kept in every statistic above).
    outliers: int
    outlier_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """The result document's ``latency_ms`` object (DESIGN.md §4) plus p90_ci95, n and outliers."""
        return {
            "p50": self.p50_ms,
            "p90": self.p90_ms,
            "p99": self.p99_ms,
            "mean": self.mean_ms,
            "std": self.std_ms,
            "min": self.min_ms,
            "max": self.max_ms,
            "p50_ci95": list(self.p50_ci95_ms),
            "p90_ci95": list(self.p90_ci95_ms),
            "n": self.n,
            "outliers": self.outliers,
            "outlier_fraction": self.outlier_fraction,
        }


def count_outliers(values: np.ndarray) -> int:
    """Values above Tukey's far-out fence Q3 + 3·IQR: slow stragglers (page faults, preemption)."""
    q1, q3 = np.percentile(values, [25, 75])
    return int(np.count_nonzero(values > q3 + OUTLIER_FENCE_IQR * (q3 - q1)))


def latency_stats(start_ns: np.ndarray, end_ns: np.ndarray) -> LatencyStats:
    """Statistics of the measured inferences whose windows are [start_ns[i], end_ns[i]].

    Percentiles use linear interpolation between order statistics (numpy's default); std is the
    sample standard deviation (0 for one sample); throughput is n / (last end - first start).
    """
    starts = np.asarray(start_ns, dtype=np.int64)
    ends = np.asarray(end_ns, dtype=np.int64)
    if starts.shape != ends.shape or starts.ndim != 1:
        raise ValueError(f"start_ns and end_ns must be 1-D of equal length, got {starts.shape} and {ends.shape}")
    n = int(starts.size)
    if n == 0:
        raise ValueError("no measured inferences: latency statistics need at least one")
    latency_ns = ends - starts
    if np.any(latency_ns < 0):
        raise ValueError("an inference ends before it starts: end_ns < start_ns")
    lat_ms = np.sort(latency_ns.astype(np.float64) / _NS_PER_MS)
    p50, p90, p99 = (float(v) for v in np.percentile(lat_ms, [50, 90, 99]))
    duration_s = float(ends.max() - starts.min()) / 1e9
    outliers = count_outliers(lat_ms)
    return LatencyStats(
        n=n,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=float(lat_ms.mean()),
        std_ms=float(lat_ms.std(ddof=1)) if n > 1 else 0.0,
        min_ms=float(lat_ms[0]),
        max_ms=float(lat_ms[-1]),
        p50_ci95_ms=quantile_ci(lat_ms, 0.5),
        p90_ci95_ms=quantile_ci(lat_ms, 0.9),
        throughput_ips=n / duration_s if duration_s > 0 else None,
        duration_s=duration_s,
        outliers=outliers,
        outlier_fraction=outliers / n,
    )


def running_p50_ms(latency_ns: np.ndarray | Sequence[int]) -> float | None:
    """Median latency in ms for a live display; None before the first sample.

    np.partition is O(n) (about 1 ms on 100k samples), so this can run several times a second.
    """
    values = np.asarray(latency_ns, dtype=np.float64)
    n = values.size
    if n == 0:
        return None
    mid = n // 2
    if n % 2:
        return float(np.partition(values, mid)[mid]) / _NS_PER_MS
    part = np.partition(values, [mid - 1, mid])
    return float(part[mid - 1] + part[mid]) / 2.0 / _NS_PER_MS


def is_stable(
    latency_ns: np.ndarray | Sequence[int], block: int = 20, tolerance: float = 0.05, blocks: int = 3
) -> bool:
    """Warmup rule: True when the last ``blocks`` blocks of ``block`` latencies have settled.

    Rule: take the median of each of the last ``blocks`` consecutive blocks; latency is stable when the
    spread of those medians (max - min) is at most ``tolerance`` times the smallest. Medians so one
    slow outlier (a page fault) neither ends nor prolongs warmup; the spread over several blocks, not
    only the last two, so a slow steady drift (caches, clocks ramping) is caught. With blocks=2 this is
    the agent's rule in agent/warmup.py. Looks at block x blocks values only, so it is cheap to call
    after every inference. False until enough values exist.
    """
    if block < 1 or blocks < 2:
        raise ValueError(f"need block >= 1 and blocks >= 2, got block={block}, blocks={blocks}")
    if len(latency_ns) < block * blocks:
        return False
    tail = np.asarray(latency_ns[-block * blocks :], dtype=np.float64).reshape(blocks, block)
    medians = np.median(tail, axis=1)
    smallest = float(medians.min())
    if smallest <= 0:
        return False
    return (float(medians.max()) - smallest) / smallest <= tolerance
