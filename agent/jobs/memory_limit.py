"""A job worker's memory limit: the agent watches the worker's resident memory and ends it past the limit.

The limit bounds what it says, resident memory (RSS: the worker's and its children's), read from
/proc/PID/statm by a thread in the agent every 10 to 100 ms, the more often the closer the worker is to it.
An address-space limit (RLIMIT_AS, what the worker set on itself before) counted what runtimes reserve without
touching: a thread stack (8 MB) and a malloc arena (64 MB) per intra-op thread, library mappings. Measured for
squeezenet on a 2-core x86-64 box: 806 MB of address space with 8 threads for under 100 MB resident; with
`--threads 64` under a 256 MB budget thread creation failed ("pthread_create failed, error code: 12") and ONNX
Runtime hung in prepare until the job's timeout.

A watcher cannot stop an allocation half-way as the kernel does: the worker may overshoot by what it
touches in one interval (at 5 GB/s, up to 50 MB near the limit) before it is killed. That is the price of
bounding the right quantity on any kernel; the systemd unit's MemoryMax= (cgroup) still bounds the agent
and its workers together. A worker the watcher killed ends its job as out_of_memory with one line naming
what it reached and the limit; the agent goes on serving.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading

from agent.errors import AgentError

#: Smallest limit accepted: below it even a small CNN does not load (the interpreter and ONNX Runtime
#: alone are 46 MB resident; squeezenet peaked at 79 MB with 16 threads, 82 MB with 64).
MIN_WORKER_MEMORY_MB = 256
#: The agent reads the worker's RSS as often as its headroom needs: the time the worker would take to touch
#: the memory left below the limit at FAST_TOUCH_BYTES_PER_S, between WATCH_INTERVAL_S and MAX_INTERVAL_S.
#: Measured on the 2-core dev box under load: 1.8% of a core polling every 10 ms (open/read/close), so the
#: far-from-the-limit case, the usual one, polls at 10 Hz on a descriptor kept open.
WATCH_INTERVAL_S = 0.01
MAX_INTERVAL_S = 0.1
FAST_TOUCH_BYTES_PER_S = 5e9
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

    def __init__(self, pid: int, limit_mb: int) -> None:
        self.pid = pid
        self.limit_mb = limit_mb
        self.tripped_bytes: int | None = None
        self.reads = 0
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
        try:
            statm = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY)
        except OSError:
            return  # the worker is gone already: its exit status tells the rest
        try:
            while not self._stop.is_set():
                rss = self._read(statm)
                if rss is None:
                    return
                if rss > limit_bytes:
                    self.tripped_bytes = rss
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.pid, signal.SIGKILL)  # the worker leads its own group (start_new_session)
                    return
                headroom_s = (limit_bytes - rss) / FAST_TOUCH_BYTES_PER_S
                self._stop.wait(min(MAX_INTERVAL_S, max(WATCH_INTERVAL_S, headroom_s)))
        finally:
            os.close(statm)

    def _read(self, statm: int) -> int | None:
        """The worker's RSS (re-read on the open descriptor) plus its children's; None once it is gone."""
        self.reads += 1
        try:
            rss = int(os.pread(statm, 256, 0).split()[1]) * _PAGE_BYTES
        except (OSError, IndexError, ValueError):
            return None
        return rss + sum(tree_resident_bytes(child) or 0 for child in _children(self.pid))

    def error(self, phase: str) -> OutOfMemory:
        # Rounded up: 256.1 MB past a 256 MB limit must not read "reached 256 MB (limit 256 MB)".
        reached_mb = math.ceil((self.tripped_bytes or 0) / 1024**2)
        return OutOfMemory(
            f"out of memory: the worker's resident memory reached {reached_mb} MB during {phase}"
            f" (limit {self.limit_mb} MB)"
        )
