"""A job worker's memory limit: the agent watches the worker's resident memory and ends it past the limit.

The limit bounds what it says, resident memory (RSS), read from /proc/PID/statm every WATCH_INTERVAL_S
by a thread in the agent. An address-space limit (RLIMIT_AS, what the worker set on itself before) counted
what runtimes reserve without touching: a thread stack (8 MB) and a malloc arena (64 MB) per intra-op
thread, library mappings. Measured for squeezenet on a 2-core x86-64 box: 806 MB of address space with 8
threads for under 100 MB resident; with `--threads 64` under a 256 MB budget thread creation failed
("pthread_create failed, error code: 12") and ONNX Runtime hung in prepare until the job's timeout.

A watcher cannot stop an allocation half-way as the kernel does: the worker may overshoot by what it
touches in one interval (a few tens of MB at memory bandwidth) before it is killed. That is the price of
bounding the right quantity on any kernel; the systemd unit's MemoryMax= (cgroup) still bounds the agent
and its workers together. A worker the watcher killed ends its job as out_of_memory with one line naming
what it reached and the limit; the agent goes on serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from agent.errors import AgentError

#: Smallest limit accepted: below it even a small CNN does not load (the interpreter and ONNX Runtime
#: alone are 46 MB resident; squeezenet peaked at 79 MB with 16 threads, 82 MB with 64).
MIN_WORKER_MEMORY_MB = 256
#: How often the agent reads the worker's RSS: one small /proc read, about 0.3% of a core at 100 Hz.
WATCH_INTERVAL_S = 0.01
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class OutOfMemory(AgentError):
    """The worker went over its memory limit; the job ends with this, the agent goes on serving."""

    kind = "out_of_memory"


def check_limit_mb(limit_mb: int) -> int:
    """`limit_mb` if usable (0 = no limit); ValueError with one line otherwise."""
    if limit_mb != 0 and limit_mb < MIN_WORKER_MEMORY_MB:
        raise ValueError(
            f"a worker memory limit of {limit_mb} MB is below the {MIN_WORKER_MEMORY_MB} MB a runtime needs "
            "to load even a small model (0 turns the limit off)"
        )
    return limit_mb


def resident_bytes(pid: int) -> int | None:
    """Process `pid`'s resident memory in bytes; None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    """The children of `pid`'s main thread (where the worker starts runners such as llama-bench or trtexec)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        return []


def tree_resident_bytes(pid: int) -> int | None:
    """Resident memory of `pid` and its descendants, bytes; None once `pid` is gone. A native runner the worker
    starts (llama-bench, trtexec) holds the model's memory in a child: it counts against the worker's limit."""
    total = resident_bytes(pid)
    if total is None:
        return None
    for child in _children(pid):
        total += tree_resident_bytes(child) or 0
    return total


class MemoryWatch:
    """Kills worker `pid` (its process group) once its resident memory, its children's included, passes
    `limit_mb` MiB.

    `tripped_bytes` is the RSS that was seen over the limit (None while within it); `error(phase)` is the
    job's one-line end for it.
    """

    def __init__(self, pid: int, limit_mb: int, interval_s: float = WATCH_INTERVAL_S) -> None:
        self.pid = pid
        self.limit_mb = limit_mb
        self.interval_s = interval_s
        self.tripped_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"memory-watch-{pid}", daemon=True)

    def start(self) -> MemoryWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def _watch(self) -> None:
        limit_bytes = self.limit_mb * 1024**2
        while not self._stop.is_set():
            rss = tree_resident_bytes(self.pid)
            if rss is None:
                return  # the worker is gone: its exit status tells the rest
            if rss > limit_bytes:
                self.tripped_bytes = rss
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)  # the worker leads its own group (start_new_session)
                return
            self._stop.wait(self.interval_s)

    def error(self, phase: str) -> OutOfMemory:
        reached_mb = (self.tripped_bytes or 0) / 1024**2
        return OutOfMemory(
            f"out of memory: the worker's resident memory reached {reached_mb:.0f} MB during {phase}"
            f" (limit {self.limit_mb} MB)"
        )
