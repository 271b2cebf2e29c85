"""The CPU contention sensor counts a worker's running children as the job's own: trtexec, the TensorRT runtime's
native runner, is the worker's child and its CPU is the measurement, not another process contending for the board."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from agent.sensors.contention import CpuContentionSensor


def test_a_running_child_of_an_own_process_counts_as_own_cpu() -> None:
    sensor = CpuContentionSensor([os.getpid()])
    before = sensor._own_s()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        grown = 0.0
        while time.monotonic() < deadline and grown < 0.5:  # the child has burnt 0.6 s of CPU and sleeps, unreaped
            time.sleep(0.1)
            grown = sensor._own_s() - before
        assert child.poll() is None
        assert grown >= 0.5
    finally:
        child.kill()
        child.wait()
