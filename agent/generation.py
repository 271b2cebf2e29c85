"""The worker's generation benchmark: greedy generations per prompt length, every token timestamped.

A generative model's unit of work is a generation (a prompt in, gen_len tokens out), so warmup and measure
count generations: at least `warmup` per prompt length (capped by max_warmup_s), then per prompt length at
least `runs` generations AND at least `min_duration_s` seconds. Each generation travels twice: as one
latency window (start to last token, so the inference machinery - energy per window, validity - applies
unchanged) and as a "tokens" event with the prefill end and each token's ready time (TokenBlock).
"""

from __future__ import annotations

import time
from typing import Any

from agent import frames
from agent.errors import InvalidInput
from agent.frames import FLUSH_INTERVAL_NS
from agent.rss import peak_rss_bytes
from agent.runtimes.generative import Generation, GenerativeSession

WARMUP = 5
MEASURE = 6
#: Longest prompt or generation a job may ask for (the model's context length is checked as well).
MAX_TOKENS = 1_000_000


def prompts(session: GenerativeSession, generation: dict[str, Any]) -> list[list[int]]:
    """The prompts to sweep: the text tokenized on the board, or synthetic ids of each requested length."""
    gen_len = int(generation.get("gen_len", 0))
    if not 0 < gen_len <= MAX_TOKENS:
        raise InvalidInput(f"gen_len must be between 1 and {MAX_TOKENS}, got {gen_len}")
    text = generation.get("prompt_text") or ""
    if text:
        found = [session.encode(text)]
    else:
        lengths = [int(n) for n in generation.get("prompt_lens", [])]
        if not lengths or any(not 0 < n <= MAX_TOKENS for n in lengths):
            raise InvalidInput(f"prompt lengths must be between 1 and {MAX_TOKENS} tokens, got {lengths}")
        found = [session.synthetic_prompt(n) for n in lengths]
    for prompt in found:
        session.check_lengths(len(prompt), gen_len)
    return found


def run_generation(worker: Any, runtime: Any) -> None:
    """The whole job for a generative model; `worker` is agent.worker.Worker (events, control line, progress)."""
    spec = worker.spec
    session, load_time_ns, load_rss_delta = worker.load_session(runtime)
    generation = spec.get("generation", {})
    sweep = prompts(session, generation)
    gen_len = int(generation["gen_len"])
    # One short generation validates the model end to end before the board is settled for it.
    first = session.generate(sweep[0], 1)
    first_inference_ns = first.token_end_ns[-1] - first.start_ns
    worker.event(
        type="info",
        runtime=runtime.name,
        runtime_version=runtime.version(),
        providers=list(session.providers),
        load_time_ns=load_time_ns,
        load_rss_delta_bytes=load_rss_delta,
        first_inference_ns=first_inference_ns,
        inputs=[{"name": "input_ids", "dtype": "int64", "shape": [1, len(p)]} for p in sweep],
        outputs=[{"name": "tokens", "dtype": "int64", "shape": [1, gen_len]}],
        threads=int(session.settings.get("n_threads") or spec.get("threads", 0)),
        inputs_source="text" if generation.get("prompt_text") else "random",
    )
    if not worker.await_go():
        return  # the agent cancelled the job
    warmup_count = _phase(worker, session, sweep, gen_len, WARMUP)
    measured = _phase(worker, session, sweep, gen_len, MEASURE)
    worker.event(
        type="end",
        measured=measured,
        warmup=warmup_count,
        warmup_stable=True,  # a fixed count per prompt length: there is no latency plateau to wait for
        first_inference_ns=first_inference_ns,
        peak_rss_bytes=peak_rss_bytes(),
        op_by_type=[],
        op_top_nodes=[],
        notes=dict(session.settings),  # what the runtime used (llama.cpp: quantization, n_ctx, n_batch, ...)
    )
    session.close()


def _phase(worker: Any, session: GenerativeSession, sweep: list[list[int]], gen_len: int, phase: int) -> int:
    """Warmup (at least `warmup` per prompt, within max_warmup_s) or measure (`runs` and `min_duration_s` each)."""
    spec = worker.spec
    name = "warmup" if phase == WARMUP else "measure"
    worker.phase = name
    clock = time.monotonic_ns
    begin = clock()
    worker.event(type="phase", phase=name, start_ns=begin)
    count = 0
    for prompt in sweep:
        if phase == WARMUP:
            minimum, min_ns = int(spec.get("warmup", 1)), 0
            cap_ns = int(float(spec.get("max_warmup_s", 30.0)) * 1e9)
        else:
            minimum, min_ns = max(1, int(spec.get("runs", 10))), int(float(spec.get("min_duration_s", 0.0)) * 1e9)
            cap_ns = 0
        started = clock()
        last_flush = started
        pending: list[Generation] = []
        done = 0
        while done < minimum or clock() - started < min_ns:
            if cap_ns and clock() - started >= cap_ns:
                break
            pending.append(session.generate(prompt, gen_len))
            done += 1
            count += 1
            if clock() - last_flush >= FLUSH_INTERVAL_NS:
                send(worker, phase, len(prompt), pending)
                pending = []
                last_flush = clock()
                if phase == MEASURE:
                    worker.done = count
        send(worker, phase, len(prompt), pending)
        if phase == MEASURE:
            worker.done = count
    worker.event(type="phase", phase=name, start_ns=begin, end_ns=clock(), count=count, stable=True)
    return count


def send(worker: Any, phase: int, prompt_tokens: int, pending: list[Generation]) -> None:
    """The generations since the last flush: a "tokens" event each, then their windows as one latency block.

    Sent every FLUSH_INTERVAL_NS like the inference windows (agent/worker.py), not after every generation: a
    generation of a small model lasts about a millisecond, and waking the agent (frame parsing, journal, stream)
    that often took CPU from the next generations on a small board.
    """
    if not pending:
        return
    for generated in pending:
        frames.write_event(
            worker.out,
            {
                "type": "tokens",
                "phase": phase,
                "prompt_tokens": prompt_tokens,
                "start_ns": generated.start_ns,
                "prefill_end_ns": generated.prefill_end_ns,
                "token_end_ns": generated.token_end_ns,
            },
        )
    frames.write_latency(worker.out, phase, [g.start_ns for g in pending], [g.token_end_ns[-1] for g in pending])
