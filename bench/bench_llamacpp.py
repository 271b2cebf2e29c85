"""(u) llama.cpp generation fidelity: the agent's decode tokens/s, TTFT and ITL vs a bare llama-cpp-python loop.

Interleaved in rounds as bench_genai.py does for ONNX Runtime GenAI: bare loop, agent run (the real path:
`host profile MODEL.gguf --device` over gRPC to an `agent serve` process, its worker loading the model with
llama-cpp-python, tokens streamed through the journal), bare loop again. Each round's ratio is the agent's figure
over the mean of its two bracketing bare figures; the figure is the median over rounds. The bare loop is what a
llama-cpp-python user writes: `Llama(...)`, then per prompt `reset()` and `generate(prompt, temp=0)`, a timestamp
at each yielded token. The model is a random-weight Llama written with the gguf package (tests/gguf_model.py),
sized so that a decode step takes about a millisecond on one thread: no downloads. Goal: within 2% on ITL p50.

A second comparison holds on a loaded machine, where rounds seconds apart see different loads: the agent's
own generation code (LlamaCppSession.generate, as its worker runs it) and the bare generate() alternate
generation by generation in one process, and their per-generation ITL medians and TTFTs are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from harness import REPO, Row, host_profile, isolated_env, load_average, print_table, record, start_agent

sys.path.insert(0, str(REPO))
from tests.gguf_model import write_gguf

PROMPT_LEN, GEN_LEN = 128, 32
#: The bench model: 4 layers of hidden 512 and feed-forward 1408, Q8_0 (about 15 MB).
LAYERS, HIDDEN, FEED_FORWARD = 4, 512, 1408


def bare_loop(model: Path, runs: int) -> tuple[float, float, float]:
    """(decode tokens/s, TTFT p50 ms, ITL p50 ms) of llama-cpp-python's own greedy generate(), one thread."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=512, n_batch=512, n_threads=1, n_threads_batch=1, verbose=False)
    prompt = [(i * 7919 + 13) % 256 + 3 for i in range(PROMPT_LEN)]  # ordinary tokens: past <unk>, <s>, </s>
    ttft, itl, decode_s, decoded = [], [], 0.0, 0
    for index in range(runs + 2):
        llm.reset()  # without it, generate() would reuse the cached prompt and skip the prefill
        t0 = time.monotonic_ns()
        stamps = []
        for _ in llm.generate(prompt, temp=0.0, reset=True):
            stamps.append(time.monotonic_ns())
            if len(stamps) == GEN_LEN:
                break
        if index < 2:
            continue  # warmup, as the agent's --warmup 2
        ttft.append((stamps[0] - t0) / 1e6)
        itl.extend(np.diff(stamps) / 1e6)
        decode_s += (stamps[-1] - stamps[0]) / 1e9
        decoded += len(stamps) - 1
    llm.close()
    return decoded / decode_s, float(np.median(ttft)), float(np.median(itl))


