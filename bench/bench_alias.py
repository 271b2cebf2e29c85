"""(g) Energy of a period-locked load: error and interval coverage, fixed-period vs dithered sampling.

A rail draws 5 W for `duty` of every inference period and 3 W between (10 or 20 ms, 70% or 95%), the
inference period an exact multiple of the 10 ms mean sampling period at 100 Hz. The real Sampler thread
reads it, the real host code (host/analysis/energy.py) integrates it over the inference windows, and the result
is compared with the exact energy. "before" is the fixed schedule (the sampler as it was, and what a
sensor that cannot be dithered still gets); "after" is the dithered schedule.

Two clocks: a simulated one (the sampler's clock/wait hooks; many seeded runs in seconds) for the RMS
error and the coverage of the 95% interval, and the real monotonic clock (a sensor whose square wave
follows time.monotonic_ns) for a few live runs, where the scheduler's own jitter also plays.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from harness import Row, load_average, print_table, record

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' fake sensors

from agent.device.sampler import Sampler
from agent.sensors.base import POWER_MW, Channel, Sensor
from host.analysis.energy import energy_stats
from host.store.rundata import PhaseSpan, Series
from tests.sensor_fakes import PeriodicLoadSensor, SimulatedClock, periodic_inferences

S = 1_000_000_000
HIGH_W, LOW_W = 5.0, 3.0
CASES = [(10, 0.70), (10, 0.95), (20, 0.70), (20, 0.95)]


def exact_mj_per_inference(n: int, period_ns: int, duty: float) -> float:
    """The load's energy from the first start to the last end, per inference (last one: its busy part only)."""
    exact_j = (n - 1) * (duty * HIGH_W + (1 - duty) * LOW_W) * period_ns / S + duty * period_ns / S * HIGH_W
    return exact_j / n * 1e3


def judge(chunk: object, starts: np.ndarray, ends: np.ndarray, period_ns: int, duty: float) -> tuple[float, bool]:
    """(relative error of gross energy per inference, whether its 95% interval holds the exact value)."""
    series = Series(chunk.name, chunk.kind, chunk.role, chunk.sensor, chunk.t_ns, chunk.value)  # type: ignore[attr-defined]
    stats = energy_stats([series], PhaseSpan("measure", int(starts[0]), int(ends[-1])), None, starts, ends)
    exact = exact_mj_per_inference(starts.size, period_ns, duty)
    assert stats.energy_mj_per_inference is not None and stats.energy_mj_per_inference_ci95 is not None
    lo, hi = stats.energy_mj_per_inference_ci95
    return stats.energy_mj_per_inference / exact - 1, bool(lo <= exact <= hi)


