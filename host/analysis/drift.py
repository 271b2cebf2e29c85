"""Whether the measured phase was stationary: a latency trend inside it (an unfinished warmup, a board
heating up) biases every statistic while each interval still looks tight.

The measured span is cut into DRIFT_BLOCKS equal time blocks; a Mann-Kendall test on the blocks'
median latencies says whether there is a monotone trend, and the first and last quarters' medians say
how large it is. A run drifts when the trend is significant AND larger than DRIFT_TOLERANCE: noise alone
rarely orders eight medians, and a tiny but consistent trend is not worth invalidating a run for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Equal time blocks of the measured span.
DRIFT_BLOCKS = 8
#: Fewest inferences per block for the test to run at all (short runs are judged by other rules).
MIN_PER_BLOCK = 5
#: Two-sided Mann-Kendall p-value below which the trend counts as real.
TREND_P = 0.01
#: Relative change of the median from the first to the last quarter that makes a drifting run invalid.
DRIFT_TOLERANCE = 0.05


def mann_kendall_p(values: np.ndarray) -> tuple[int, float]:
    """Mann-Kendall S statistic and its two-sided p-value (normal approximation with continuity).

    Conservative for 8 values: at S = 22 it gives 0.009 where the exact p is 0.0055.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    s = int(sum(np.sign(x[j] - x[i]) for i in range(n - 1) for j in range(i + 1, n)))
    var = n * (n - 1) * (2 * n + 5) / 18.0
    if s == 0 or var == 0:
        return s, 1.0
    z = (abs(s) - 1) / math.sqrt(var)
    return s, math.erfc(z / math.sqrt(2))


def latency_drift(start_ns: np.ndarray, end_ns: np.ndarray) -> dict[str, Any] | None:
    """{"drift": relative change first->last quarter, "trend_p", "drifting": bool}; None when too short."""
    starts = np.asarray(start_ns, dtype=np.int64)
    order = np.argsort(starts, kind="stable")
    starts = starts[order]
    latency = (np.asarray(end_ns, dtype=np.int64)[order] - starts).astype(np.float64)
    if starts.size < DRIFT_BLOCKS * MIN_PER_BLOCK or starts[-1] <= starts[0]:
        return None
    edges = np.linspace(starts[0], starts[-1] + 1, DRIFT_BLOCKS + 1)
    block = np.clip(np.searchsorted(edges, starts, side="right") - 1, 0, DRIFT_BLOCKS - 1)
    counts = np.bincount(block, minlength=DRIFT_BLOCKS)
    if counts.min() < MIN_PER_BLOCK:
        return None  # inferences far from evenly spread in time: the blocks would not be comparable
    medians = np.array([np.median(latency[block == b]) for b in range(DRIFT_BLOCKS)])
    _, p = mann_kendall_p(medians)
    quarter = DRIFT_BLOCKS // 4
    first = float(np.median(latency[block < quarter]))
    last = float(np.median(latency[block >= DRIFT_BLOCKS - quarter]))
    drift = (last - first) / first if first > 0 else 0.0
    return {
        "drift": drift,
        "first_quarter_p50_ms": first / 1e6,
        "last_quarter_p50_ms": last / 1e6,
        "trend_p": p,
        "drifting": bool(p < TREND_P and abs(drift) > DRIFT_TOLERANCE),
    }
