"""(l) Coordinator scale: one `host profile` against 1, 16, 64 and 256 simulated agents (issue 17).

The agents are real gRPC servers (the agent's own server factory, grpc.health included), a few processes
each hosting many, that answer Describe, HasModel and Profile with synthetic but valid streams: phases,
per-inference latency windows, a 100 Hz power rail and worker memory, then JobEnd OK. They cost almost no
CPU, so what grows with the fleet is the host's own work. Measured from the host process (os.wait4): wall
time, CPU time (user + system) and peak RSS, each also per device. Goal: the CPU each added device costs
does not grow with the fleet (at 256 no worse than 1.5x what it cost from 1 to 16): growth is linear.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Row, isolated_env, load_average, print_table, record, tiny_add_model

SIZES = (1, 16, 64, 256)
AGENT_PROCESSES = 4
INFERENCES = 200
BATCH = 50
GOAL = 1.5
T0_NS = 1_000_000_000_000
STEP_NS = 3_000_000  # one inference every 3 ms: 2 ms inside, 1 ms between


def _job_batches(job_id: str) -> Iterator[object]:
    """A whole job as an agent streams it: queued/prepare/idle/warmup phases, then measure in batches, then end."""
    from protos import agent_pb2 as pb

    n_batches = INFERENCES // BATCH
    idle_start = T0_NS - 400_000_000
    for i in range(n_batches):
        batch = pb.MeasurementBatch(job_id=job_id, seq=i + 1)
        first = T0_NS + i * BATCH * STEP_NS
        starts = [first + k * STEP_NS for k in range(BATCH)]
        if i == 0:
            batch.info.CopyFrom(pb.JobInfo(runtime="onnxruntime", runtime_version="1.0", profile="sim", threads=1))
            batch.phases.add(phase=pb.QUEUED, start_ns=idle_start - 2_000_000, end_ns=idle_start - 1_000_000)
            batch.phases.add(phase=pb.PREPARE, start_ns=idle_start - 1_000_000, end_ns=idle_start)
            batch.phases.add(phase=pb.IDLE, start_ns=idle_start, end_ns=T0_NS - 100_000_000)
            batch.phases.add(phase=pb.WARMUP, start_ns=T0_NS - 100_000_000, end_ns=T0_NS, count=10)
            batch.phases.add(phase=pb.MEASURE, start_ns=T0_NS)
            warm = [T0_NS - 100_000_000 + k * STEP_NS for k in range(10)]
            batch.latency.add(phase=pb.WARMUP, start_ns=warm, end_ns=[s + 2_000_000 for s in warm])
            idle_t = list(range(idle_start, T0_NS, 10_000_000))
            batch.series.add(
                name="VDD_IN", kind=pb.POWER_MW, role="total", sensor="sim", t_ns=idle_t, value=[2000.0] * len(idle_t)
            )
        batch.latency.add(phase=pb.MEASURE, start_ns=starts, end_ns=[s + 2_000_000 for s in starts])
        power_t = list(range(first, first + BATCH * STEP_NS, 10_000_000))
        batch.series.add(
            name="VDD_IN", kind=pb.POWER_MW, role="total", sensor="sim", t_ns=power_t, value=[5000.0] * len(power_t)
        )
        batch.series.add(name="worker", kind=pb.RSS_BYTES, sensor="psutil", t_ns=starts[:1], value=[60e6])
        if i == n_batches - 1:
            end_ns = T0_NS + INFERENCES * STEP_NS
            batch.phases.add(phase=pb.MEASURE, start_ns=T0_NS, end_ns=end_ns, count=INFERENCES)
            batch.end.CopyFrom(pb.JobEnd(status=pb.JobEnd.OK, measured=INFERENCES, peak_rss_bytes=60_000_000))
        yield batch


def serve_agents(count: int) -> None:
    """Child mode: `count` simulated agents in this process; prints their ports on one line, runs until stdin ends."""
    import grpc

    from agent.service.server import create_server
    from protos import agent_pb2 as pb
    from protos import agent_pb2_grpc

    class SimulatedAgent(agent_pb2_grpc.AgentServicer):
        def __init__(self, index: int) -> None:
            self.index = index

        def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:
            info = pb.DeviceInfo(
                hostname=f"sim-{os.getpid()}-{self.index}", profile="generic-linux", agent_version="0.1.0",
                cpu_cores=4, machine="aarch64", board="simulated board",
            )  # fmt: skip
            info.runtimes.add(name="onnxruntime", version="1.20.0", execution_providers=["CPUExecutionProvider"])
            info.sensors.add(name="VDD_IN", kind="power_mw", role="total", sensor="sim", max_rate_hz=1000)
            return info

        def HasModel(self, request: pb.HasModelRequest, context: grpc.ServicerContext) -> pb.HasModelReply:
            return pb.HasModelReply(present=True, size_bytes=1)

        def Profile(self, request: pb.ProfileRequest, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
            yield from _job_batches(request.job_id)  # type: ignore[misc]

        def Acknowledge(self, request: pb.AcknowledgeRequest, context: grpc.ServicerContext) -> pb.AcknowledgeReply:
            return pb.AcknowledgeReply()

    servers = [create_server("127.0.0.1:0", SimulatedAgent(i)) for i in range(count)]
    print(" ".join(str(port) for _, port, _ in servers), flush=True)
    sys.stdin.read()  # until the bench closes our stdin (or dies)
    for server, _, _ in servers:
        server.stop(grace=None)


def start_fleet(total: int, env: dict[str, str]) -> tuple[list[subprocess.Popen[str]], list[str]]:
    procs, addresses = [], []
    per = [total // AGENT_PROCESSES + (1 if i < total % AGENT_PROCESSES else 0) for i in range(AGENT_PROCESSES)]
    for count in (c for c in per if c):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-agents", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        ports = proc.stdout.readline().split()
        if len(ports) != count:
            raise RuntimeError(f"simulated agents did not start ({len(ports)} of {count})")
        procs.append(proc)
        addresses += [f"127.0.0.1:{p}" for p in ports]
    return procs, addresses


def run_host(model: Path, addresses: list[str], env: dict[str, str], cwd: Path, profile_to: Path | None) -> dict:
    """One `host profile` over the fleet: wall, CPU and peak RSS of the host process itself."""
    out = cwd / f"result-{len(addresses)}.json"
    devices = [arg for a in addresses for arg in ("--device", a)]
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", "host"] if profile_to else [
        sys.executable, "-m", "host",
    ]  # fmt: skip
    flags = ["--runs", str(INFERENCES), "--min-duration", "0", "--idle", "0", "--quiet", "--json", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen([*prefix, "profile", str(model), *devices, *flags], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall_s = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"host profile failed (exit {proc.returncode}): {stderr[-800:]}")
    doc = json.loads(out.read_text())
    ok = sum(1 for d in doc["devices"] if d["status"] == "ok")
    if ok != len(addresses):
        bad = next(d for d in doc["devices"] if d["status"] != "ok")
        raise RuntimeError(f"{len(addresses) - ok} device(s) failed, e.g. {bad.get('error')}")
    return {
        "n": len(addresses),
        "wall_s": wall_s,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-agents", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="fleet sizes, comma-separated")
    parser.add_argument("--profile-largest", type=Path, help="write a cProfile of the largest fleet's host here")
    parser.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args()
    if args.serve_agents:
        serve_agents(args.serve_agents)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    results = []
    with isolated_env() as (root, env):
        model = tiny_add_model(root / "tiny_add.onnx")
        procs, addresses = start_fleet(max(sizes), env)
        try:
            run_host(model, addresses[:1], env, root, None)  # compiles the model once: later runs hit the cache
            for n in sizes:
                last = n == max(sizes)
                results.append(run_host(model, addresses[:n], env, root, args.profile_largest if last else None))
                r = results[-1]
                print(f"{n:4d} agents: wall {r['wall_s']:.2f} s, CPU {r['cpu_s']:.2f} s, peak RSS {r['rss_mb']:.0f} MB")
        finally:
            for proc in procs:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=60)
    # Marginal CPU per added device (the fixed start-up cost, ~0.5 s of imports, cancels out): flat means linear.
    marginal = [None] + [1000 * (b["cpu_s"] - a["cpu_s"]) / (b["n"] - a["n"]) for a, b in itertools.pairwise(results)]
    first = next((m for m in marginal if m is not None), None)
    rows = []
    for r, m in zip(results, marginal, strict=True):
        rows.append(
            Row(
                f"{r['n']} agents: host CPU ms per added device",
                f"<= {GOAL}x the first step" if m is not None and m is not first else "-",
                f"{'-' if m is None else f'{m:.1f}'} (CPU {r['cpu_s']:.2f} s = "
                f"{1000 * r['cpu_s'] / r['n']:.1f} ms/device;"
                f" wall {r['wall_s']:.2f} s; peak RSS {r['rss_mb']:.0f} MB = {r['rss_mb'] / r['n']:.2f} MB/device)",
                "-" if m is None or first is None else f"{m / first:.2f}",
            )
        )
    title = "(l) coordinator scale, simulated agents (issue 17)"
    print_table(title, rows)
    notes = [
        f"{AGENT_PROCESSES} processes host the simulated agents (real gRPC servers: Describe, HasModel, Profile with "
        f"{INFERENCES} inferences in {INFERENCES // BATCH} batches, a 100 Hz power rail, JobEnd); tiny Add model, "
        "compiled once before the timed runs",
        "host figures from os.wait4 on the `host profile` process: CPU = user + system, peak RSS = ru_maxrss",
        f"{time.perf_counter() - started:.0f} s, {load_average()}",
    ]
    if args.record:
        record(title, rows, notes)


if __name__ == "__main__":
    main()