def simulated(period_ms: int, duty: float, seed: int, dither: bool, window_s: float) -> tuple[float, bool]:
    period_ns = period_ms * 1_000_000
    t0 = 1000 * S
    clock = SimulatedClock(t0, t0 + int((window_s + 1.0) * S))
    phase_ns = t0 + int(np.random.default_rng(seed).integers(0, period_ns))
    sensor = PeriodicLoadSensor(clock, period_ns, duty, HIGH_W, LOW_W, phase_ns=phase_ns, dither=dither)
    (chunk,) = clock.run(Sampler([sensor], 100.0, clock=clock.clock, wait=clock.wait, seed=seed))
    starts, ends = periodic_inferences(t0 + S // 2, t0 + int((window_s + 0.5) * S), period_ns, duty, phase_ns)
    return judge(chunk, starts, ends, period_ns, duty)


class LiveSquareWave(Sensor):
    """The same load on the real monotonic clock: the value at the moment the sampler reads it."""

    backend = "live"
    max_rate_hz = 1000.0

    def __init__(self, period_ns: int, duty: float, phase_ns: int, dither: bool) -> None:
        self.period_ns, self.duty, self.phase_ns, self.dither = period_ns, duty, phase_ns, dither

    def channels(self) -> Sequence[Channel]:
        return [Channel("VDD_IN", POWER_MW, "total")]

    def read(self) -> Sequence[float]:
        into = (time.monotonic_ns() - self.phase_ns) % self.period_ns
        return [(HIGH_W if into < self.duty * self.period_ns else LOW_W) * 1e3]


def live(period_ms: int, duty: float, dither: bool, window_s: float) -> tuple[float, bool]:
    period_ns = period_ms * 1_000_000
    phase_ns = time.monotonic_ns()
    sampler = Sampler([LiveSquareWave(period_ns, duty, phase_ns, dither)], 100.0)
    sampler.start()
    time.sleep(window_s + 0.5)
    (chunk,) = sampler.stop()
    starts, ends = periodic_inferences(
        phase_ns + S // 4, phase_ns + int((window_s + 0.25) * S), period_ns, duty, phase_ns
    )
    return judge(chunk, starts, ends, period_ns, duty)


def summary(results: list[tuple[float, bool]]) -> tuple[float, float]:
    errors = np.array([e for e, _ in results])
    return math.sqrt(float(np.mean(errors**2))), sum(c for _, c in results) / len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="simulated runs per case and schedule")
    parser.add_argument("--window", type=float, default=20.0, help="simulated measure window, s")
    parser.add_argument("--live-runs", type=int, default=3, help="real-clock runs per schedule")
    parser.add_argument("--record", action="store_true", help="write the section of bench/RESULTS.md")
    args = parser.parse_args()

    rows: list[Row] = []
    pooled: dict[bool, list[tuple[float, bool]]] = {False: [], True: []}
    for period_ms, duty in CASES:
        measured = {}
        for label, dither in (("before (fixed period)", False), ("after (dithered)", True)):
            runs = [simulated(period_ms, duty, s, dither, args.window) for s in range(args.seeds)]
            pooled[dither] += runs
            rms, coverage = summary(runs)
            measured[label] = f"RMS {100 * rms:.2f}%, coverage {100 * coverage:.0f}%"
        rows.append(
            Row(
                f"{period_ms} ms load at {duty:.0%} duty, 100 Hz, simulated clock: gross energy error, 95% CI coverage",
                "RMS <= 1%, coverage >= 90%",
                "; ".join(f"{k}: {v}" for k, v in measured.items()),
                "-",
            )
        )
    rows.append(
        Row(
            "all four cases pooled, simulated clock: gross energy error, 95% CI coverage",
            "RMS <= 1%, coverage >= 90%",
            "; ".join(
                f"{label}: RMS {100 * summary(pooled[d])[0]:.2f}%, coverage {100 * summary(pooled[d])[1]:.1f}%"
                for label, d in (("before (fixed period)", False), ("after (dithered)", True))
            ),
            "-",
        )
    )
    live_measured = {}
    for label, dither in (("before (fixed period)", False), ("after (dithered)", True)):
        rms, coverage = summary([live(10, 0.70, dither, 3.0) for _ in range(args.live_runs)])
        live_measured[label] = f"RMS {100 * rms:.2f}%, coverage {100 * coverage:.0f}%"
    rows.append(
        Row(
            "10 ms load at 70% duty, 100 Hz, real clock (3 s windows): gross energy error, 95% CI coverage",
            "RMS <= 1%, coverage >= 90%",
            "; ".join(f"{k}: {v}" for k, v in live_measured.items()),
            "-",
        )
    )
    print_table("(g) period-locked energy", rows)
    notes = [
        f"simulated: {args.seeds} seeded runs per case and schedule, {args.window:g} s windows, the real Sampler"
        " thread on a simulated clock (reads take 20 us); load 5 W busy / 3 W between inferences",
        f"real clock: {args.live_runs} runs per schedule; the scheduler's jitter dithers the fixed schedule a little"
        f" (load average {load_average()})",
    ]
    if args.record:
        record("(g) period-locked energy", rows, notes)


if __name__ == "__main__":
    main()
