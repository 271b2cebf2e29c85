"""Ctrl-C and SIGTERM during a profile: the first stops every job and keeps what was measured, a second quits.

A user who presses Ctrl-C (or a CI system that cancels with SIGTERM) wants the run to stop within seconds,
with what it measured so far kept: every device's stream is cancelled at once, its job is cancelled on the
agent, the samples the agent journalled up to then are collected, and the run is stored with those devices
marked "interrupted". A second signal quits at once (exit 130); jobs on remote agents are then still
cancelled by the agents' own deadlines, and the embedded local agent dies with the host (PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

#: The exit status of a command stopped by SIGINT (128 + 2), as shells report it.
EXIT_INTERRUPTED = 130


class StopSignal:
    """Set once, from a signal handler or a test; callbacks registered before or after it run once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._next = 0
        #: "SIGINT" / "SIGTERM", or what set it.
        self.reason = ""

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._event.wait(timeout_s)

    def set(self, reason: str = "stopped") -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            callback()

    def on_set(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run ``callback`` when the signal is set (now, if it already is); returns what unregisters it."""
        with self._lock:
            key = self._next
            self._next += 1
            if not self._event.is_set():
                self._callbacks[key] = callback
                return lambda: self._callbacks.pop(key, None) and None
        callback()
        return lambda: None


@contextmanager
def stop_on_signals(stop: StopSignal, announce: Callable[[str], None] | None = None) -> Iterator[StopSignal]:
    """SIGINT and SIGTERM set ``stop`` the first time; the second time the host quits at once (exit 130)."""

    def say(text: str) -> None:
        (announce or (lambda t: print(t, file=sys.stderr, flush=True)))(text)

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            say(f"host: {name} again: quitting now; jobs on remote agents end by their own deadlines")
            os._exit(EXIT_INTERRUPTED)  # threads may be blocked in the network: a clean exit would wait on them
        say(f"host: {name}: stopping every job and keeping what was measured (again to quit at once)")
        threading.Thread(target=stop.set, args=(name,), name="stop", daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