def interleaved(model: Path, generations: int) -> tuple[float, float]:
    """(ITL p50 ratio, TTFT p50 ratio), agent session / bare generate(), alternating generation by generation."""
    import llama_cpp

    from agent.runtimes.llamacpp import LlamaCppBackend

    session = LlamaCppBackend().load(
        str(model), threads=1, providers=[], options={"n_ctx": "512", "n_batch": "512"}, op_profile=False
    )
    bare = llama_cpp.Llama(model_path=str(model), n_ctx=512, n_batch=512, n_threads=1, n_threads_batch=1, verbose=False)
    prompt = session.synthetic_prompt(PROMPT_LEN)
    ours: dict[str, list[float]] = {"itl": [], "ttft": []}
    theirs: dict[str, list[float]] = {"itl": [], "ttft": []}
    for index in range(generations + 2):
        g = session.generate(prompt, GEN_LEN)
        bare.reset()
        t0 = time.monotonic_ns()
        stamps = []
        for _ in bare.generate(prompt, temp=0.0, reset=True):
            stamps.append(time.monotonic_ns())
            if len(stamps) == GEN_LEN:
                break
        if index < 2:
            continue
        ours["itl"].append(float(np.median(np.diff(g.token_end_ns))))
        ours["ttft"].append(float(g.token_end_ns[0] - g.start_ns))
        theirs["itl"].append(float(np.median(np.diff(stamps))))
        theirs["ttft"].append(float(stamps[0] - t0))
    session.close()
    bare.close()
    return (
        float(np.median(ours["itl"]) / np.median(theirs["itl"])),
        float(np.median(ours["ttft"]) / np.median(theirs["ttft"])),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--interleaved", type=int, default=400, help="generations a side in one process")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    load_at_start = load_average()
    with isolated_env() as (root, env):
        model = write_gguf(root / "bench.gguf", "Q8_0", layers=LAYERS, hidden=HIDDEN, feed_forward=FEED_FORWARD)
        agent = start_agent(root / "agent", env)
        decode_ratios, ttft_ratios, itl_ratios, itl_ms = [], [], [], []
        try:
            for _ in range(args.rounds):
                before = bare_loop(model, args.runs)
                doc = host_profile(
                    model,
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
                        "--ctx-size",
                        "512",
                        "--batch-size",
                        "512",
                    ],
                    env,
                    root,
                )
                after = bare_loop(model, args.runs)
                (row,) = doc["devices"][0]["generation"]
                itl_ms.append((row["itl_ms"]["p50"], (before[2] + after[2]) / 2))
                itl_ratios.append(row["itl_ms"]["p50"] / ((before[2] + after[2]) / 2))
                decode_ratios.append(row["decode_tokens_per_s"] / ((before[0] + after[0]) / 2))
                ttft_ratios.append(row["ttft_ms"]["p50"] / ((before[1] + after[1]) / 2))
        finally:
            agent.stop()
        same_process = interleaved(model, args.interleaved)
    rows = [
        Row("ITL p50, agent / bare", "0.98-1.02", f"{statistics.median(itl_ratios):.3f}", _each(itl_ratios)),
        Row(
            "decode tokens/s, agent / bare",
            "0.98-1.02",
            f"{statistics.median(decode_ratios):.3f}",
            _each(decode_ratios),
        ),
        Row("TTFT p50, agent / bare", "0.98-1.02", f"{statistics.median(ttft_ratios):.3f}", _each(ttft_ratios)),
        Row("ITL p50, agent's generate / bare, one process", "0.98-1.02", f"{same_process[0]:.3f}", "alternating"),
        Row("TTFT p50, agent's generate / bare, one process", "0.98-1.02", f"{same_process[1]:.3f}", "alternating"),
    ]
    print_table("(u) llama.cpp generation fidelity", rows)
    import llama_cpp

    notes = [
        f"random-weight Llama GGUF (tests/gguf_model.py: {LAYERS} layers, hidden {HIDDEN}, feed-forward "
        f"{FEED_FORWARD}, Q8_0), prompt {PROMPT_LEN}, {GEN_LEN} tokens, {args.runs} generations per run, 1 thread, "
        f"n_ctx 512, n_batch 512, {args.rounds} rounds (bare, agent, bare); llama-cpp-python "
        f"{llama_cpp.__version__} (CPU build); ratio column lists each round",
        "ITL p50 ms per round, agent vs bare: " + "; ".join(f"{a:.3f} vs {b:.3f}" for a, b in itl_ms),
        f"one process: {args.interleaved} generations a side, agent's LlamaCppSession.generate and bare generate()"
        " alternating; ratio of the medians of per-generation ITL medians, and of TTFTs",
        f"{load_at_start} at the start; {time.monotonic() - started:.0f} s",
    ]
    for note in notes:
        print(note)
    if args.record:
        record("(u) llama.cpp generation fidelity (issue 28)", rows, notes)


def _each(ratios: list[float]) -> str:
    return " ".join(f"{r:.3f}" for r in ratios)


if __name__ == "__main__":
    main()
