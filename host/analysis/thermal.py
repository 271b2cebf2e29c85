"""Thermal figures of one job: the hottest temperature and whether (and why) the board throttled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from host.store.rundata import PhaseSpan, Series

#: cpu_freq_khz below this fraction of its reference (idle/settle, early warmup) counts as throttling.
FREQ_DROP_FRACTION = 0.85
#: ... when it stays there for this many consecutive samples (one low reading is a governor blip).
FREQ_DROP_MIN_SAMPLES = 3


def in_span(s: Series, start_ns: int, end_ns: int) -> np.ndarray:
    """The finite values of ``s`` sampled within [start_ns, end_ns]."""
    t = np.asarray(s.t_ns, dtype=np.int64)
    v = np.asarray(s.value, dtype=np.float64)
    return v[(t >= start_ns) & (t <= end_ns) & np.isfinite(v)]


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True values."""
    if not mask.any():
        return 0
    padded = np.concatenate(([0], mask.astype(np.int8), [0]))
    changes = np.flatnonzero(np.diff(padded))
    return int((changes[1::2] - changes[::2]).max())


def _frequency_reference(s: Series, baselines: Sequence[PhaseSpan], warmup: PhaseSpan | None) -> float | None:
    """The clock the CPU ran at before it was loaded long: the highest of the idle/settle medians and
    the first quarter of warmup. Not the whole warmup: throttling that starts there would hide itself.
    """
    medians = []
    for span in baselines:
        values = in_span(s, span.start_ns, span.end_ns)
        if values.size:
            medians.append(float(np.median(values)))
    if warmup is not None:
        values = in_span(s, warmup.start_ns, warmup.end_ns)
        if values.size:
            medians.append(float(np.median(values[: max(1, values.size // 4)])))
    return max(medians) if medians else None


def _frequency_drop(
    s: Series, measure: PhaseSpan, baselines: Sequence[PhaseSpan], warmup: PhaseSpan | None
) -> str | None:
    """Why ``s`` (cpu_freq_khz) counts as throttled during measure, or None."""
    during = in_span(s, measure.start_ns, measure.end_ns)
    reference = _frequency_reference(s, baselines, warmup)
    if reference is None or reference <= 0 or not during.size:
        return None
    low = during < FREQ_DROP_FRACTION * reference
    if _longest_run(low) < min(FREQ_DROP_MIN_SAMPLES, during.size) or not low.any():
        return None
    lowest = float(during.min())
    return (
        f"{s.name} frequency fell to {lowest / 1e6:.2f} GHz, {100 * (1 - lowest / reference):.0f}% below"
        f" its {reference / 1e6:.2f} GHz before the load (idle, settle, early warmup)"
    )


def thermal_stats(
    series: Sequence[Series],
    measure: PhaseSpan,
    warmup: PhaseSpan | None = None,
    idle: PhaseSpan | None = None,
    trip_temp_c: float | None = None,
    settle: PhaseSpan | None = None,
) -> dict[str, Any]:
    """``thermal`` object: max_temp_c, throttled, throttle_reason.

    max_temp_c is the hottest temp_c sample over warmup + measure (measure alone without a warmup span).
    Throttled when, during measure, (a) any "throttle" sample is 1, (b) a cpu_freq_khz series stays
    below FREQ_DROP_FRACTION of its clock before the load (idle/settle median or the first quarter of
    warmup, the highest) for FREQ_DROP_MIN_SAMPLES consecutive samples, or (c) temperature reaches
    ``trip_temp_c`` when given.
    throttled is None (unknown) when there is neither a throttle flag, a frequency series nor a trip
    point to judge by.
    """
    hot_from = warmup.start_ns if warmup is not None else measure.start_ns
    temps = [in_span(s, hot_from, measure.end_ns) for s in series if s.kind == "temp_c"]
    temps = [t for t in temps if t.size]
    max_temp_c = max(float(t.max()) for t in temps) if temps else None

    reasons: list[str] = []
    flags = [s for s in series if s.kind == "throttle"]
    freqs = [s for s in series if s.kind == "cpu_freq_khz"]
    for s in flags:
        if np.any(in_span(s, measure.start_ns, measure.end_ns) >= 0.5):
            reasons.append(f"throttle flag {s.name} set during measure")
    baselines = [span for span in (idle, settle) if span is not None]
    for s in freqs:
        reason = _frequency_drop(s, measure, baselines, warmup)
        if reason:
            reasons.append(reason)
    measure_temps = [in_span(s, measure.start_ns, measure.end_ns) for s in series if s.kind == "temp_c"]
    hottest_c = max((float(t.max()) for t in measure_temps if t.size), default=None)
    if trip_temp_c is not None and hottest_c is not None and hottest_c >= trip_temp_c:
        reasons.append(f"temperature reached {hottest_c:.1f} °C, trip point {trip_temp_c:.1f} °C")

    judged = bool(flags or freqs or trip_temp_c is not None)
    return {
        "max_temp_c": max_temp_c,
        "throttled": bool(reasons) if judged else None,
        "throttle_reason": "; ".join(reasons) if reasons else None,
        "trip_temp_c": trip_temp_c,
        # Neither a clock nor a throttle state: throttling can only be guessed from temperature.
        "throttle_monitored": bool(flags or freqs),
    }
