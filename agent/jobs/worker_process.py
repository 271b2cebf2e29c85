"""A job's worker subprocess: started, written to, and ended (SIGTERM to its group, then SIGKILL).

Its stderr (what runtimes print, tracebacks) goes to the job's log file through a pipe the agent reads, so the
file is capped: the first WORKER_LOG_HEAD_BYTES, a line saying how much was dropped, then the last
WORKER_LOG_TAIL_BYTES (where a traceback is). A runtime printing without end filled the disk before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import IO

#: What a worker's log keeps from the start of its stderr, and from its end.
WORKER_LOG_HEAD_BYTES = 4 * 1024**2
WORKER_LOG_TAIL_BYTES = 256 * 1024


def is_exiting(pid: int) -> bool:
    """The process is dead or dying though not yet reaped: its main thread is a zombie (or gone).

    A killed multithreaded worker (ONNX Runtime's threads) turns its main thread into a zombie at once, but
    waitpid() reports nothing and its pipes stay open until every other thread has torn down, which on a busy
    board takes long enough for a job to be handed to it. /proc tells; without /proc, assume it lives."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]  # the name in parentheses may hold spaces
    return state in (["Z"], ["X"], ["x"])


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
    """Start `python -m agent.inference.worker`, its stderr to log_path (capped); it waits for a spec line on stdin."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "agent.inference.worker", *(["--preload"] if preload else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a signal meant for the agent's terminal does not hit the worker
    )
    assert worker.stderr is not None
    copy_capped(worker.stderr, log_path)
    return worker


def copy_capped(
    source: IO[bytes],
    log_path: Path,
    head_bytes: int = WORKER_LOG_HEAD_BYTES,
    tail_bytes: int = WORKER_LOG_TAIL_BYTES,
) -> threading.Thread:
    """Copy `source` to log_path on a daemon thread until EOF, keeping at most head + tail bytes (and a line
    between them saying how many were dropped). The file may be renamed meanwhile: the thread holds it open."""
    out = open(log_path, "wb")  # noqa: SIM115 (closed by the thread)

    def copy() -> None:
        written, dropped = 0, 0
        tail: deque[bytes] = deque()
        tail_held = 0
        with source, out:
            while chunk := source.read1(65536) if hasattr(source, "read1") else source.read(65536):
                if written < head_bytes:
                    keep = chunk[: head_bytes - written]
                    out.write(keep)
                    out.flush()
                    written += len(keep)
                    chunk = chunk[len(keep) :]
                if not chunk:
                    continue
                tail.append(chunk)
                tail_held += len(chunk)
                while tail_held - len(tail[0]) >= tail_bytes:
                    dropped += len(tail[0])
                    tail_held -= len(tail.popleft())
            kept = b"".join(tail)
            dropped += max(0, len(kept) - tail_bytes)
            kept = kept[-tail_bytes:] if tail_bytes else b""
            if dropped:
                out.write(f"\n[edgeprof: {dropped} bytes of the worker's output dropped here]\n".encode())
            out.write(kept)

    thread = threading.Thread(target=copy, name="worker-log", daemon=True)
    thread.start()
    return thread


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
