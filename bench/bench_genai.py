"""(k) Generation fidelity: the agent's decode tokens/s and TTFT vs a bare onnxruntime-genai loop, same model.

Interleaved in rounds: bare loop, agent run (the real path: `host profile MODEL_DIR --device` over gRPC to an
`agent serve` process, worker subprocess, tokens streamed through the journal), bare loop again. Each round's
ratio is the agent's figure over the mean of its two bracketing bare figures; the figure is the median over
rounds. The model is the tests' tiny random-weight decoder (tests/genai_model.py), built here: no downloads.
Goal: within 2% (issue 15).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from harness import REPO, Row, host_profile, isolated_env, print_table, record, start_agent

sys.path.insert(0, str(REPO))
from tests.genai_model import write_genai_dir

PROMPT_LEN, GEN_LEN = 128, 32


def bare_loop(model_dir: Path, runs: int) -> tuple[float, float]:
    """(decode tokens/s, TTFT p50 ms) of a plain greedy loop, the way onnxruntime-genai's examples write it."""
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.overlay('{"model": {"decoder": {"session_options": {"intra_op_num_threads": 1}}}}')
    model = og.Model(config)
    prompt = [(i * 7919 + 13) % 256 for i in range(PROMPT_LEN)]
    ttft, decode_s, decoded = [], 0.0, 0
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
        decode_s += (stamps[-1] - stamps[0]) / 1e9
        decoded += len(stamps) - 1
    return decoded / decode_s, float(np.median(ttft))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    with isolated_env() as (root, env):
        model_dir = write_genai_dir(root / "tiny_genai_dir")
        agent = start_agent(root / "agent", env)
        decode_ratios, ttft_ratios = [], []
        try:
            for _ in range(args.rounds):
                before = bare_loop(model_dir, args.runs)
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
                after = bare_loop(model_dir, args.runs)
                (row,) = doc["devices"][0]["generation"]
                decode_ratios.append(row["decode_tokens_per_s"] / ((before[0] + after[0]) / 2))
                ttft_ratios.append(row["ttft_ms"]["p50"] / ((before[1] + after[1]) / 2))
        finally:
            agent.stop()
    rows = [
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
        f"{time.monotonic() - started:.0f} s",
    ]
    if args.record:
        record("(k) generation fidelity (issue 15)", rows, notes)


if __name__ == "__main__":
    main()
