"""Background sampling of sensors in the agent process, one thread per sensor, at dithered intervals.

A fixed sampling period can lock onto a periodic load (an inference every 10 ms read at 100 Hz sees
the same phase of every inference, forever) and bias the average power while its interval stays
narrow. Each interval is therefore drawn uniformly from DITHER of the mean period around it: the mean
rate is the one asked for, and the sample phases spread over the load's whole cycle. A sensor that
cannot be dithered (``Sensor.dither`` False: a meter that streams at its own rate) is read at a fixed
period; the host flags an inference period near a multiple of it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import SensorError
from agent.sensors.base import ENERGY_UJ, Sensor, wire_role

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_RATE_HZ = 100.0
#: Each interval is uniform in [1 - DITHER, 1 + DITHER] x the mean period.
DITHER = 0.5
#: An energy counter must advance this many times over the measure window (host/analysis/energy.py checks it).
MIN_COUNTER_UPDATES = 50

#: Returns CLOCK_MONOTONIC ns; the sampler's timestamps. Tests pass a simulated clock.
Clock = Callable[[], int]
#: Waits up to the given seconds; True when the sampler was stopped meanwhile.
Wait = Callable[[float], bool]


@dataclass
class SeriesChunk:
    """Samples of one channel since the last drain."""

    name: str
    kind: str
    role: str
    sensor: str
    t_ns: np.ndarray
    value: np.ndarray


def effective_rate_hz(sensor: Sensor, requested_hz: float) -> float:
    """The requested rate, capped at what the sensor delivers, raised to what it needs (RAPL wraps)."""
    rate = min(requested_hz, sensor.max_rate_hz) if sensor.max_rate_hz > 0 else requested_hz
    return max(rate, sensor.min_rate_hz)


@dataclass
class _CounterChanges:
    """An energy counter's last value, how many changes were seen, and the first and last change time."""

    last_value: float | None = None
    changes: int = 0
    first_ns: int = 0
    last_ns: int = 0

    def see(self, value: float, t_ns: int) -> None:
        if self.last_value is not None and value != self.last_value:
            self.changes += 1
            self.first_ns = self.first_ns or t_ns
            self.last_ns = t_ns
        self.last_value = value

    def period_s(self) -> float | None:
        """Mean time between changes, None before 3 changes."""
        return (self.last_ns - self.first_ns) / 1e9 / (self.changes - 1) if self.changes >= 3 else None


class _SensorThread(threading.Thread):
    def __init__(
        self,
        sensor: Sensor,
        rate_hz: float,
        stop: threading.Event,
        clock: Clock = time.monotonic_ns,
        wait: Wait | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name=f"sampler-{sensor.backend or type(sensor).__name__}", daemon=True)
        self.sensor = sensor
        self.rate_hz = rate_hz
        self.period_ns = int(1e9 / rate_hz)
        self.dither = DITHER if getattr(sensor, "dither", True) else 0.0
        # Never wait longer than the sensor tolerates (RAPL: twice per counter wrap).
        self.max_interval_ns = int(1e9 / sensor.min_rate_hz) if sensor.min_rate_hz > 0 else None
        self._stop_event = stop
        self._clock = clock
        self._wait = wait or stop.wait
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._t: list[int] = []
        self._values: list[Sequence[float]] = []
        self.errors = 0
        self.last_error = ""
        # Per energy counter (by channel index): how often its value has been seen to change.
        self._counters = {i: _CounterChanges() for i, ch in enumerate(sensor.channels()) if ch.kind == ENERGY_UJ}

    def _track_counters(self, t_ns: int, values: Sequence[float]) -> None:
        for i, state in self._counters.items():
            state.see(values[i], t_ns)

    def counter_update_period_s(self) -> float | None:
        """The slowest counter's time between observed changes so far (NVML: ~0.1 s), None before 3."""
        periods = [c.period_s() for c in self._counters.values()]
        known = [p for p in periods if p is not None]
        return max(known) if known else None

    def next_interval_ns(self) -> int:
        """The time to the next read: the mean period, dithered, within the sensor's safe maximum."""
        interval = int(self.period_ns * self._rng.uniform(1.0 - self.dither, 1.0 + self.dither))
        return min(interval, self.max_interval_ns) if self.max_interval_ns else interval

    def run(self) -> None:
        clock = self._clock
        read = self.sensor.read
        next_tick = clock()
        while not self._stop_event.is_set():
            try:
                t0 = clock()
                values = read()
                t1 = clock()
            except SensorError as err:
                self.errors += 1
                if self.errors == 1:
                    log.warning("sensor %s: %s", self.sensor.backend, err)
                self.last_error = str(err)
            else:
                with self._lock:
                    # The midpoint of the read is the best estimate of when the value was true.
                    self._t.append((t0 + t1) // 2)
                    self._values.append(values)
                if self._counters:
                    self._track_counters((t0 + t1) // 2, values)
            next_tick += self.next_interval_ns()
            now = clock()
            if next_tick < now:
                # Fell behind (a slow read, a busy board): skip missed ticks rather than burst.
                next_tick = now + self.next_interval_ns()
            if self._wait((next_tick - now) / 1e9):
                break

    def drain(self) -> list[SeriesChunk]:
        with self._lock:
            t, values = self._t, self._values
            self._t, self._values = [], []
        if not t:
            return []
        import numpy as np  # on first drain, not at import: the idle agent process never needs numpy

        t_ns = np.asarray(t, dtype=np.int64)
        matrix = np.asarray(values, dtype=np.float64).reshape(len(t), -1)
        return [
            SeriesChunk(ch.name, ch.kind, wire_role(ch), self.sensor.backend, t_ns, matrix[:, i].copy())
            for i, ch in enumerate(self.sensor.channels())
        ]


class Sampler:
    """Samples every sensor at its rate until stopped; `drain()` hands over what was read so far."""

    def __init__(
        self,
        sensors: Sequence[Sensor],
        rate_hz: float = DEFAULT_RATE_HZ,
        *,
        clock: Clock = time.monotonic_ns,
        wait: Wait | None = None,
        seed: int | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._threads = [
            _SensorThread(
                s,
                effective_rate_hz(s, rate_hz),
                self._stop,
                clock,
                wait,
                random.Random(None if seed is None else seed + i),
            )
            for i, s in enumerate(sensors)
        ]

    @property
    def rate_hz(self) -> float:
        """The fastest rate any sensor runs at (what a result reports as its sampling rate)."""
        return max((t.rate_hz for t in self._threads), default=0.0)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def drain(self) -> list[SeriesChunk]:
        chunks: list[SeriesChunk] = []
        for thread in self._threads:
            chunks.extend(thread.drain())
        return chunks

    def stop(self) -> list[SeriesChunk]:
        """Stop the threads and return the last samples."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=2.0)
        return self.drain()

    def counter_window_s(self, min_updates: int) -> tuple[float, str] | None:
        """The measure time that spans ``min_updates`` updates (+10%) of the slowest energy counter seen so far,
        with the sensor's name and update period; None when no counter has updated 3 times yet.
        """
        found = [(t.counter_update_period_s(), t.sensor.backend) for t in self._threads]
        known = [(period, name) for period, name in found if period is not None]
        if not known:
            return None
        period, name = max(known)
        # 10% to spare: the host counts updates over the inferences' span, a little shorter than the phase.
        return 1.1 * min_updates * period, f"the {name} energy counter updates every {period * 1e3:.0f} ms"

    def problems(self) -> list[str]:
        return [f"{t.sensor.backend}: {t.last_error} ({t.errors} failed reads)" for t in self._threads if t.errors]
