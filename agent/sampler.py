"""Background sampling of sensors in the agent process, one thread per sensor, on a fixed schedule."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import SensorError
from agent.sensors.base import Sensor

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_RATE_HZ = 100.0


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


class _SensorThread(threading.Thread):
    def __init__(self, sensor: Sensor, rate_hz: float, stop: threading.Event) -> None:
        super().__init__(name=f"sampler-{sensor.backend or type(sensor).__name__}", daemon=True)
        self.sensor = sensor
        self.rate_hz = rate_hz
        self.period_ns = int(1e9 / rate_hz)
        self._stop_event = stop
        self._lock = threading.Lock()
        self._t: list[int] = []
        self._values: list[Sequence[float]] = []
        self.errors = 0
        self.last_error = ""

    def run(self) -> None:
        clock = time.monotonic_ns
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
            next_tick += self.period_ns
            now = clock()
            if next_tick < now:
                # Fell behind (a slow read, a busy board): skip missed ticks rather than burst.
                next_tick = now + self.period_ns - (now - next_tick) % self.period_ns
            self._stop_event.wait((next_tick - now) / 1e9)

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
            SeriesChunk(ch.name, ch.kind, ch.role, self.sensor.backend, t_ns, matrix[:, i].copy())
            for i, ch in enumerate(self.sensor.channels())
        ]


class Sampler:
    """Samples every sensor at its rate until stopped; `drain()` hands over what was read so far."""

    def __init__(self, sensors: Sequence[Sensor], rate_hz: float = DEFAULT_RATE_HZ) -> None:
        self._stop = threading.Event()
        self._threads = [_SensorThread(s, effective_rate_hz(s, rate_hz), self._stop) for s in sensors]

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

    def problems(self) -> list[str]:
        return [f"{t.sensor.backend}: {t.last_error} ({t.errors} failed reads)" for t in self._threads if t.errors]
