"""(v) The agent's memory watch (agent/jobs/memory_limit.py): its CPU while a worker idles, and how far past the limit
a fast allocation gets before the kill.

Goals: <= 0.5% of one core at a 256 MB and a 2 GB limit (it runs beside every measured inference); overshoot
<= 100 MB when a worker touches 1.6 GB as fast as numpy fills it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

from harness import Row, load_average, print_table, record

from agent.jobs.memory_limit import MemoryWatch

GOAL_CPU_PCT = 0.5
GOAL_OVERSHOOT_MB = 100.0


def watch_cpu_pct(limit_mb: int, window_s: float) -> tuple[float, int]:
    """CPU % of one core this process spends watching an idle worker-sized process, and the reads it made."""
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        time.sleep(0.5)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        watch = MemoryWatch(idle.pid, limit_mb).start()
        time.sleep(window_s)
        watch.stop()
        after = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - start
    finally:
        idle.kill()
        idle.wait()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return 100.0 * cpu / wall, watch.reads


def overshoot_mb(limit_mb: int) -> float:
    """How far past `limit_mb` a process filling 1.6 GB with numpy got before the watch killed it."""
    hog = subprocess.Popen(
        [sys.executable, "-c", "import numpy, time; x = numpy.ones(400_000_000, numpy.float32); time.sleep(60)"],
        start_new_session=True,
    )
    watch = MemoryWatch(hog.pid, limit_mb).start()
    hog.wait(timeout=60)
    watch.stop()
    return (watch.tripped_bytes or 0) / 2**20 - limit_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="refresh this section of bench/RESULTS.md")
    args = parser.parse_args()
    print(f"before: {load_average()}")
    rows: list[Row] = []
    for limit_mb in (256, 2048):
        pct, reads = watch_cpu_pct(limit_mb, 10.0)
        rows.append(
            Row(f"watch CPU, idle worker, {limit_mb} MB limit ({reads} reads in 10 s)", f"<= {GOAL_CPU_PCT}%",
                f"{pct:.2f}%", f"{pct / GOAL_CPU_PCT:.2f}")
        )  # fmt: skip
    overshoots = [overshoot_mb(256) for _ in range(5)]
    worst = max(overshoots)
    rows.append(
        Row("overshoot past a 256 MB limit, numpy filling 1.6 GB (worst of 5)", f"<= {GOAL_OVERSHOOT_MB:.0f} MB",
            f"{worst:.0f} MB ({', '.join(f'{o:.0f}' for o in overshoots)})", f"{worst / GOAL_OVERSHOOT_MB:.2f}")
    )  # fmt: skip
    print_table("(v) memory watch", rows)
    notes = [
        "an idle child (about 10 MB resident) watched for 10 s: the poll waits the time a worker would take to touch"
        " its headroom at 5 GB/s, between 10 and 100 ms; the statm descriptor stays open (pread)",
        "before this change the watch polled every 10 ms with open/read/close: 1.8% of a core on the same box",
        f"after: {load_average()}",
    ]
    if args.record:
        record("(v) memory watch (issue 29)", rows, notes)


if __name__ == "__main__":
    main()
