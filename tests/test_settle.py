"""The settle rule shared by boards and phones: cool, no longer cooling, or the timeout, and which ended the wait."""

from __future__ import annotations

import threading
import time

from agent.jobs import settle
from agent.jobs.settle import SettlePlan, SettleWatch


def _watch(plan: SettlePlan, temps_c: list[float], step_s: float = 1.0) -> SettleWatch:
    watch = SettleWatch(plan)
    for i, temp_c in enumerate(temps_c):
        watch.add(i * step_s, temp_c)
    return watch


GENERIC_PHONE = SettlePlan(limit_c=40.0, timeout_s=180.0, hot_limit_c=45.0)  # android-generic's limits


def test_a_phone_idling_warm_below_its_trip_is_settled_once_stable() -> None:
    watch = _watch(GENERIC_PHONE, [42.0] * 18)  # 17 s of readings: not yet the 20 s window
    assert watch.ended() is None
    watch.add(18.0, 42.0)
    assert watch.ended() == settle.STABLE  # 18 s cover 90% of the window
    outcome = watch.outcome(18.0)
    assert (outcome.rule, outcome.settled) == ("stable", True)
    assert outcome.detail == "settled at 42.0 C: no longer cooling (+0.0 C/min over 20 s, limit 40.0 C)"


def test_a_board_still_cooling_is_waited_for_and_not_settled_at_the_timeout() -> None:
    # 3 C per minute down: cooling faster than the stable rate all the way to the timeout.
    temps = [50.0 - 0.05 * i for i in range(60)]
    watch = _watch(SettlePlan(40.0, 60.0, hot_limit_c=90.0), temps)
    assert watch.ended() is None
    outcome = watch.outcome(60.0)
    assert (outcome.rule, outcome.settled) == ("timeout", False)
    assert outcome.detail.startswith("not settled: 47.0 C after 60 s, still cooling (-3.0 C/min over 20 s")


def test_slow_cooling_below_the_stable_rate_ends_the_wait() -> None:
    temps = [44.0 - 0.01 * i for i in range(25)]  # 0.6 C per minute
    watch = _watch(GENERIC_PHONE, temps)
    assert watch.ended() == settle.STABLE


def test_a_stable_board_hot_beyond_its_trip_limit_waits_out_the_timeout_and_is_not_settled() -> None:
    watch = _watch(GENERIC_PHONE, [46.0] * 40)
    assert watch.ended() is None  # stable, but waiting might still let it cool below the trip
    outcome = watch.outcome(180.0)
    assert (outcome.rule, outcome.settled) == ("timeout", False)
    assert outcome.detail.startswith("not settled: 46.0 C after 180 s, at or above the 45.0 C trip-related limit")


def test_cool_ends_the_wait_at_once_and_no_reading_counts_as_settled() -> None:
    watch = _watch(GENERIC_PHONE, [39.5])
    assert watch.ended() == settle.COOL
    assert watch.outcome(0.0).detail == "settled at 39.5 C: at or below the limit 40.0 C"
    unknown = SettleWatch(GENERIC_PHONE)
    unknown.add(0.0, None)
    assert (unknown.outcome(0.0).rule, unknown.outcome(0.0).settled) == ("no-reading", True)


def test_a_short_timeout_judges_stability_over_a_third_of_it() -> None:
    plan = SettlePlan(50.0, 3.0, hot_limit_c=None)
    assert (plan.window_s, plan.poll_s) == (1.0, 0.25)
    watch = _watch(plan, [80.0] * 5, step_s=0.25)
    assert watch.ended() == settle.STABLE


def test_wait_polls_until_the_rule_ends_it_and_reports_the_rule() -> None:
    readings = iter([60.0, 55.0, 50.0, 45.0] + [44.0] * 1000)
    plan = SettlePlan(40.0, 2.4, hot_limit_c=70.0)  # window 0.8 s, a reading every 0.2 s
    began = time.monotonic()
    outcome = settle.wait(plan, lambda: next(readings), threading.Event(), began + 2.4)
    waited_s = time.monotonic() - began
    assert outcome is not None and outcome.rule == "stable" and outcome.temp_c == 44.0
    # Cooling 5 C per reading for the first 0.6 s, then flat: stable once a window of flat readings is in.
    assert 0.9 <= waited_s < 2.4


def test_wait_ends_at_its_deadline_with_the_verdict_and_returns_none_when_cancelled() -> None:
    plan = SettlePlan(40.0, 1.2, hot_limit_c=45.0)
    began = time.monotonic()
    outcome = settle.wait(plan, lambda: 50.0, threading.Event(), began + 1.2)
    assert outcome is not None and not outcome.settled and time.monotonic() - began >= 1.2
    cancelled = threading.Event()
    cancelled.set()
    assert settle.wait(plan, lambda: 50.0, cancelled, time.monotonic() + 1.2) is None


def test_wait_without_any_reading_returns_at_once() -> None:
    began = time.monotonic()
    outcome = settle.wait(GENERIC_PHONE, lambda: None, threading.Event(), began + 60)
    assert outcome is not None and outcome.rule == "no-reading" and time.monotonic() - began < 1
