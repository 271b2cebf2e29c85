"""(e) Fleet fan-out: 16 loopback agents (separate processes) profiled by one `host profile --device …`.

Compares the wall time of the fleet command with the wall time the slowest single agent needs alone
(same tiny model, same flags). Goal: fleet <= 1.3x. Also reports each device's prepare and measure
phases, and how far the 16 measure phases overlapped, because on a small machine the workers
(one process per job, all at once) compete for the same cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import (
    AgentProc,
    Row,
    host_profile,
    isolated_env,
    load_average,
    phase_s,
    print_table,
    record,
    start_agent,
    tiny_add_model,
)

GOAL = 1.3
FLAGS = ["--threads", "1", "--runs", "200", "--min-duration", "0.5", "--idle", "0"]


def timed_profile(model: Path, agents: list[AgentProc], env: dict[str, str], cwd: Path) -> tuple[float, dict[str, Any]]:
    devices = [arg for a in agents for arg in ("--device", a.address)]
    t0 = time.perf_counter()
    doc = host_profile(model, [*devices, *FLAGS], env, cwd, timeout_s=170)
    wall = time.perf_counter() - t0
    failed = [d for d in doc["devices"] if d["status"] != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} device(s) failed: {failed[0]['error']}")
    return wall, doc


def phase_bounds(doc: dict[str, Any], name: str) -> list[tuple[int, int]]:
    out = []
    for dev in doc["devices"]:
        for phase in dev.get("phases") or []:
            if phase["name"] == name and phase["end_ns"]:
                out.append((int(phase["start_ns"]), int(phase["end_ns"])))
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time 4 agents alone instead of all 16")
    parser.add_argument("--record", action="store_true", help="refresh this section of bench/RESULTS.md")
    parser.add_argument("--agents", type=int, default=16)
    args = parser.parse_args()
    print(f"before: {load_average()}")
    rows: list[Row] = []
    with isolated_env() as (root, env):
        model = tiny_add_model(root / "tiny_add.onnx")
        t0 = time.perf_counter()
        # Two at a time: every agent start probes its runtimes in a subprocess (CPU-bound imports).
        with ThreadPoolExecutor(max_workers=2) as pool:
            agents = list(pool.map(lambda i: start_agent(root / f"agent-{i:02d}", env), range(args.agents)))
        print(f"started {len(agents)} agents in {time.perf_counter() - t0:.1f} s")
        try:
            # Upload to every agent first, so neither figure below pays for a first upload.
            timed_profile(model, agents, env, root)
            alone = agents[: 4 if args.quick else len(agents)]
            single: list[float] = []
            single_measure: list[float] = []
            single_prepare: list[float] = []
            for agent in alone:
                wall, doc = timed_profile(model, [agent], env, root)
                single.append(wall)
                single_measure.append(phase_s(doc["devices"][0], "measure"))
                single_prepare.append(phase_s(doc["devices"][0], "prepare"))
            slowest = max(single)
            print(
                f"alone: wall {[f'{s:.2f}' for s in single]} s; measure {[f'{s:.2f}' for s in single_measure]} s; "
                f"prepare {[f'{s:.2f}' for s in single_prepare]} s"
            )
            cpu0 = os.times()
            fleet_wall, doc = timed_profile(model, agents, env, root)
            cpu1 = os.times()
            host_cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
            measures = [phase_s(d, "measure") for d in doc["devices"]]
            prepares = [phase_s(d, "prepare") for d in doc["devices"]]
            bounds = phase_bounds(doc, "measure")
            span = (max(e for _, e in bounds) - min(s for s, _ in bounds)) / 1e9
            print(
                f"fleet: wall {fleet_wall:.2f} s; measure {min(measures):.2f}..{max(measures):.2f} s; "
                f"prepare {min(prepares):.2f}..{max(prepares):.2f} s; all measure phases within {span:.2f} s"
            )
        finally:
            for agent in agents:
                agent.stop()
    print(f"after: {load_average()}")
    ratio = fleet_wall / slowest
    rows.append(
        Row(
            f"fleet of {args.agents} loopback agents, tiny model: host wall / slowest single",
            f"<= {GOAL}",
            f"{fleet_wall:.2f} s vs {slowest:.2f} s "
            f"(single median {statistics.median(single):.2f} s, of {len(single)})",
            f"{ratio:.2f}",
        )
    )
    rows.append(
        Row(
            "per-device measure phase: fleet vs alone",
            "-",
            f"fleet {statistics.median(measures):.2f} s (max {max(measures):.2f}) "
            f"vs alone {statistics.median(single_measure):.2f} s",
            "-",
        )
    )
    rows.append(
        Row(
            "per-device prepare phase (worker start + model load) in the fleet",
            "-",
            f"median {statistics.median(prepares):.2f} s, max {max(prepares):.2f} s "
            f"(alone {statistics.median(single_prepare):.2f} s); "
            f"measure phases spread over {span:.2f} s",
            "-",
        )
    )
    rows.append(Row("host CPU for the fleet command (user+sys)", "-", f"{host_cpu:.2f} s", "-"))
    print_table("(e) fleet fan-out", rows)
    if args.record:
        record(
            "(e) fleet fan-out",
            rows,
            notes=[
                f"{os.cpu_count()} cores for 16 agents + 16 worker subprocesses + the host: "
                "the fleet figure measures core contention as much as the coordinator.",
            ],
        )


if __name__ == "__main__":
    main()
