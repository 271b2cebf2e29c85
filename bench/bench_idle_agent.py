"""(f) Idle agent footprint: RSS (agent and its children) and CPU% of one core while `agent serve` waits.

Goals: <= 60 MB RSS, <= 1% of one core. Measured with zeroconf advertising on (the default) and off,
and with the opt-in `--warm-worker` (a worker with ONNX Runtime imported waits for the next job: the
goal is for the default agent, this row says what the option costs).
"""

from __future__ import annotations

import argparse
import time

import psutil
from harness import Row, isolated_env, load_average, print_table, record, start_agent

GOAL_RSS_MB = 60.0
GOAL_CPU_PCT = 1.0


def footprint(pid: int, window_s: float) -> tuple[float, float, float]:
    """(RSS MB incl. children, USS MB incl. children, CPU % of one core over `window_s`)."""
    proc = psutil.Process(pid)

    def procs() -> list[psutil.Process]:
        return [proc, *proc.children(recursive=True)]

    def cpu_s() -> float:
        total = 0.0
        for p in procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    c0, t0 = cpu_s(), time.monotonic()
    time.sleep(window_s)
    c1, t1 = cpu_s(), time.monotonic()
    rss = uss = 0.0
    for p in procs():
        info = p.memory_full_info()
        rss += info.rss
        uss += info.uss
    return rss / 1e6, uss / 1e6, 100.0 * (c1 - c0) / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s window instead of 10 s")
    parser.add_argument("--record", action="store_true", help="refresh this section of bench/RESULTS.md")
    args = parser.parse_args()
    window_s = 5.0 if args.quick else 10.0
    settle_s = 3.0
    print(f"before: {load_average()}")
    rows: list[Row] = []
    with isolated_env() as (root, env):
        configs = (
            ("advertising (default)", True, []),
            ("--no-advertise", False, []),
            ("--warm-worker (opt-in)", True, ["--warm-worker"]),
        )
        for label, advertise, extra in configs:
            goal_applies = not extra
            agent = start_agent(root / f"agent-{len(rows)}", env, extra, advertise=advertise)
            try:
                time.sleep(settle_s)
                rss, uss, cpu = footprint(agent.pid, window_s)
            finally:
                agent.stop()
            print(f"{label}: RSS {rss:.1f} MB (USS {uss:.1f} MB), CPU {cpu:.2f}% of one core over {window_s:g} s")
            rows.append(
                Row(
                    f"idle agent RSS incl. children, {label}",
                    f"<= {GOAL_RSS_MB:.0f} MB" if goal_applies else "-",
                    f"{rss:.1f} MB (USS {uss:.1f} MB)",
                    f"{rss / GOAL_RSS_MB:.2f}" if goal_applies else "-",
                )
            )
            rows.append(
                Row(
                    f"idle agent CPU over {window_s:g} s, {label}",
                    f"<= {GOAL_CPU_PCT:.0f}%",
                    f"{cpu:.2f}% of one core",
                    f"{cpu / GOAL_CPU_PCT:.2f}",
                )
            )
    print(f"after: {load_average()}")
    print_table("(f) idle agent footprint", rows)
    if args.record:
        record(
            "(f) idle agent footprint",
            rows,
            notes=[
                "MB = 10^6 bytes; RSS counts shared library pages, USS only the agent's own.",
                f"CPU from psutil cpu_times (10 ms ticks): 0.00% means under {100 * 0.01 / window_s:.2f}% of one core.",
            ],
        )


if __name__ == "__main__":
    main()
