"""Latency statistics from measured inference windows: percentiles with intervals honest about coverage.

Every figure is in milliseconds unless its name says otherwise. The intervals themselves live in
host/analysis/intervals.py; the names other modules use are importable from here as well (``__all__``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from host.analysis.intervals import (
    EXACT_RANKS_MAX_N,
    QuantileInterval,
    batch_means_ci95,
    pooled_quantile_ci,
    pooled_quantile_interval,
    quantile_ci,
    quantile_interval,
    rank_coverage,
    t_critical_95,
)

__all__ = [
    "EXACT_RANKS_MAX_N",
    "OUTLIER_FENCE_IQR",
    "P99_MIN_N",
    "LatencyStats",
    "QuantileInterval",
    "batch_means_ci95",
    "count_outliers",
    "is_stable",
    "latency_stats",
    "pooled_quantile_ci",
    "pooled_quantile_interval",
    "quantile_ci",
    "quantile_interval",
    "rank_coverage",
    "running_p50_ms",
    "t_critical_95",
]

#: Tukey's "far out" fence: values above Q3 + 3·IQR are counted as outliers (reported, never dropped).
OUTLIER_FENCE_IQR = 3.0

#: p99 is shown as unreliable below this many inferences: the smallest n for which the largest sample is an
#: upper 95% bound of p99 (1 - 0.99^n >= 0.95), LoadGen's rule of a minimum count before a tail percentile.
P99_MIN_N = 299

_NS_PER_MS = 1e6

#: What one run's intervals can be trusted with: correlation times up to 1/REACH_FRACTION of the series. In the
#: calibration (bench/RESULTS.md (w)) every noise model within that reach covered at least 90%; beyond it, a
#: run cannot tell its slow part from a quieter series, and the repetitions must (said in ``estimates``).
REACH_FRACTION = 20


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
    #: The intervals with the coverage each actually has (see quantile_interval).
    p50_interval: QuantileInterval
    p90_interval: QuantileInterval
    p99_interval: QuantileInterval
    #: Inferences per second over the measured span; None when that span has zero length.
    throughput_ips: float | None
    #: Last end minus first start.
    duration_s: float
    #: Count of latencies above Q3 + 3·IQR (kept in every statistic above).
    outliers: int
    outlier_fraction: float

    @property
    def p50_ci95_ms(self) -> tuple[float, float] | None:
        """A genuine 95% interval for p50, or None (too few inferences for one)."""
        return self.p50_interval.as_ci95()

    @property
    def p90_ci95_ms(self) -> tuple[float, float] | None:
        return self.p90_interval.as_ci95()

    @property
    def p99_ci95_ms(self) -> tuple[float, float] | None:
        return self.p99_interval.as_ci95()

    @property
    def p99_reliable(self) -> bool:
        """False below P99_MIN_N inferences: the p99 shown is then little more than the largest samples."""
        return self.n >= P99_MIN_N

    def to_dict(self, block_means: int = 0) -> dict[str, Any]:
        """The result document's ``latency_ms`` object (DESIGN.md §4) plus p90/p99 intervals, n and outliers.

        ``p50_ci95``/``p90_ci95``/``p99_ci95`` are null unless they are genuine 95% intervals; ``p50_ci`` etc. are
        the intervals given with ``p50_ci_coverage`` etc. (e.g. 0.9375 for five samples) and ``ci_assumes`` what
        that coverage rests on ("independent values" when too few to check). ``estimates`` says what p50 and its
        interval are for. ``block_means`` (a phone's blocks, each value one block's mean): p50 is the median of
        the block means, which sits near the mean latency, not the per-inference median, and p90/p99 are null:
        percentiles of block means are not per-inference tails.
        """
        if block_means:
            return {
                **self._figures(),
                "p90": None,
                "p99": None,
                "p90_ci95": None,
                "p99_ci95": None,
                "p90_ci": None,
                "p99_ci": None,
                "p90_ci_coverage": None,
                "p99_ci_coverage": None,
                "p99_reliable": None,
                "estimates": (
                    f"median of {self.n} block means (each the mean of a runner block's inferences): close to the"
                    " mean latency, not the per-inference median; per-inference p90/p99 are not measured"
                ),
            }
        return {
            **self._figures(),
            "estimates": (
                f"percentiles of this run's inferences; the intervals allow for correlation up to about"
                f" {max(self.n // REACH_FRACTION, 1)} inferences (a twentieth of the run): slower variation is"
                " run-to-run, which only --repeat measures"
            ),
        }

    def _figures(self) -> dict[str, Any]:
        return {
            "p50": self.p50_ms,
            "p90": self.p90_ms,
            "p99": self.p99_ms,
            "mean": self.mean_ms,
            "std": self.std_ms,
            "min": self.min_ms,
            "max": self.max_ms,
            "p50_ci95": list(self.p50_ci95_ms) if self.p50_ci95_ms else None,
            "p90_ci95": list(self.p90_ci95_ms) if self.p90_ci95_ms else None,
            "p50_ci": self.p50_interval.as_list(),
            "p50_ci_coverage": self.p50_interval.coverage,
            "p90_ci": self.p90_interval.as_list(),
            "p90_ci_coverage": self.p90_interval.coverage,
            "p99_ci95": list(self.p99_ci95_ms) if self.p99_ci95_ms else None,
            "p99_ci": self.p99_interval.as_list(),
            "p99_ci_coverage": self.p99_interval.coverage,
            "ci_method": self.p50_interval.method,
            "ci_assumes": self.p50_interval.assumption or None,
            "p99_reliable": self.p99_reliable,
            "p99_min_n": P99_MIN_N,
            "n": self.n,
            "outliers": self.outliers,
            "outlier_fraction": self.outlier_fraction,
        }


def count_outliers(values: np.ndarray) -> int:
    """Values above Tukey's far-out fence Q3 + 3·IQR: slow stragglers (page faults, preemption)."""
    q1, q3 = np.percentile(values, [25, 75])
    return int(np.count_nonzero(values > q3 + OUTLIER_FENCE_IQR * (q3 - q1)))


def latency_stats(start_ns: np.ndarray, end_ns: np.ndarray, clusters: np.ndarray | None = None) -> LatencyStats:
    """Statistics of the measured inferences whose windows are [start_ns[i], end_ns[i]].

    Percentiles use linear interpolation between order statistics (numpy's default); std is the
    sample standard deviation (0 for one sample); throughput is n / (last end - first start). The
    intervals see the latencies in measurement order (by start), so autocorrelation is accounted for;
    ``clusters`` (one id per window, e.g. a token's generation) makes each cluster one correlated unit.
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
    order = np.argsort(starts, kind="stable")
    in_order_ms = latency_ns[order].astype(np.float64) / _NS_PER_MS
    groups = None if clusters is None else np.asarray(clusters)[order]
    lat_ms = np.sort(in_order_ms)
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
        p50_interval=quantile_interval(in_order_ms, 0.5, clusters=groups),
        p90_interval=quantile_interval(in_order_ms, 0.9, clusters=groups),
        p99_interval=quantile_interval(in_order_ms, 0.99, clusters=groups),
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
    the agent's rule in agent/measure/warmup.py. Looks at block x blocks values only, so it is cheap to call
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
