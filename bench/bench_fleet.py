"""(e) Fleet fan-out: 16 loopback agents (separate processes) profiled by one `host profile --device …`.

Compares the wall time of the fleet command with the wall time the slowest single agent needs alone
(same tiny model, same flags). Goal: fleet <= 1.3x. Runs twice: agents with cold workers (the
default: every job starts a Python worker and imports its runtime) and with `--warm-worker`. On a
small machine the 16 agents' workers compete for the same few cores, which a real fleet (one board
per agent) never does, so the bench also separates the coordinator's own time: host wall time
before the first agent receives its job and after the last job has ended, fleet against alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

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


class Timed(NamedTuple):
    wall_s: float
    doc: dict[str, Any]
    #: The command's start and end on CLOCK_MONOTONIC (shared with the agents' phase stamps).
    start_ns: int
    end_ns: int


def timed_profile(model: Path, agents: list[AgentProc], env: dict[str, str], cwd: Path, warm: bool = False) -> Timed:
    if warm:
        wait_warm(agents)
    devices = [arg for a in agents for arg in ("--device", a.address)]
    t0 = time.monotonic_ns()
    doc = host_profile(model, [*devices, *FLAGS], env, cwd, timeout_s=170)
    t1 = time.monotonic_ns()
    failed = [d for d in doc["devices"] if d["status"] != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} device(s) failed: {failed[0]['error']}")
    return Timed((t1 - t0) / 1e9, doc, t0, t1)


def warm_worker_waiting(agent_pid: int) -> bool:
    """True when the agent has a `--preload` worker blocked reading its job spec (imports done)."""
    for children in Path(f"/proc/{agent_pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                wchan = Path(f"/proc/{pid}/wchan").read_text()
            except OSError:
                continue
            if b"--preload" in cmdline and "pipe_read" in wchan:
                return True
    return False


def wait_warm(agents: list[AgentProc], timeout_s: float = 60.0) -> None:
    """Every agent idle with its warm worker ready, as a board between two jobs would be."""
    deadline = time.monotonic() + timeout_s
    while not all(warm_worker_waiting(a.pid) for a in agents):
        if time.monotonic() > deadline:
            raise SystemExit("the agents' warm workers did not become ready")
        time.sleep(0.05)


def phase_bounds(doc: dict[str, Any], name: str) -> list[tuple[int, int]]:
    out = []
    for dev in doc["devices"]:
        for phase in dev.get("phases") or []:
            if phase["name"] == name and phase["end_ns"]:
                out.append((int(phase["start_ns"]), int(phase["end_ns"])))
                break
    return out


def wall(run: Timed) -> float:
    return run.wall_s


def coordinator_s(run: Timed) -> tuple[float, float]:
    """Host time outside the agents' jobs: start to the first job's arrival, last job's end to exit.

    Agents and host share CLOCK_MONOTONIC on one machine, so the agents' phase stamps compare directly.
    """
    starts, ends = [], []
    for dev in run.doc["devices"]:
        stamps = [(int(p["start_ns"]), int(p["end_ns"])) for p in dev.get("phases") or []]
        starts.append(min(s for s, _ in stamps))
        ends.append(max(max(s, e) for s, e in stamps))
    return (min(starts) - run.start_ns) / 1e9, (run.end_ns - max(ends)) / 1e9


def run_mode(n_agents: int, warm: bool, quick: bool, repeats: int) -> dict[str, Any]:
    """Start the agents, time each alone and all together; the figures for one worker mode.

    Each agent alone and the fleet are timed `repeats` times and their medians kept: the slowest of 16
    single timings taken once would be the noisiest of 16, not the slowest agent.
    """
    with isolated_env() as (root, env):
        model = tiny_add_model(root / "tiny_add.onnx")
        agent_args = ["--warm-worker"] if warm else []
        t0 = time.perf_counter()
        # Two at a time: every agent start probes its runtimes in a subprocess (CPU-bound imports).
        with ThreadPoolExecutor(max_workers=2) as pool:
            agents = list(pool.map(lambda i: start_agent(root / f"agent-{i:02d}", env, agent_args), range(n_agents)))
        print(f"{'warm' if warm else 'cold'} workers: started {len(agents)} agents in {time.perf_counter() - t0:.1f} s")
        try:
            # Upload to every agent first, so neither figure below pays for a first upload.
            timed_profile(model, agents, env, root)
            single: list[float] = []
            single_prepare: list[float] = []
            single_coord: list[tuple[float, float]] = []
            for agent in agents[: 4 if quick else len(agents)]:
                runs = sorted((timed_profile(model, [agent], env, root, warm) for _ in range(repeats)), key=wall)
                alone = runs[len(runs) // 2]
                single.append(alone.wall_s)
                single_prepare.append(phase_s(alone.doc["devices"][0], "prepare"))
                single_coord.append(coordinator_s(alone))
            cpu0 = os.times()
            fleets = sorted((timed_profile(model, agents, env, root, warm) for _ in range(repeats)), key=wall)
            cpu1 = os.times()
            fleet = fleets[len(fleets) // 2]
        finally:
            for agent in agents:
                agent.stop()
    doc = fleet.doc
    bounds = phase_bounds(doc, "measure")
    result = {
        "single": single,
        "single_prepare": single_prepare,
        "single_coord": single_coord,
        "fleet_wall": fleet.wall_s,
        "fleet_coord": coordinator_s(fleet),
        "prepares": [phase_s(d, "prepare") for d in doc["devices"]],
        "measures": [phase_s(d, "measure") for d in doc["devices"]],
        "span": (max(e for _, e in bounds) - min(s for s, _ in bounds)) / 1e9,
        "host_cpu": ((cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system))
        / repeats,
        "fleet_walls": [f.wall_s for f in fleets],
        "repeats": repeats,
    }
    print(
        f"  alone: wall {[f'{s:.2f}' for s in single]} s; prepare {[f'{s:.2f}' for s in single_prepare]} s\n"
        f"  fleet: walls {[f'{f.wall_s:.2f}' for f in fleets]} s; in the median run prepare "
        f"{min(result['prepares']):.2f}..{max(result['prepares']):.2f} s, measure phases within {result['span']:.2f} s"
    )
    return result


def mode_rows(n_agents: int, label: str, r: dict[str, Any]) -> list[Row]:
    single, coord = r["single"], r["fleet_coord"]
    alone_before = statistics.median(c[0] for c in r["single_coord"])
    alone_after = statistics.median(c[1] for c in r["single_coord"])
    return [
        Row(
            f"{label}: fleet of {n_agents} loopback agents, tiny model: host wall / slowest single",
            f"<= {GOAL}",
            f"{r['fleet_wall']:.2f} s vs {max(single):.2f} s (medians of {r['repeats']} runs; the median agent "
            f"alone {statistics.median(single):.2f} s, of {len(single)})",
            f"{r['fleet_wall'] / max(single):.2f}",
        ),
        Row(
            f"{label}: coordinator's own time (host start to first job, last job's end to host exit)",
            "-",
            f"fleet {coord[0]:.2f} s + {coord[1]:.2f} s vs alone {alone_before:.2f} s + {alone_after:.2f} s; "
            f"host CPU {r['host_cpu']:.2f} s for the fleet command",
            f"{sum(coord) / (alone_before + alone_after):.2f}",
        ),
        Row(
            f"{label}: per-device prepare phase (worker start + model load)",
            "-",
            f"fleet median {statistics.median(r['prepares']):.2f} s, max {max(r['prepares']):.2f} s "
            f"(alone {statistics.median(r['single_prepare']):.2f} s); measure {statistics.median(r['measures']):.2f} s "
            f"each, all within {r['span']:.2f} s",
            "-",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time 4 agents alone instead of all 16")
    parser.add_argument("--record", action="store_true", help="refresh this section of bench/RESULTS.md")
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timings per agent alone and of the fleet (median)")
    parser.add_argument("--mode", choices=("both", "cold", "warm"), default="both", help="worker mode(s) to time")
    args = parser.parse_args()
    print(f"before: {load_average()}")
    rows: list[Row] = []
    for warm in (False, True):
        if args.mode != "both" and warm != (args.mode == "warm"):
            continue
        label = "--warm-worker" if warm else "cold workers (default)"
        rows += mode_rows(args.agents, label, run_mode(args.agents, warm, args.quick, args.repeats))
    print(f"after: {load_average()}")
    print_table("(e) fleet fan-out", rows)
    if args.record:
        record(
            "(e) fleet fan-out",
            rows,
            notes=[
                f"{os.cpu_count()} cores for {args.agents} agents, their workers and the host: the wall-time ratio "
                "measures core contention as much as the coordinator; the coordinator row isolates the host.",
                "Cold workers: each job starts Python and imports ONNX Runtime (~0.2 s of CPU), 16 at once. "
                "--warm-worker has them started and waiting before the run.",
            ],
        )


if __name__ == "__main__":
    main()
