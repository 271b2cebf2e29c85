"""(d) Model upload over loopback: HasModel -> UploadModel of a 200 MB file (sha256 verified by the agent).

The file is random bytes named .onnx: it would be an INVALID model at profile time, but only the
transfer is measured here. Also the cost of a cache hit (HasModel on a model the agent has).
Goal: >= 200 MB/s (MB = 10^6 bytes). The agent runs with `--max-model-mb 300`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

from harness import Row, isolated_env, load_average, print_table, record, start_agent

GOAL_MB_S = 200.0


def random_file(path: Path, size_mb: int) -> Path:
    with open(path, "wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(1024 * 1024))
    return path


def main() -> None:
    from host.fleet.client import AgentClient, sha256_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one upload instead of three")
    parser.add_argument("--record", action="store_true", help="refresh this section of bench/RESULTS.md")
    parser.add_argument("--size-mb", type=int, default=200)
    args = parser.parse_args()
    uploads = 1 if args.quick else 3
    print(f"before: {load_average()}")
    rows: list[Row] = []
    with isolated_env() as (root, env):
        model = random_file(root / "random-200mb.onnx", args.size_mb)
        size_mb = model.stat().st_size / 1e6
        t0 = time.perf_counter()
        sha = sha256_file(model)
        hash_s = time.perf_counter() - t0
        rates: list[float] = []
        hits_ms: list[float] = []
        for i in range(uploads):
            data_dir = root / f"agent-{i}"  # a fresh cache: every upload transfers the whole file
            agent = start_agent(data_dir, env, ["--max-model-mb", "300"])
            try:
                with AgentClient(agent.address) as client:
                    client.describe()  # connect first: channel setup is not upload time
                    t0 = time.perf_counter()
                    present = client.has_model(sha)
                    sent = 0 if present else client.upload(model, sha, "onnx")
                    seconds = time.perf_counter() - t0
                    if sent != model.stat().st_size:
                        raise SystemExit(f"upload sent {sent} bytes, expected {model.stat().st_size}")
                    rates.append(size_mb / seconds)
                    print(f"upload {i + 1}: {size_mb:.0f} MB in {seconds:.3f} s = {size_mb / seconds:.0f} MB/s")
                    for _ in range(50):
                        t0 = time.perf_counter()
                        if not client.has_model(sha):
                            raise SystemExit("the agent does not have the model it just received")
                        hits_ms.append((time.perf_counter() - t0) * 1e3)
                    again = client.upload(model, sha, "onnx")  # what a host that skipped HasModel would pay
                    print(f"second UploadModel of a cached model reports {again} bytes received")
            finally:
                agent.stop()
                shutil.rmtree(data_dir, ignore_errors=True)
    print(f"after: {load_average()}")
    rate = statistics.median(rates)
    hit = statistics.median(hits_ms)
    rows.append(
        Row(
            f"upload {args.size_mb} MiB ({size_mb:.0f} MB) random model (HasModel + UploadModel, median of {uploads})",
            f">= {GOAL_MB_S:.0f} MB/s",
            f"{rate:.0f} MB/s (min {min(rates):.0f}, max {max(rates):.0f})",
            f"{rate / GOAL_MB_S:.2f}x goal",
        )
    )
    rows.append(
        Row(
            "cache hit: HasModel of a cached model (median of 50)",
            "-",
            f"{hit:.2f} ms (p90 {sorted(hits_ms)[int(len(hits_ms) * 0.9)]:.2f} ms), 0 bytes",
            "-",
        )
    )
    rows.append(
        Row(
            "host sha256 of the file (before HasModel, not in the upload rate)",
            "-",
            f"{hash_s:.2f} s ({size_mb / hash_s:.0f} MB/s)",
            "-",
        )
    )
    print_table("(d) upload", rows)
    if args.record:
        record("(d) upload throughput and cache hits", rows)


if __name__ == "__main__":
    main()
