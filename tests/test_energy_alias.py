"""Period-locked loads through the real sampler thread and the real host energy code (simulated time).

An inference every 10 or 20 ms sampled at 100 Hz: a fixed sampling period reads the same phase of
every inference and biases the energy while its interval stays narrow. Dithered sampling must give the
gross energy within 1% RMS with >= 90% interval coverage; a sensor that cannot be dithered must be
flagged instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.device.sampler import Sampler
from host.analysis.energy import EnergyStats, energy_stats
from host.store.rundata import PhaseSpan, Series
from tests.sensor_fakes import PeriodicLoadSensor, SimulatedClock, periodic_inferences

S = 1_000_000_000
T0 = 1000 * S
WINDOW_S = 20.0
HIGH_W, LOW_W = 5.0, 3.0  # a board idling at 3 W that draws 2 W more while an inference runs
SEEDS = range(50)
#: (inference period in ms, duty): each an exact multiple of the 10 ms mean sampling period.
LOCKED_LOADS = [(10, 0.70), (10, 0.95), (20, 0.70), (20, 0.95)]


def run_locked_load(period_ms: int, duty: float, seed: int, dither: bool = True) -> tuple[EnergyStats, float]:
    """One simulated job: (the host's energy statistics, the exact gross energy per inference in mJ)."""
    period_ns = period_ms * 1_000_000
    clock = SimulatedClock(T0, T0 + int((WINDOW_S + 1.0) * S))
    rng = np.random.default_rng(seed)
    phase_ns = T0 + int(rng.integers(0, period_ns))  # where in the sampler's cycle the load starts
    sensor = PeriodicLoadSensor(clock, period_ns, duty, HIGH_W, LOW_W, phase_ns=phase_ns, dither=dither)
    sampler = Sampler([sensor], 100.0, clock=clock.clock, wait=clock.wait, seed=seed)
    (chunk,) = clock.run(sampler)
    series = Series(chunk.name, chunk.kind, chunk.role, chunk.sensor, chunk.t_ns, chunk.value)
    starts, ends = periodic_inferences(T0 + S // 2, T0 + int((WINDOW_S + 0.5) * S), period_ns, duty, phase_ns)
    stats = energy_stats([series], PhaseSpan("measure", int(starts[0]), int(ends[-1])), None, starts, ends)
    n = starts.size
    exact_j = ((n - 1) * (duty * HIGH_W + (1 - duty) * LOW_W) * period_ns / S) + duty * period_ns / S * HIGH_W
    return stats, exact_j / n * 1e3


def test_dithered_sampling_of_period_locked_loads_is_unbiased_and_its_interval_covers() -> None:
    covered = runs = 0
    for period_ms, duty in LOCKED_LOADS:
        errors = []
        for seed in SEEDS:
            stats, exact_mj = run_locked_load(period_ms, duty, seed)
            assert stats.energy_mj_per_inference is not None and stats.energy_mj_per_inference_ci95 is not None
            assert stats.alias_risk is None
            errors.append(stats.energy_mj_per_inference / exact_mj - 1)
            lo, hi = stats.energy_mj_per_inference_ci95
            covered += lo <= exact_mj <= hi
            runs += 1
        rms = math.sqrt(float(np.mean(np.square(errors))))
        assert rms < 0.01, f"{period_ms} ms at {duty:.0%} duty: RMS error {100 * rms:.2f}%"

    assert covered / runs >= 0.9, f"the interval covered the exact energy in {covered} of {runs} runs"


def test_a_sensor_that_cannot_be_dithered_is_flagged_when_the_load_locks_to_it() -> None:
    stats, exact_mj = run_locked_load(10, 0.70, seed=3, dither=False)

    # The same phase of every inference is read: far off, and no interval can tell (none, or a confident wrong one) ...
    assert stats.energy_mj_per_inference is not None
    assert abs(stats.energy_mj_per_inference / exact_mj - 1) > 0.05
    interval = stats.energy_mj_per_inference_ci95
    assert interval is None or not interval[0] <= exact_mj <= interval[1]
    # ... which is why the result says so.
    assert stats.alias_risk is not None and "may alias" in stats.alias_risk and "10.00 ms" in stats.alias_risk


def test_a_fixed_rate_sensor_is_not_flagged_when_the_load_is_unrelated() -> None:
    period_ns = 13_700_000  # 13.7 ms: its phase slips through the 10 ms sampling hundreds of times
    clock = SimulatedClock(T0, T0 + 6 * S)
    sensor = PeriodicLoadSensor(clock, period_ns, 0.7, HIGH_W, LOW_W, dither=False)
    sampler = Sampler([sensor], 100.0, clock=clock.clock, wait=clock.wait, seed=1)
    (chunk,) = clock.run(sampler)
    series = Series(chunk.name, chunk.kind, chunk.role, chunk.sensor, chunk.t_ns, chunk.value)
    starts, ends = periodic_inferences(T0 + S // 2, T0 + int(5.5 * S), period_ns, 0.7)

    stats = energy_stats([series], PhaseSpan("measure", int(starts[0]), int(ends[-1])), None, starts, ends)

    assert stats.alias_risk is None
    assert np.std(np.diff(chunk.t_ns)) < 0.01 * np.mean(np.diff(chunk.t_ns))  # really a fixed period


def test_dithered_intervals_average_the_requested_rate_and_respect_a_counter_wrap_limit() -> None:
    clock = SimulatedClock(T0, T0 + 10 * S)
    sensor = PeriodicLoadSensor(clock, 10_000_000, 0.5, HIGH_W, LOW_W)
    sensor.min_rate_hz = 80.0  # as RAPL sets it: never wait longer than 12.5 ms
    sampler = Sampler([sensor], 100.0, clock=clock.clock, wait=clock.wait, seed=7)
    (chunk,) = clock.run(sampler)

    gaps_ms = np.diff(chunk.t_ns) / 1e6
    assert gaps_ms.max() <= 12.5 + 0.05
    assert gaps_ms.min() < 6.0 and np.std(gaps_ms) > 1.5  # dithered, not a fixed 10 ms
    assert 1 / (gaps_ms.mean() / 1e3) == pytest.approx(100.0 * 10 / 9.7, rel=0.08)
