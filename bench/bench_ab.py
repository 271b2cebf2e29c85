"""(i) host ab: how often an A/A pair fails the gate, and whether a candidate with ~15% more work is caught.

Issue 11: 20 `host ab M M --repeat 5 --threads 1 --fail-on-regression 5` over at least two real models
(goal: 0-1 fail), and `host ab M M+15%` caught every time. The candidate is the model with a strided
Conv+Relu chain appended (bench/model_variants.py), sized so that plain ONNX Runtime at one thread runs
it ~15% slower than the base (calibrated here by timing, since MACs do not map to time the same way for
every model). One `agent serve` on loopback serves every command, so only the measurement differs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from harness import Row, isolated_env, light_model, load_average, print_table, record, start_agent
from model_variants import append_work


def ort_ratio(base: Path, candidate: Path, rounds: int = 40) -> float:
    """Median latency ratio candidate/base with plain ONNX Runtime, one thread, interleaved."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (base, candidate)]
    inp = sessions[0].get_inputs()[0]
    feed = {inp.name: np.random.default_rng(0).random(inp.shape, dtype=np.float32)}
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(None, feed)
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[1]) / statistics.median(times[0])


def calibrated_candidate(base: Path, out: Path, target_ratio: float) -> tuple[Path, float]:
    """The base with extra work, its size rescaled from timings (up to 3 times) so the ratio lands near target."""
    fraction = target_ratio - 1.0
    append_work(base, out, fraction)
    ratio = ort_ratio(base, out)
    for _ in range(3):
        if ratio <= 1.0 or abs(ratio - target_ratio) <= 0.02:
            break
        fraction *= (target_ratio - 1.0) / (ratio - 1.0)
        append_work(base, out, fraction)
        ratio = ort_ratio(base, out)
    return out, ratio


def host_ab(base: Path, cand: Path, args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float | None]:
    """Run `host ab`; returns its exit code and the p50 change in percent it printed."""
    cmd = [sys.executable, "-m", "host", "ab", str(base), str(cand), *args, "--format", "json", "--quiet"]
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600, check=False)
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError as err:
        raise RuntimeError(f"host ab printed no comparison (exit {done.returncode}): {done.stderr[-800:]}") from err
    p50 = next((c["change_pct"] for c in result["changes"] if c["metric"] == "latency p50"), None)
    return done.returncode, p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="squeezenet,shufflenet", help="onnx light models, comma-separated")
    parser.add_argument("--pairs", type=int, default=20, help="A/A pairs in all, spread over the models")
    parser.add_argument("--candidates", type=int, default=10, help="A/B pairs with the heavier candidate in all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gate", type=float, default=5.0, help="--fail-on-regression PCT")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--min-duration", type=float, default=2.0)
    parser.add_argument("--extra", type=float, default=1.15, help="candidate/base latency ratio to aim for")
    parser.add_argument("--record", action="store_true", help="write the figures to bench/RESULTS.md")
    opts = parser.parse_args()
    models = [light_model(m) for m in opts.models.split(",")]
    with isolated_env() as (root, env):
        agent = start_agent(root / "agent", env)
        try:
            common = [
                "--device", agent.address, "--repeat", str(opts.repeat), "--threads", str(opts.threads),
                "--fail-on-regression", str(opts.gate), "--runs", str(opts.runs),
                "--min-duration", str(opts.min_duration), "--idle", "0",
            ]  # fmt: skip
            candidates = {m: calibrated_candidate(m, root / f"{m.stem}_plus.onnx", opts.extra) for m in models}
            aa = [
                host_ab(models[i % len(models)], models[i % len(models)], common, env, root) for i in range(opts.pairs)
            ]
            ab = []
            for i in range(opts.candidates):
                model = models[i % len(models)]
                ab.append((model, *host_ab(model, candidates[model][0], common, env, root)))
        finally:
            agent.stop()
    aa_failed = sum(1 for code, _ in aa if code == 1)
    aa_worst = max((abs(p) for _, p in aa if p is not None), default=float("nan"))
    caught = sum(1 for _, code, _ in ab if code == 1)
    rows = [
        Row(
            f"A/A `host ab M M` failing --fail-on-regression {opts.gate:g} ({', '.join(opts.models.split(','))})",
            "0-1 of 20",
            f"{aa_failed} of {len(aa)} (largest |p50 change| {aa_worst:.1f}%)",
            f"{aa_failed}/{len(aa)}",
        ),
        Row(
            "candidate with extra work caught (exit 1)",
            "every time",
            f"{caught} of {len(ab)}",
            f"{caught}/{len(ab)}",
        ),
    ]
    notes = [
        f"{m.stem}: candidate {ratio:.3f}x the base with plain ONNX Runtime at 1 thread; p50 change seen by host ab: "
        + ", ".join(f"{p:+.1f}%" for model, _, p in ab if model == m and p is not None)
        for m, (_, ratio) in candidates.items()
    ]
    notes.append(
        f"--repeat {opts.repeat} --threads {opts.threads} --runs {opts.runs} --min-duration {opts.min_duration:g}"
    )
    notes.append(f"load average before/after: {load_average()}")
    print_table("(i) host ab: A/A false alarms and a caught regression", rows)
    for note in notes:
        print(f"  {note}")
    if opts.record:
        record("(i) host ab A/A and A/B", rows, notes)


if __name__ == "__main__":
    main()
