"""CPU used by processes other than the agent and its worker: was the machine quiet while measuring?

A newcomer's first number on a 2-core laptop with a browser open was 19.5 ms against 5.4-7.0 ms on a quiet
machine: ONNX Runtime's default thread pool spins every core and loses them to whatever else runs. The
kernel's per-CPU busy time (/proc/stat) minus this agent's and its worker's own CPU time is what others
used; as a share of all cores it is comparable across boards. Read from the real /proc (not under
EDGEPROF_SYSFS_ROOT): it is the OS's state, not a sensor that tests fake, and the agent's own CPU time can
only be subtracted from the same kernel's totals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from agent.errors import SensorError
from agent.sensors.base import CPU_OTHER_PCT, Channel, Sensor

CHANNEL = "cpu_other"


def _busy_s(psutil: object) -> float:
    """Seconds every CPU together spent not idle since boot (iowait counts as idle: nothing ran)."""
    t = psutil.cpu_times()  # type: ignore[attr-defined]
    return float(
        t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
    )


class CpuContentionSensor(Sensor):
    """Percent of all cores used by other processes between successive reads (0 on a quiet machine).

    ``own_pids`` are the agent and the worker of the job. Their CPU time, that of their running descendants and
    that of their children that have ended (the agent's reaped workers), is subtracted from the machine's busy time.
    """

    backend = "procstat"
    # The kernel counts CPU time in ticks of 1-10 ms: faster reads would mostly measure that quantisation.
    max_rate_hz = 10.0

    def __init__(self, own_pids: Sequence[int]) -> None:
        try:
            import psutil
        except ImportError as err:
            raise SensorError("psutil is not installed: pip install psutil") from err
        self._psutil = psutil
        self._cores = psutil.cpu_count() or 1
        self._own = []
        for pid in dict.fromkeys(own_pids):
            try:
                self._own.append(psutil.Process(pid))
            except psutil.Error as err:
                raise SensorError(f"process {pid}: {err}") from err
        self._own_last: dict[int, float] = {}
        self._channels = [Channel(CHANNEL, CPU_OTHER_PCT)]
        self._last = self._snapshot()

    @classmethod
    def for_worker(cls, worker_pid: int) -> CpuContentionSensor:
        """The sensor for one job: this agent process and that worker are "own", everything else "other"."""
        return cls([os.getpid(), worker_pid])

    def _own_s(self) -> float:
        """CPU seconds of the own processes and their live descendants (a worker's native runner, e.g. trtexec);
        an own process that has ended keeps its last known time, a descendant's moves to its parent when reaped."""
        descendants: dict[int, object] = {}
        for process in self._own:
            try:
                t = process.cpu_times()
                descendants.update((c.pid, c) for c in process.children(recursive=True))
            except self._psutil.Error:
                continue  # the worker exited: its time is now in the agent's children_* once it is reaped
            self._own_last[process.pid] = t.user + t.system + t.children_user + t.children_system
        live = 0.0
        for pid, child in descendants.items():
            if pid in self._own_last:
                continue  # the worker, counted as an own process
            try:
                c = child.cpu_times()  # type: ignore[attr-defined]
            except self._psutil.Error:
                continue
            live += c.user + c.system + c.children_user + c.children_system
        return sum(self._own_last.values()) + live

    def _snapshot(self) -> tuple[float, float, float]:
        return time.monotonic(), _busy_s(self._psutil), self._own_s()

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read(self) -> Sequence[float]:
        now = self._snapshot()
        elapsed_s = now[0] - self._last[0]
        other_s = (now[1] - self._last[1]) - (now[2] - self._last[2])
        self._last = now
        if elapsed_s <= 0:
            return [0.0]
        return [min(100.0, max(0.0, 100.0 * other_s / (elapsed_s * self._cores)))]
