"""(x) How much other processes' CPU inflates latency: the measurements behind host/analysis/contention.py's rule.

One `agent serve` on loopback; squeezenet at --threads 1 and --threads 2 (all cores of the 2-core box), while
busy-loop processes run in their own sessions (as a browser or a test suite would: the kernel's autogroup
gives each session its share) at a duty cycle: none, one loop at 50%, one at 100%, two at 100%. Rounds
interleave the loads; each row is the median over rounds of p50 against the quiet p50 of the same threads,
with what the agent's contention sensor reported: the mean share of all cores others used, the share of the
worker's time they took (host/analysis/contention.py lost_share), and the verdict.

    .venv/bin/python bench/bench_contention.py --record     # ~3 min; writes bench/RESULTS.md (x)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from harness import Row, host_profile, isolated_env, light_model, load_average, print_table, record, start_agent

#: (label, busy loops, duty cycle of each).
LOADS = (("quiet", 0, 0.0), ("one loop at 50%", 1, 0.5), ("one loop at 100%", 1, 1.0), ("two loops at 100%", 2, 1.0))

_LOOP = """
import time, sys
duty = float(sys.argv[1])
while True:
    end = time.perf_counter() + 0.01 * duty
    while time.perf_counter() < end:
        pass
    if duty < 1.0:
        time.sleep(0.01 * (1.0 - duty))
"""


def _hogs(count: int, duty: float) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", _LOOP, str(duty)], start_new_session=True) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the section of bench/RESULTS.md")
    args = parser.parse_args()
    model = light_model("squeezenet")
    results: dict[tuple[int, str], list[tuple[float, float, float, bool]]] = {}
    began = time.perf_counter()
    before = load_average()
    with isolated_env() as (root, env):
        agent = start_agent(root / "agent", env)
        try:
            for _ in range(args.rounds):
                for threads in (1, 2):
                    for label, count, duty in LOADS:
                        hogs = _hogs(count, duty)
                        try:
                            time.sleep(0.5 if hogs else 0.0)
                            doc = host_profile(
                                model,
                                [
                                    "--device",
                                    agent.address,
                                    "--threads",
                                    str(threads),
                                    "--runs",
                                    "200",
                                    "--min-duration",
                                    "3",
                                    "--warmup",
                                    "20",
                                    "--idle",
                                    "0",
                                ],
                                env,
                                root,
                            )
                        finally:
                            for hog in hogs:
                                hog.kill()
                                hog.wait()
                        (device,) = doc["devices"]
                        load = device.get("machine_load") or {}
                        results.setdefault((threads, label), []).append(
                            (
                                device["latency_ms"]["p50"],
                                float(load.get("other_cpu_pct") or 0.0),
                                float(load.get("lost_share") or 0.0),
                                bool(device["validity"]["valid"]),
                            )
                        )
                        print(threads, label, results[(threads, label)][-1], flush=True)
        finally:
            agent.stop()
    rows = []
    for threads in (1, 2):
        quiet = statistics.median(r[0] for r in results[(threads, "quiet")])
        for label, _, _ in LOADS:
            got = results[(threads, label)]
            p50 = statistics.median(r[0] for r in got)
            rows.append(
                Row(
                    f"squeezenet --threads {threads}, {label}",
                    "-",
                    f"p50 {p50:.2f} ms ({100 * (p50 / quiet - 1):+.0f}% vs quiet {quiet:.2f} ms); others used"
                    f" {statistics.median(r[1] for r in got):.0f}% of the CPU, taking"
                    f" {100 * statistics.median(r[2] for r in got):.0f}% of the worker's time;"
                    f" valid in {sum(r[3] for r in got)} of {len(got)}",
                    f"{p50 / quiet:.2f}",
                )
            )
    print_table("(x) contention", rows)
    if args.record:
        record(
            "(x) contention: what other processes' CPU does to latency",
            rows,
            [
                f"{args.rounds} interleaved rounds, medians; --runs 200 --min-duration 3; busy loops in their own"
                " sessions; the 2-core box is shared, so 'quiet' includes other engineers' load",
                f"{time.perf_counter() - began:.0f} s, load average before {before}, after {load_average()}",
            ],
        )


if __name__ == "__main__":
    main()
