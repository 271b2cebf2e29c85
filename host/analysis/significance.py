"""Significance of a change between two runs (``host compare``): run-level intervals, and rank tests.

Verdicts come from run-level figures (DESIGN.md §7): a t interval over repetitions, a t interval from the
run-to-run spread of earlier runs, or (within-run evidence only) the two runs' own intervals; see
``RunLevelChange`` (the gate's test is host/analysis/gate.py). The Mann-Whitney U test and the Hodges-Lehmann shift on
per-inference samples stay for information: they treat thousands of inferences of one process as
independent evidence, which they are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from host.analysis.distributions import t_two_sided


def _as_samples(values: np.ndarray, name: str) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).ravel()
    if out.size == 0:
        raise ValueError(f"{name} has no samples")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def _u_sigma(n_a: int, n_b: int, pooled: np.ndarray) -> float:
    """Standard deviation of U under H0, corrected for ties: n_a n_b/12 x ((n+1) - sum(t^3-t)/(n(n-1)))."""
    n = n_a + n_b
    _, tie_counts = np.unique(pooled, return_counts=True)
    ties = float(np.sum(tie_counts.astype(np.float64) ** 3 - tie_counts))
    variance = n_a * n_b / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    return math.sqrt(max(variance, 0.0))


def mann_whitney_u(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U of ``a`` against ``b`` and its two-sided p-value.

    U counts the pairs with a_i > b_j (ties count 1/2), from average ranks of the pooled sample: one
    sort, O(n log n), fast for 100k samples. The p-value uses the normal approximation with tie
    correction and continuity correction (accurate from about 10 samples a side; the continuity
    correction keeps it on the conservative side below that). All values equal gives p = 1.
    """
    xa = _as_samples(a, "a")
    xb = _as_samples(b, "b")
    n_a, n_b = xa.size, xb.size
    pooled = np.concatenate((xa, xb))
    order = np.argsort(pooled, kind="mergesort")
    sorted_pooled = pooled[order]
    # Average ranks of tie groups: a group spanning sorted positions [i, j) gets rank (i + j + 1) / 2.
    starts = np.flatnonzero(np.concatenate(([True], sorted_pooled[1:] != sorted_pooled[:-1])))
    ends = np.concatenate((starts[1:], [pooled.size]))
    group_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(pooled.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    u_a = float(ranks[:n_a].sum()) - n_a * (n_a + 1) / 2.0
    sigma = _u_sigma(n_a, n_b, pooled) if n_a + n_b > 1 else 0.0
    if sigma == 0.0:
        return u_a, 1.0
    z = max(abs(u_a - n_a * n_b / 2.0) - 0.5, 0.0) / sigma
    return u_a, min(1.0, math.erfc(z / math.sqrt(2.0)))


def _count_diffs_at_most(a_sorted: np.ndarray, b: np.ndarray, d: float) -> int:
    """Number of pairs with b_j - a_i <= d, i.e. a_i >= b_j - d."""
    return int(a_sorted.size * b.size - np.searchsorted(a_sorted, b - d, side="left").sum())


def _kth_pairwise_diff(a_sorted: np.ndarray, b: np.ndarray, k: int) -> float:
    """The k-th smallest (1-based) of all b_j - a_i without forming the n_a x n_b differences.

    Bisection on the value with a counting step of O(n_b log n_a); stops when the bracket is within a
    part in 1e12 of the data's scale, far below any measurement resolution.
    """
    lo = float(b.min() - a_sorted[-1])
    hi = float(b.max() - a_sorted[0])
    if _count_diffs_at_most(a_sorted, b, lo) >= k:
        return lo
    tolerance = 1e-12 * max(abs(lo), abs(hi), 1e-300)
    for _ in range(200):
        if hi - lo <= tolerance:
            break
        mid = (lo + hi) / 2.0
        if _count_diffs_at_most(a_sorted, b, mid) >= k:
            hi = mid
        else:
            lo = mid
    return hi


def hodges_lehmann_shift(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Hodges-Lehmann shift of ``b`` relative to ``a`` (median of all b_j - a_i) and its interval.

    The interval is the distribution-free one that inverts the Mann-Whitney test: the C-th smallest and
    C-th largest pairwise differences, C = floor(n_a n_b / 2 - z sigma_U) (normal approximation with
    tie correction), so no bootstrap is needed. It assumes the two distributions differ by a shift.
    """
    xa = np.sort(_as_samples(a, "a"))
    xb = _as_samples(b, "b")
    pairs = xa.size * xb.size
    if pairs % 2:
        shift = _kth_pairwise_diff(xa, xb, (pairs + 1) // 2)
    else:
        shift = (_kth_pairwise_diff(xa, xb, pairs // 2) + _kth_pairwise_diff(xa, xb, pairs // 2 + 1)) / 2.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    sigma = _u_sigma(xa.size, xb.size, np.concatenate((xa, xb))) if pairs > 1 else 0.0
    c = max(1, math.floor(pairs / 2.0 - z * sigma))
    return shift, (_kth_pairwise_diff(xa, xb, c), _kth_pairwise_diff(xa, xb, pairs - c + 1))


def intervals_overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """True when the closed intervals [lo, hi] share at least one point."""
    return max(first[0], second[0]) <= min(first[1], second[1])


@dataclass
class Comparison:
    """Candidate against base for one metric."""

    #: (candidate - base) / base in percent, of the medians (or of the point estimates).
    change_pct: float
    #: Two-sided p-value; None when judged by interval overlap (no per-sample data).
    p_value: float | None
    significant: bool
    #: Significant, in the worse direction, and beyond ``min_change_pct``.
    regression: bool
    base: float = math.nan
    candidate: float = math.nan


def _relative_change_pct(base: float, candidate: float) -> float:
    if base == 0.0:
        return 0.0 if candidate == 0.0 else math.copysign(math.inf, candidate)
    return (candidate - base) / abs(base) * 100.0


def _is_regression(change_pct: float, significant: bool, higher_is_worse: bool, min_change_pct: float) -> bool:
    worse = change_pct > 0 if higher_is_worse else change_pct < 0
    return significant and worse and abs(change_pct) > min_change_pct


def compare_metric(
    base_samples: np.ndarray,
    cand_samples: np.ndarray,
    higher_is_worse: bool = True,
    alpha: float = 0.01,
    min_change_pct: float = 0.0,
) -> Comparison:
    """Change of the median from base to candidate, significant when Mann-Whitney p < ``alpha``.

    With tens of thousands of samples even a 0.1% shift is significant, so callers gate on
    ``min_change_pct`` (``--fail-on-regression PCT``) as well as on significance.
    """
    base = _as_samples(base_samples, "base_samples")
    cand = _as_samples(cand_samples, "cand_samples")
    base_median, cand_median = float(np.median(base)), float(np.median(cand))
    change = _relative_change_pct(base_median, cand_median)
    _, p_value = mann_whitney_u(base, cand)
    significant = p_value < alpha
    return Comparison(
        change_pct=change,
        p_value=p_value,
        significant=significant,
        regression=_is_regression(change, significant, higher_is_worse, min_change_pct),
        base=base_median,
        candidate=cand_median,
    )


def compare_estimates(
    base: float,
    base_ci: tuple[float, float],
    candidate: float,
    cand_ci: tuple[float, float],
    higher_is_worse: bool = True,
    min_change_pct: float = 0.0,
) -> Comparison:
    """Compare two point estimates with 95% intervals (energy per inference): significant when the
    intervals do not overlap (conservative: non-overlap of two 95% intervals is roughly p < 0.006)."""
    change = _relative_change_pct(base, candidate)
    significant = not intervals_overlap(base_ci, cand_ci)
    return Comparison(
        change_pct=change,
        p_value=None,
        significant=significant,
        regression=_is_regression(change, significant, higher_is_worse, min_change_pct),
        base=base,
        candidate=candidate,
    )


# --- Run-level verdicts (`host compare`): the repetition, not the inference, is the unit of evidence. ---

#: Evidence behind a run-level interval.
EVIDENCE_REPETITIONS = "repetitions"
EVIDENCE_HISTORY = "history"
EVIDENCE_WITHIN_RUN = "within-run"


@dataclass(frozen=True)
class RunLevelChange:
    """Candidate against base for one metric, from run-level figures: a change and its 95% interval, in %.

    ``log_change``, ``se_log`` and ``df`` are the log ratio, its standard error and degrees of freedom the
    interval was made from (None where it was not made that way): the gate's one-sided test and the smallest
    change the comparison could detect use them (host/analysis/gate.py).
    """

    change_pct: float
    #: 95% interval of the change in percent; None when there is nothing to build one from.
    ci_pct: tuple[float, float] | None
    #: EVIDENCE_REPETITIONS, EVIDENCE_HISTORY or EVIDENCE_WITHIN_RUN.
    evidence: str
    detail: str = ""
    log_change: float | None = None
    se_log: float | None = None
    df: float | None = None

    @property
    def significant(self) -> bool:
        """The interval excludes no change."""
        return self.ci_pct is not None and (self.ci_pct[0] > 0.0 or self.ci_pct[1] < 0.0)


def _pct(log_ratio: float | np.ndarray) -> Any:
    return np.expm1(log_ratio) * 100.0


def _positive_logs(values: np.ndarray, name: str) -> np.ndarray:
    x = _as_samples(values, name)
    if np.any(x <= 0):
        raise ValueError(f"{name} must be positive for a ratio")
    return np.log(x)


def _from_log(d: float, se: float, df: float, evidence: str, detail: str = "") -> RunLevelChange:
    half = t_two_sided(0.95, df) * se if se > 0 else 0.0
    ci = (float(_pct(d - half)), float(_pct(d + half)))
    return RunLevelChange(float(_pct(d)), ci, evidence, detail, d, se, df)


def repetitions_change(base_values: np.ndarray, cand_values: np.ndarray) -> RunLevelChange:
    """Change between two sets of repetition figures (e.g. each repetition's p50) with a Welch t 95% interval.

    The change is the ratio of the geometric means (the mean log figure of each side); the interval is Welch's
    t on the log figures, degrees of freedom by Welch-Satterthwaite. Exact for normal log figures at any
    number of repetitions (K=3 a side: 2 to 4 df), where a percentile bootstrap over 3 values cannot reach
    its tails (88.7% for a "95%" interval at K=3, bench/RESULTS.md (w)); unequal spreads on the two sides
    (a noisier candidate) are allowed for.
    """
    base_logs = _positive_logs(base_values, "base_values")
    cand_logs = _positive_logs(cand_values, "cand_values")
    k_b, k_c = base_logs.size, cand_logs.size
    if min(k_b, k_c) < 2:
        raise ValueError("a t interval over repetitions needs at least 2 repetitions a side")
    d = float(cand_logs.mean() - base_logs.mean())
    se, df = _welch(base_logs, cand_logs)
    detail = f"t over {k_b} + {k_c} repetitions, df {df:.1f}"
    return _from_log(d, se, df, EVIDENCE_REPETITIONS, detail)


def _welch(base_logs: np.ndarray, cand_logs: np.ndarray) -> tuple[float, float]:
    """Standard error of the difference of two means of log figures and its Welch-Satterthwaite df."""
    k_b, k_c = base_logs.size, cand_logs.size
    var_b, var_c = float(base_logs.var(ddof=1)) / k_b, float(cand_logs.var(ddof=1)) / k_c
    se = math.sqrt(var_b + var_c)
    df = float(k_b + k_c - 2) if se == 0.0 else se**4 / (var_b**2 / (k_b - 1) + var_c**2 / (k_c - 1))
    return se, df


def log_spread(groups: list[np.ndarray]) -> tuple[float, int] | None:
    """Run-to-run spread: the pooled standard deviation of log figures within groups, and its degrees of freedom.

    Each group holds figures that should agree (the repetitions of one run; or single-repetition runs of
    the same model, device and settings, A/A pairs among them). None when the groups give fewer than 2
    degrees of freedom.
    """
    ss, df = 0.0, 0
    for group in groups:
        logs = np.log(np.asarray(group, dtype=np.float64))
        logs = logs[np.isfinite(logs)]
        if logs.size >= 2:
            ss += float(np.sum((logs - logs.mean()) ** 2))
            df += int(logs.size - 1)
    if df < 2:
        return None
    return math.sqrt(ss / df), df


def history_change(
    base_values: np.ndarray, cand_values: np.ndarray, spread_log_sd: float, spread_df: int
) -> RunLevelChange:
    """Change of the geometric means with a Student-t 95% interval whose spread comes from earlier runs.

    For sides with too few repetitions of their own: the run-to-run standard deviation the store has seen
    (log_spread) scales as sqrt(1/k_base + 1/k_cand), with t on the history's degrees of freedom.
    """
    base_logs = _positive_logs(base_values, "base_values")
    cand_logs = _positive_logs(cand_values, "cand_values")
    d = float(cand_logs.mean() - base_logs.mean())
    se = spread_log_sd * math.sqrt(1 / base_logs.size + 1 / cand_logs.size)
    detail = f"run-to-run spread {spread_log_sd * 100:.2g}% from history (df {spread_df})"
    return _from_log(d, se, spread_df, EVIDENCE_HISTORY, detail)


def within_run_change(
    base: float, base_ci: tuple[float, float] | None, cand: float, cand_ci: tuple[float, float] | None
) -> RunLevelChange:
    """Change from one run each, with only the runs' own 95% intervals: they know nothing of run-to-run spread.

    The interval combines the two intervals' half-widths on the log scale (normal approximation); None
    when either run has no interval or a figure is not positive.
    """
    if base <= 0 or cand <= 0:
        return RunLevelChange(_relative_change_pct(base, cand), None, EVIDENCE_WITHIN_RUN, "no ratio")
    d = math.log(cand / base)
    if base_ci is None or cand_ci is None or min(base_ci[0], cand_ci[0]) <= 0:
        return RunLevelChange(float(_pct(d)), None, EVIDENCE_WITHIN_RUN, "no interval")
    z = NormalDist().inv_cdf(0.975)
    se = math.hypot(*(math.log(hi / lo) / (2 * z) for lo, hi in (base_ci, cand_ci)))
    return _from_log(d, se, math.inf, EVIDENCE_WITHIN_RUN)


def segments_change(base: float, base_segments: np.ndarray, cand: float, cand_segments: np.ndarray) -> RunLevelChange:
    """Change from one run each whose own interval was withheld, judged against the runs' segments.

    A run's interval is withheld when its noise wanders more slowly than the run can resolve (a thermal
    drift, a slow DVFS state): the figure is still measured, but no 95% interval of it can be claimed. The
    change can still be set against how much the figure moved within each run: each run is cut into
    contiguous segments, the figure computed on each, and the log ratio of the runs' figures gets the Welch
    standard error of the segments' mean log figures (batch means with few, long batches). Slow wander makes
    neighbouring segments alike, so this interval is narrower than the truth when the wander is slower than a
    segment: it is within-run evidence only, labelled so, and a gate never fails on it below the noise floor.
    """
    base_logs = _positive_logs(base_segments, "base_segments")
    cand_logs = _positive_logs(cand_segments, "cand_segments")
    if min(base_logs.size, cand_logs.size) < 2 or base <= 0 or cand <= 0:
        raise ValueError("a segments interval needs two positive segments a side and positive figures")
    se, df = _welch(base_logs, cand_logs)
    detail = (
        f"no interval of its own (the noise wanders beyond what the runs resolve): t over their "
        f"{base_logs.size} + {cand_logs.size} segments, df {df:.1f}"
    )
    return _from_log(math.log(cand / base), se, df, EVIDENCE_WITHIN_RUN, detail)
