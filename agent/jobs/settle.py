"""The settle phase's rule (DESIGN.md §2): wait until the board is cool or no longer cooling, say which ended it.

Boards and phones idle at very different temperatures: a fanless board or a phone's CPU zone commonly sits at
35-45 °C doing nothing, above a generic profile's settle limit, and would never get below it. So the wait
ends on whichever comes first:

- **cool**: the hottest zone is at or below the profile's `settle_temp_c`;
- **stable**: it is no longer cooling (its least-squares trend over the last `window_s` seconds falls less than
  STABLE_RATE_C_PER_MIN) and it is below the trip-related limit (the zones' lowest throttling trip point, else
  the profile's `max_temp_c`): waiting longer would not make it cooler;
- **timeout**: the wait's time is up. The run is then "not settled" only when the board was still cooling or
  hot at or beyond the trip-related limit; a board that was neither is settled (rule "timeout").

One rule for both paths: the local worker's (agent/jobs/execution.py) and a phone's (agent/adb/backend.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Cooling slower than this (°C per minute, least-squares trend) counts as no longer cooling: 0.5 °C in 20 s.
STABLE_RATE_C_PER_MIN = 1.5
#: Seconds of readings the trend is judged over; a third of the wait's timeout when that is shorter, so that
#: a short wait can still end on stability.
STABLE_WINDOW_S = 20.0
#: The readings must span at least this share of the window before the trend is judged.
_WINDOW_COVERED = 0.9
#: Seconds between readings (fewer when the window is short, so that it holds several).
POLL_S = 1.0

COOL, STABLE, TIMEOUT, NO_READING = "cool", "stable", "timeout", "no-reading"


@dataclass(frozen=True)
class SettlePlan:
    """What one settle wait is judged by (°C, seconds)."""

    limit_c: float
    timeout_s: float
    #: The trip-related limit: at or above it the board throttles soon, so stability alone does not settle it.
    hot_limit_c: float | None = None

    @property
    def window_s(self) -> float:
        return min(STABLE_WINDOW_S, self.timeout_s / 3)

    @property
    def poll_s(self) -> float:
        return min(POLL_S, self.window_s / 4)


@dataclass(frozen=True)
class SettleOutcome:
    """How the wait ended: the rule that ended it, whether the board counts as settled, and the phase detail."""

    rule: str
    settled: bool
    detail: str
    temp_c: float | None = None


@dataclass
class SettleWatch:
    """The readings of one wait (monotonic seconds, hottest zone °C) and the judgement on them."""

    plan: SettlePlan
    readings: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t_s: float, temp_c: float | None) -> None:
        if temp_c is not None:
            self.readings.append((t_s, temp_c))

    @property
    def latest_c(self) -> float | None:
        return self.readings[-1][1] if self.readings else None

    def cooling_rate_c_per_min(self, need_full_window: bool = True) -> float | None:
        """How fast the zone cools (positive = cooling), from the readings of the last window; None before the
        readings cover it (or, at the end of a wait, before they hold two distinct times)."""
        if len(self.readings) < 2:
            return None
        now = self.readings[-1][0]
        recent = [(t, c) for t, c in self.readings if t >= now - self.plan.window_s]
        if len(recent) < 2 or (need_full_window and now - self.readings[0][0] < _WINDOW_COVERED * self.plan.window_s):
            return None
        slope_c_per_s = _slope([t for t, _ in recent], [c for _, c in recent])
        return None if slope_c_per_s is None else -slope_c_per_s * 60.0

    def _hot(self, temp_c: float) -> bool:
        return self.plan.hot_limit_c is not None and temp_c >= self.plan.hot_limit_c

    def ended(self) -> str | None:
        """The rule that ends the wait now (COOL or STABLE), None while it goes on."""
        temp_c = self.latest_c
        if temp_c is None:
            return None
        if temp_c <= self.plan.limit_c:
            return COOL
        rate = self.cooling_rate_c_per_min()
        if rate is not None and rate < STABLE_RATE_C_PER_MIN and not self._hot(temp_c):
            return STABLE
        return None

    def outcome(self, waited_s: float) -> SettleOutcome:
        """The verdict when the wait ends (by a rule, or at its timeout after `waited_s` seconds)."""
        plan = self.plan
        temp_c = self.latest_c
        if temp_c is None:
            return SettleOutcome(NO_READING, True, "settled at unknown: no zone reads a temperature")
        limit = f"limit {plan.limit_c:.1f} C"
        rule = self.ended()
        if rule == COOL:
            return SettleOutcome(COOL, True, f"settled at {temp_c:.1f} C: at or below the {limit}", temp_c)
        rate = self.cooling_rate_c_per_min(need_full_window=rule is not None)
        # The trend as a temperature change (cooling shows negative); a flat one reads +0.0, never -0.0.
        trend = "" if rate is None else f"{round(-rate, 1) + 0.0:+.1f} C/min over {plan.window_s:.3g} s, "
        if rule == STABLE:
            return SettleOutcome(STABLE, True, f"settled at {temp_c:.1f} C: no longer cooling ({trend}{limit})", temp_c)
        after = f"{temp_c:.1f} C after {waited_s:.0f} s"
        if self._hot(temp_c):
            return SettleOutcome(
                TIMEOUT,
                False,
                f"not settled: {after}, at or above the {plan.hot_limit_c:.1f} C trip-related limit ({trend}{limit})",
                temp_c,
            )
        if rate is None or rate >= STABLE_RATE_C_PER_MIN:
            why = "still cooling" if rate is not None else "cooling unknown: too few readings"
            return SettleOutcome(TIMEOUT, False, f"not settled: {after}, {why} ({trend}{limit})", temp_c)
        detail = f"settled at {temp_c:.1f} C: not cooling at the timeout ({trend}{limit})"
        return SettleOutcome(TIMEOUT, True, detail, temp_c)


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (plain Python: an idle agent loads no numpy); None when xs do not vary."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx <= 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx


def wait(
    plan: SettlePlan,
    read_c: Callable[[], float | None],
    cancelled: threading.Event,
    end_by: float,
) -> SettleOutcome | None:
    """Read the hottest zone until a rule ends the wait or `end_by` (monotonic s) passes; None when cancelled.

    `end_by` may come before the plan's timeout (the job's own deadline); the verdict then uses what was read.
    """
    start = time.monotonic()
    watch = SettleWatch(plan)
    watch.add(start, read_c())
    if watch.latest_c is None:
        return watch.outcome(0.0)
    while watch.ended() is None and time.monotonic() < end_by:
        if cancelled.wait(min(plan.poll_s, max(0.0, end_by - time.monotonic()))):
            return None
        watch.add(time.monotonic(), read_c())
    return watch.outcome(time.monotonic() - start)
