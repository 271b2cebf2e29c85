"""(c) Streaming throughput of latency samples over loopback gRPC. Goal: >= 100,000 samples/s.

1. Pipeline in isolation: N batches of 10k latency samples are journaled into an agent's journal
   (its data dir), a real `agent serve` process is started on it, and a host client reads them back
   through a real Attach stream, decoding every batch. samples/s = samples / stream wall time.
2. End to end: `host profile` of a single-Add model on a 1-element tensor for a few seconds; reports
   what the worker produced per second, and how long after the measure phase the host had it all.
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from harness import (
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

GOAL = 100_000
BATCH = 10_000


def journal_batches(data_dir: Path, batches: int) -> str:
    """Write a finished job with `batches` batches of BATCH latency samples; returns its job id."""
    from agent.storage.journal import Journal
    from protos import agent_pb2 as pb

    data_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(data_dir / "journal.sqlite")
    job_id = uuid.uuid4().hex
    journal.create_job(job_id, "0" * 64)
    start = list(range(1_000_000_000, 1_000_000_000 + BATCH * 1000, 1000))
    end = [t + 987 for t in start]
    for i in range(batches):
        batch = pb.MeasurementBatch(job_id=job_id)
        block = batch.latency.add(phase=pb.MEASURE)
        offset = i * BATCH * 1000
        block.start_ns.extend(t + offset for t in start)
        block.end_ns.extend(t + offset for t in end)

        def build(seq: int, batch: pb.MeasurementBatch = batch) -> bytes:
            batch.seq = seq
            payload: bytes = batch.SerializeToString()
            return payload

        journal.append(job_id, build)
    journal.set_state(job_id, "ok")
    journal.close()
    return job_id


def attach_rate(address: str, job_id: str) -> tuple[int, float]:
    """Read the whole job back through Attach; returns (samples, seconds)."""
    from host.fleet.client import AgentClient

    with AgentClient(address) as client:
        t0 = time.perf_counter()
        samples = 0
        for batch in client.attach(job_id, 0, timeout_s=120):
            for block in batch.latency:
                samples += len(block.start_ns)
        return samples, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches, shorter end-to-end run")
    parser.add_argument("--record", action="store_true", help="refresh this section of bench/RESULTS.md")
    args = parser.parse_args()
    batches = 50 if args.quick else 200
    duration_s = 2.0 if args.quick else 5.0
    rows: list[Row] = []
    print(f"before: {load_average()}")
    with isolated_env() as (root, env):
        job_id = journal_batches(root / "agent", batches)
        agent = start_agent(root / "agent", env)
        try:
            rates = []
            for _ in range(3):
                samples, seconds = attach_rate(agent.address, job_id)
                rates.append(samples / seconds)
                print(f"attach: {samples} samples in {seconds:.3f} s = {samples / seconds:,.0f} samples/s")
            best, median = max(rates), sorted(rates)[1]
            rows.append(
                Row(
                    f"Attach stream, {batches} x {BATCH} latency samples (median of 3)",
                    f">= {GOAL:,}/s",
                    f"{median:,.0f} samples/s (best {best:,.0f})",
                    f"{median / GOAL:.1f}x goal",
                )
            )
            model = tiny_add_model(root / "tiny_add.onnx")
            t0 = time.perf_counter()
            doc = host_profile(
                model,
                [
                    "--device",
                    agent.address,
                    "--threads",
                    "1",
                    "--runs",
                    "1000",
                    "--min-duration",
                    str(duration_s),
                    "--idle",
                    "0",
                    "--warmup",
                    "10",
                ],
                env,
                root,
            )
            wall = time.perf_counter() - t0
            dev = doc["devices"][0]
            if dev["status"] != "ok":
                raise SystemExit(f"end-to-end run failed: {dev['error']}")
            measure = phase_s(dev, "measure")
            n = int(dev["n_inferences"])
            produced = n / measure if measure else 0.0
            print(
                f"end to end: {n} inferences in a {measure:.2f} s measure phase ({produced:,.0f}/s), "
                f"host wall {wall:.2f} s"
            )
            rows.append(
                Row(
                    "end to end: tiny Add model, inferences produced and streamed",
                    f">= {GOAL:,}/s",
                    f"{produced:,.0f}/s ({n:,} in {measure:.2f} s; host wall {wall:.2f} s)",
                    f"{produced / GOAL:.2f}x goal",
                )
            )
        finally:
            agent.stop()
    print(f"after: {load_average()}")
    print_table("(c) streaming throughput", rows)
    if args.record:
        record(
            "(c) streaming throughput",
            rows,
            notes=[
                "the goal figure is the isolated Attach stream "
                "(real agent process, real gRPC over loopback, host decodes every batch).",
                "end to end is bounded by the worker: a Python timing loop around sess.run of a 1-element Add.",
            ],
        )


if __name__ == "__main__":
    main()
