"""Whether the measured phase was stationary: latency that moved inside it (an unfinished warmup, a board heating
up, a hump while something else ran, an oscillating governor, a late step) biases every statistic while each
interval still looks tight.

A change-point test that does not assume the change is monotone: the measured inferences, in order, are cut
into DRIFT_BLOCKS blocks of equal count; the log latency, winsorized at the run's 5th and 95th percentiles so
that stragglers cannot carry it, is compared between blocks. Its noise is each block's own long-run variance
(autocovariances over a self-consistent window inside the block, host/analysis/autocorr.py, averaged over the
blocks): correlation within a block (two-state DVFS, fast jitter) is noise, a difference between blocks is
not. Two statistics, so that both spread-out and local changes are seen: an F test of all block means
(oscillations, ramps) and the largest single block's deviation (a hump, a late step), each Bonferroni-halved.
A run drifts when that p-value is below TREND_P AND the blocks' 20%-trimmed mean latencies span more than
DRIFT_TOLERANCE: a tiny but real change is not worth invalidating a run for. False alarms and power are
measured in bench/RESULTS.md (w): at most 1% on stationary heavy-tailed and two-state latency.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from host.analysis.autocorr import WINDOW_FACTOR
from host.analysis.distributions import regularized_beta, t_cdf

#: Blocks of equal inference count.
DRIFT_BLOCKS = 10
#: Fewest inferences per block for the test to run at all (short runs are judged by other rules).
MIN_PER_BLOCK = 10
#: p-value below which the change counts as real.
TREND_P = 0.01
#: Span of the blocks' trimmed mean latencies (relative) that makes a drifting run invalid.
DRIFT_TOLERANCE = 0.05
#: Share trimmed from each end of a block for its typical latency.
_TRIM = 0.2


def _block_long_run_variance(blocks: np.ndarray) -> tuple[float, float]:
    """Mean over blocks (rows) of each block's long-run variance around its own mean, and its degrees of freedom.

    Each block's autocovariances are summed over Sokal's self-consistent window extended by Geyer's positive
    pairs (at most a third of the block), corrected for the block's own mean (the sum estimates
    (1 - (2M+1)/m) sigma^2). Degrees of freedom: the blocks' values over 2M+1 (a truncated lag window).
    """
    count, m = blocks.shape
    centred = blocks - blocks.mean(axis=1, keepdims=True)
    size = 1 << (2 * m - 1).bit_length()
    spectrum = np.fft.rfft(centred, size, axis=1)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size, axis=1)[:, :m] / (m - np.arange(m))
    limit = max(1, m // 3)
    lags = np.arange(1, limit + 1)
    variances, windows = [], []
    for row in acov:
        if row[0] <= 0.0:
            variances.append(0.0)
            windows.append(1)
            continue
        sigma2, window = float(row[0]), 1
        for _ in range(3):  # choose the window on autocovariances corrected by the last estimate of Var(mean)
            g = row[: limit + 2] + sigma2 / m
            tau_at = 1.0 + 2.0 * np.cumsum(g[1 : limit + 1] / g[0])
            consistent = np.flatnonzero(lags >= WINDOW_FACTOR * tau_at)
            pairs = g[: 2 * ((limit + 1) // 2)].reshape(-1, 2).sum(axis=1)
            negative = np.flatnonzero(pairs[1:] <= 0.0)
            sokal = int(lags[consistent[0]]) if consistent.size else limit
            geyer = int(2 * (negative[0] + 1) - 1) if negative.size else limit
            window = min(max(1, sokal, geyer), limit)
            summed = float(row[0] + 2.0 * row[1 : window + 1].sum())
            sigma2 = max(summed, float(row[0])) / (1.0 - (2 * window + 1) / m)
        variances.append(sigma2)
        windows.append(window)
    return float(np.mean(variances)), count * m / (2.0 * float(np.median(windows)) + 1.0)


def _f_sf(f: float, d1: float, d2: float) -> float:
    """P(F > f) for an F(d1, d2) variable."""
    return regularized_beta(d2 / 2.0, d1 / 2.0, d2 / (d2 + d1 * f)) if f > 0 else 1.0


def change_p_value(latency: np.ndarray, blocks: int = DRIFT_BLOCKS) -> float:
    """p-value of "the blocks' typical latencies differ" for latencies in measurement order (see module doc)."""
    logs = np.log(np.asarray(latency, dtype=np.float64))
    low, high = np.quantile(logs, [0.05, 0.95])
    m = logs.size // blocks
    rows = np.clip(logs, low, high)[: m * blocks].reshape(blocks, m)
    sigma2, df = _block_long_run_variance(rows)
    means = rows.mean(axis=1)
    spread = float(np.sum((means - means.mean()) ** 2))
    if sigma2 <= 0.0:
        return 1.0 if spread == 0.0 else 0.0
    p_all = _f_sf(m * spread / (blocks - 1) / sigma2, blocks - 1, df)
    z = float(np.max(np.abs(means - means.mean()))) / math.sqrt(sigma2 / m * (blocks - 1) / blocks)
    p_one = min(1.0, blocks * 2.0 * (1.0 - t_cdf(z, df)))
    return min(1.0, 2.0 * min(p_all, p_one))


def latency_drift(start_ns: np.ndarray, end_ns: np.ndarray) -> dict[str, Any] | None:
    """{"drifting": bool, "swing", "trend_p", "drift", block and quarter p50s}; None when too short for the test.

    ``swing`` is the span of the blocks' trimmed mean latencies relative to the lowest; ``drift`` the change of
    the median from the first to the last quarter (a monotone trend's size, 0 for a hump that comes back).
    """
    starts = np.asarray(start_ns, dtype=np.int64)
    order = np.argsort(starts, kind="stable")
    latency = (np.asarray(end_ns, dtype=np.int64)[order] - starts[order]).astype(np.float64)
    if latency.size < DRIFT_BLOCKS * MIN_PER_BLOCK or np.any(latency <= 0):
        return None
    p = change_p_value(latency)
    m = latency.size // DRIFT_BLOCKS
    rows = np.sort(latency[: m * DRIFT_BLOCKS].reshape(DRIFT_BLOCKS, m), axis=1)
    cut = int(_TRIM * m)
    typical = rows[:, cut : m - cut].mean(axis=1)
    swing = float(typical.max() / typical.min() - 1.0)
    quarter = latency.size // 4
    first, last = float(np.median(latency[:quarter])), float(np.median(latency[-quarter:]))
    return {
        "drift": (last - first) / first,
        "swing": swing,
        "lowest_block_ms": float(typical.min()) / 1e6,
        "highest_block_ms": float(typical.max()) / 1e6,
        "first_quarter_p50_ms": first / 1e6,
        "last_quarter_p50_ms": last / 1e6,
        "trend_p": p,
        "drifting": bool(p < TREND_P and swing > DRIFT_TOLERANCE),
    }
