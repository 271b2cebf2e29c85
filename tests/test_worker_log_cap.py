"""A worker's stderr log is capped: its start and its end are kept, what lies between is counted and dropped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from agent.jobs.worker_process import copy_capped, spawn_worker

MIB = 1024**2
SPEW = """
import sys
sys.stderr.write("first line\\n")
block = "runtime warning, again\\n" * 4096
for _ in range(330):  # 30 MB
    sys.stderr.write(block)
sys.stderr.write("Traceback: the line that says what went wrong\\n")
"""


def test_a_worker_printing_30_mb_leaves_a_log_of_its_head_and_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "job.log"
    proc = subprocess.Popen([sys.executable, "-c", SPEW], stderr=subprocess.PIPE)
    assert proc.stderr is not None

    copier = copy_capped(proc.stderr, log_path, head_bytes=MIB, tail_bytes=64 * 1024)
    proc.wait(60)
    copier.join(60)

    text = log_path.read_text()
    assert log_path.stat().st_size < MIB + 64 * 1024 + 200  # 30 MB before
    assert text.startswith("first line\n")
    assert text.endswith("Traceback: the line that says what went wrong\n")
    dropped = int(text.split("[edgeprof: ")[1].split(" bytes")[0])
    total = len("first line\n") + 330 * 4096 * len("runtime warning, again\n") + len(text.splitlines()[-1]) + 1
    assert dropped == total - MIB - 64 * 1024  # every byte counted: kept or dropped


def test_a_real_workers_traceback_still_lands_in_its_log(tmp_path: Path) -> None:
    log_path = tmp_path / "job.log"
    worker = spawn_worker(log_path, preload=False)
    assert worker.stdin is not None
    worker.stdin.write(b"not a spec\n")
    worker.stdin.close()

    assert worker.wait(30) != 0
    deadline = time.monotonic() + 10
    while "JSONDecodeError" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "JSONDecodeError" in log_path.read_text()
