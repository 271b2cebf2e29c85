"""A stall watchdog for one server stream: cancels the call when no message arrives within a bound.

Keepalive pings (host/fleet/client.py) catch a dead link; this catches a live link that carries nothing: an
agent whose job stopped producing batches, or a connection attempt through a frozen proxy that never
completes its handshake. While a job waits in the agent's queue it legitimately sends nothing for as
long as the job ahead runs, so there a stall first asks the agent (a unary call with its own deadline)
whether the job is still queued, and waits on when it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> bool: ...


class StallWatch:
    """Use as a context manager around reading one stream; call `fed()` for every message read.

    `stall_s`: longest wait for a message. `still_waiting()` is asked when that passes; True means the
    silence is legitimate (the job is queued) and the wait starts again. `first_by`: a monotonic time by
    which the first message must have come (the end of a reconnect budget), or None.
    """

    def __init__(
        self,
        call: Cancellable,
        stall_s: float,
        still_waiting: Callable[[], bool] = lambda: False,
        first_by: float | None = None,
    ) -> None:
        self._call = call
        self.stall_s = stall_s
        self._still_waiting = still_waiting
        self._first_by = first_by
        self._last_s = time.monotonic()
        self._lock = threading.Lock()
        self._done = threading.Event()
        #: Why the call was cancelled, one line; empty while it was not.
        self.reason = ""
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def fed(self) -> None:
        with self._lock:
            self._last_s = time.monotonic()
            self._first_by = None

    def _due_s(self) -> float:
        with self._lock:
            due = self._last_s + self.stall_s
            return min(due, self._first_by) if self._first_by is not None else due

    def _watch(self) -> None:
        while not self._done.wait(max(0.0, self._due_s() - time.monotonic())):
            if time.monotonic() < self._due_s():
                continue  # a message came while we slept
            with self._lock:
                out_of_budget = self._first_by is not None and time.monotonic() >= self._first_by
            if not out_of_budget and self._still_waiting():
                with self._lock:
                    self._last_s = time.monotonic()
                continue
            if self._done.is_set():
                return
            self.reason = (
                "no answer before the reconnect budget ran out"
                if out_of_budget
                else f"no data from the agent for {self.stall_s:g} s"
            )
            self._call.cancel()
            return
