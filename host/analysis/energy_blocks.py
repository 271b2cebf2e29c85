"""Where a job's energy is integrated, and the units that say how precisely it is known.

Energy per inference integrates only the inferences' own windows (DESIGN.md §7). A worker's inferences run
back to back, so that is their span, first start to last end. A phone measures in blocks, one runner
invocation each (agent/adb/backend.py), and between two blocks the runner starts again: process start,
model load, its own warm-up. That start-up is not inference and is left out: each block's span counts, the
gaps between them do not (``runner_blocks``). Inside a block the windows are back to back (block means) or
microseconds apart (onnxruntime_perf_test's profile); a gap longer than BLOCK_GAP_MIN_NS and
BLOCK_GAP_FACTOR times the median gap is a runner start.

For the interval, the inferences are cut into units of consecutive inferences, never across a block's edge,
each spanning at least UNIT_MIN_SAMPLES sensor samples, as many units as that allows (``unit_edges``). Energy
per inference is a ratio over those units, and its variance comes from their residuals as a correlated
series (host/analysis/autocorr.py ratio_precision): power noise that is correlated over a second, or a
level that wanders, widens the interval instead of hiding in ten "independent" blocks.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from host.analysis.intervals import t_critical_95

#: A gap between consecutive inference windows longer than both of these is a runner start between blocks.
BLOCK_GAP_MIN_NS = 2_000_000
BLOCK_GAP_FACTOR = 10.0
#: Each unit of the interval spans at least this many samples of the sparsest summed rail.
UNIT_MIN_SAMPLES = 2


def runner_blocks(starts_ns: np.ndarray, ends_ns: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [i, j) of the blocks of windows (sorted by start) separated by runner starts."""
    starts = np.asarray(starts_ns, dtype=np.int64)
    ends = np.maximum.accumulate(np.asarray(ends_ns, dtype=np.int64))
    if starts.size < 2:
        return [(0, int(starts.size))]
    gaps = starts[1:] - ends[:-1]
    threshold = max(BLOCK_GAP_MIN_NS, BLOCK_GAP_FACTOR * float(np.median(np.maximum(gaps, 0))))
    cuts = (np.flatnonzero(gaps > threshold) + 1).tolist()
    bounds = [0, *cuts, int(starts.size)]
    return list(itertools.pairwise(bounds))


def block_spans(starts_ns: np.ndarray, ends_ns: np.ndarray, blocks: list[tuple[int, int]]) -> np.ndarray:
    """(start, end) in ns of each block: its first window's start to its last window's end."""
    ends = np.maximum.accumulate(np.asarray(ends_ns, dtype=np.int64))
    return np.array([(int(starts_ns[i]), int(ends[j - 1])) for i, j in blocks], dtype=np.int64).reshape(-1, 2)


def unit_edges(
    starts_ns: np.ndarray, ends_ns: np.ndarray, blocks: list[tuple[int, int]], units: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About ``units`` units of consecutive inferences, shared among blocks by their counts (at least one each).

    Returns each unit's (start_ns, end_ns, inferences): a unit runs from its first inference's start to the
    next unit's first start, or to its block's end, so the units tile exactly the blocks' spans.
    """
    spans = block_spans(starts_ns, ends_ns, blocks)
    n = sum(j - i for i, j in blocks)
    begin, finish, counts = [], [], []
    for (i, j), (_, block_end) in zip(blocks, spans, strict=True):
        share = max(1, min(j - i, round(units * (j - i) / n)))
        idx = i + np.round(np.linspace(0, j - i, share + 1)).astype(np.int64)
        idx = np.unique(idx)
        edges = np.append(np.asarray(starts_ns, dtype=np.int64)[idx[:-1]], block_end)
        begin.append(edges[:-1])
        finish.append(edges[1:])
        counts.append(np.diff(idx))
    return np.concatenate(begin), np.concatenate(finish), np.concatenate(counts).astype(np.float64)


def dynamic_interval(
    center: float, se_measure: float, df_measure: float, se_idle_term: float, df_idle: float
) -> tuple[tuple[float, float], float, float]:
    """95% interval of dynamic energy from two independent error sources (delta method).

    Dynamic energy per inference is E/n - P_idle·T/n: its variance is the measured blocks' variance plus
    (T/n)² · Var(P_idle). ``se_idle_term`` is that second standard error already scaled by T/n. The
    degrees of freedom come from Welch-Satterthwaite, floored (conservative). Returns (interval, se, df).
    """
    se = math.hypot(se_measure, se_idle_term)
    if se == 0.0:
        return (center, center), 0.0, math.inf
    df = se**4 / (se_measure**4 / df_measure + se_idle_term**4 / df_idle)
    half = (t_critical_95(max(1, math.floor(df))) if math.isfinite(df) else 1.96) * se
    return (center - half, center + half), se, df


def blocks_half_width_j(block_j: np.ndarray, counts: np.ndarray) -> float:
    """Half-width (J per inference) of a 95% t interval over runner blocks taken as independent units.

    The ratio sum(J) / sum(inferences) linearised, its variance B/(B-1) sum(residual^2) / n^2, t with B-1 df.
    """
    n, k = float(counts.sum()), block_j.size
    residual = block_j - float(block_j.sum()) / n * counts
    se = math.sqrt(k / (k - 1) * float(np.sum(residual**2))) / n
    return float(t_critical_95(k - 1) * se)
