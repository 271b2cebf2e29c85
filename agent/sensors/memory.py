"""Resident memory of one process (the inference worker) via psutil, sampled from the agent."""

from __future__ import annotations

from collections.abc import Sequence

from agent.errors import SensorError
from agent.sensors.base import RSS_BYTES, Channel, Sensor

CHANNEL = "worker"


class ProcessMemorySensor(Sensor):
    """RSS in bytes of process ``pid``; SensorError once the process is gone."""

    backend = "memory"
    # A /proc/<pid>/statm read costs ~20 us.
    # The peak comes from the worker's own high-water mark (VmHWM); this series is for plots, and every read costs the
    # measured worker a little CPU on a small board, so 20 Hz is plenty.
    max_rate_hz = 20.0

    def __init__(self, pid: int, name: str = CHANNEL) -> None:
        try:
            import psutil
        except ImportError as err:
            raise SensorError("psutil is not installed: pip install psutil") from err
        self._psutil = psutil
        try:
            self._process = psutil.Process(pid)
        except psutil.Error as err:
            raise SensorError(f"process {pid}: {err}") from err
        self.pid = pid
        self._channels = [Channel(name, RSS_BYTES)]

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read(self) -> Sequence[float]:
        try:
            return [float(self._process.memory_info().rss)]
        except self._psutil.Error as err:
            raise SensorError(f"process {self.pid}: {err}") from err
