"""A job's worker subprocess: started, written to, and ended (SIGTERM to its group, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path


def send_line(worker: subprocess.Popen[bytes], line: str) -> bool:
    """Write one line to a worker's input; False when the worker is gone (its pipe is closed)."""
    try:
        assert worker.stdin is not None
        worker.stdin.write(line.encode())
        worker.stdin.flush()
    except (BrokenPipeError, OSError):
        return False
    return True


def spawn_worker(log_path: Path, *, preload: bool) -> subprocess.Popen[bytes]:
    """Start `python -m agent.worker`, its stderr to log_path; it waits for a spec line on stdin."""
    with open(log_path, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.worker", *(["--preload"] if preload else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # a signal meant for the agent's terminal does not hit the worker
        )



def kill_worker(worker: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(worker.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        worker.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=5)


def exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "the worker did not exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory, or killed)" if name == "SIGKILL" else ""
        return f"the worker was killed by {name}{hint}"
    return f"the worker exited with code {returncode} without finishing"
