"""(k) Generation fidelity: the agent's decode tokens/s and TTFT vs a bare onnxruntime-genai loop, same model.

Interleaved in rounds: bare loop, agent run (the real path: `host profile MODEL_DIR --device` over gRPC to an
`agent serve` process, worker subprocess, tokens streamed through the journal), bare loop again. Each round's
ratio is the agent's figure over the mean of its two bracketing bare figures; the figure is the median over
rounds. Besides the pooled decode tokens/s (a mean, which preemption stalls dominate on a loaded machine) it
compares ITL p50, and notes the CPU the agent and host processes used beside the worker. The model is the tests'
tiny random-weight decoder (tests/genai_model.py), built here: no downloads. Goal: within 2% (issue 15).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from harness import REPO, Row, cpu_seconds, host_profile, isolated_env, print_table, record, start_agent

sys.path.insert(0, str(REPO))
from tests.genai_model import write_genai_dir

PROMPT_LEN, GEN_LEN = 128, 32


def bare_loop(model_dir: Path, runs: int) -> tuple[float, float, float]:
    """(decode tokens/s, TTFT p50 ms, ITL p50 ms) of a plain greedy loop, as onnxruntime-genai's examples write it."""
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.overlay('{"model": {"decoder": {"session_options": {"intra_op_num_threads": 1}}}}')
    model = og.Model(config)
    prompt = [(i * 7919 + 13) % 256 for i in range(PROMPT_LEN)]
    ttft, itl, decode_s, decoded = [], [], 0.0, 0
    for index in range(runs + 2):
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=PROMPT_LEN + GEN_LEN, min_length=PROMPT_LEN + GEN_LEN)
        generator = og.Generator(model, params)
        t0 = time.monotonic_ns()
        generator.append_tokens([prompt])
        stamps = []
        while not generator.is_done():
            generator.generate_next_token()
            stamps.append(time.monotonic_ns())
        if index < 2:
            continue  # warmup, as the agent's --warmup 2
        ttft.append((stamps[0] - t0) / 1e6)
        itl.extend(np.diff(stamps) / 1e6)
        decode_s += (stamps[-1] - stamps[0]) / 1e9
        decoded += len(stamps) - 1
    return decoded / decode_s, float(np.median(ttft)), float(np.median(itl))


def _children_cpu_s() -> float:
    """CPU seconds of this process's exited children (the `host profile` subprocess once it has ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    with isolated_env() as (root, env):
        model_dir = write_genai_dir(root / "tiny_genai_dir")
        agent = start_agent(root / "agent", env)
        decode_ratios, ttft_ratios, itl_ratios, side_cpu = [], [], [], []
        try:
            for _ in range(args.rounds):
                before = bare_loop(model_dir, args.runs)
                agent_cpu_s = cpu_seconds(agent.pid)[0]
                host_cpu_s = _children_cpu_s()
                doc = host_profile(
                    model_dir,
                    [
                        "--device",
                        agent.address,
                        "--prompt-len",
                        str(PROMPT_LEN),
                        "--gen-len",
                        str(GEN_LEN),
                        "--runs",
                        str(args.runs),
                        "--warmup",
                        "2",
                        "--min-duration",
                        "0",
                        "--idle",
                        "0",
                        "--threads",
                        "1",
                    ],
                    env,
                    root,
                )
                agent_cpu_s = cpu_seconds(agent.pid)[0] - agent_cpu_s
                host_cpu_s = _children_cpu_s() - host_cpu_s
                after = bare_loop(model_dir, args.runs)
                (row,) = doc["devices"][0]["generation"]
                measure_s = doc["devices"][0]["duration_s"] or float("nan")
                side_cpu.append((agent_cpu_s, host_cpu_s, measure_s))
                itl_ratios.append(row["itl_ms"]["p50"] / ((before[2] + after[2]) / 2))
                decode_ratios.append(row["decode_tokens_per_s"] / ((before[0] + after[0]) / 2))
                ttft_ratios.append(row["ttft_ms"]["p50"] / ((before[1] + after[1]) / 2))
        finally:
            agent.stop()
    rows = [
        Row(
            "ITL p50, agent / bare",
            "0.98-1.02",
            f"{statistics.median(itl_ratios):.3f}",
            " ".join(f"{r:.3f}" for r in itl_ratios),
        ),
        Row(
            "decode tokens/s, agent / bare",
            "0.98-1.02",
            f"{statistics.median(decode_ratios):.3f}",
            " ".join(f"{r:.3f}" for r in decode_ratios),
        ),
        Row(
            "TTFT p50, agent / bare",
            "0.98-1.02",
            f"{statistics.median(ttft_ratios):.3f}",
            " ".join(f"{r:.3f}" for r in ttft_ratios),
        ),
    ]
    print_table("(k) generation fidelity", rows)
    notes = [
        f"tiny random-weight decoder (tests/genai_model.py), prompt {PROMPT_LEN}, {GEN_LEN} tokens, {args.runs} "
        f"generations per run, 1 thread, {args.rounds} rounds (bare, agent, bare); ratio column lists each round",
        "CPU the agent process (worker excluded) and the host process used per agent run, and the run's measured "
        "span: " + "; ".join(f"{a:.2f} s + {h:.2f} s for {m:.2f} s" for a, h, m in side_cpu),
        f"{time.monotonic() - started:.0f} s",
    ]
    if args.record:
        record("(k) generation fidelity (issue 15)", rows, notes)


if __name__ == "__main__":
    main()
