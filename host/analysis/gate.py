"""The regression gate (`--fail-on-regression PCT`): a one-sided test per gated metric, Holm across them, and its power.

The question a gate asks is one-sided: is the candidate worse than the base by more than PCT? Each gated
metric tests H0 "worse by at most PCT" against "worse by more", from the log ratio of its run-level change,
its standard error and degrees of freedom (host/analysis/significance.py): p = P(T > (d - log(1 + PCT)) / se).
Several gated metrics (p50, energy, TTFT, decode rate, on every device) each add their own chance of a
false failure, so the family is held at GATE_ALPHA with Holm's step-down: sorted p-values, the i-th smallest
of m against GATE_ALPHA / (m - i + 1), stopping at the first that does not pass. Why one-sided at 5% across
the family rather than each metric's two-sided 95% interval (2.5% a side, uncontrolled across metrics): it
answers the question asked, keeps the whole gate's false failures at 5% however many metrics it watches, and
buys back power the two-sided level gave away (bench/RESULTS.md (j), per metric).

A gate also says what it could have caught: ``detectable_pct`` is the smallest true change that this
comparison would fail with probability DETECT_POWER, from its own standard error and degrees of freedom
(the spread of its repetitions and their number K) at the strictest Holm level, GATE_ALPHA / m.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from host.analysis.distributions import t_cdf, t_quantile
from host.analysis.significance import RunLevelChange

#: The gate's family-wise false-failure rate (one-sided, across every gated metric of the comparison).
GATE_ALPHA = 0.05
#: "Reliably detect": the probability with which a change of detectable_pct would fail the gate.
DETECT_POWER = 0.8


def _threshold(gate_pct: float, higher_is_worse: bool) -> float | None:
    """The log ratio at the gate: log(1 + PCT) upwards, log(1 - PCT) downwards (None: no drop that large)."""
    if higher_is_worse:
        return math.log1p(gate_pct / 100.0)
    return math.log1p(-gate_pct / 100.0) if gate_pct < 100.0 else None


def gate_p_value(change: RunLevelChange, higher_is_worse: bool, gate_pct: float) -> float | None:
    """One-sided p-value of "worse by more than ``gate_pct``%"; None without a standard error to test with."""
    threshold = _threshold(gate_pct, higher_is_worse)
    if change.log_change is None or change.se_log is None or change.df is None or threshold is None:
        return None
    worse_by = change.log_change - threshold if higher_is_worse else threshold - change.log_change
    if change.se_log == 0.0:
        return 0.0 if worse_by > 0 else 1.0
    return 1.0 - t_cdf(worse_by / change.se_log, change.df)


def holm_rejections(p_values: Sequence[float | None], alpha: float = GATE_ALPHA) -> list[bool]:
    """Holm's step-down over the p-values that exist (None never rejects): which hypotheses are rejected."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    rejected = [False] * len(p_values)
    m = len(tested)
    for rank, (p, index) in enumerate(tested):
        if p > alpha / (m - rank):
            break
        rejected[index] = True
    return rejected


def detectable_pct(
    change: RunLevelChange, higher_is_worse: bool, gate_pct: float, tests: int, alpha: float = GATE_ALPHA
) -> float | None:
    """The smallest true change (in %, signed in the worse direction) this comparison fails with DETECT_POWER.

    A true log change delta fails when the one-sided test at alpha / tests rejects, which happens with
    probability DETECT_POWER once delta lies (t_(1-alpha/tests) + t_(DETECT_POWER)) standard errors beyond the
    gate's threshold (the shifted-t approximation of the noncentral t). None without a standard error.
    """
    threshold = _threshold(gate_pct, higher_is_worse)
    if change.se_log is None or change.df is None or threshold is None or tests < 1:
        return None
    reach = (t_quantile(1.0 - alpha / tests, change.df) + t_quantile(DETECT_POWER, change.df)) * change.se_log
    return math.expm1(threshold + reach if higher_is_worse else threshold - reach) * 100.0
