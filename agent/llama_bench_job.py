"""The worker's job for a GGUF model measured by the user's llama-bench (agent/runtimes/llama_bench.py).

The same events as the in-process generation benchmark (agent/generation.py), so the agent, the journal and
the host treat both alike: info once the model has been checked by one short llama-bench run, then (after
the agent's go) a warmup and a measure phase, each an invocation per prompt length, whose repetitions travel
as generations. Measure repeats invocations until each prompt length has at least `runs` repetitions and has
run at least `min_duration_s` seconds. llama-bench runs apart from the worker, so its memory is its own: the
peak reported is the larger of the worker's and llama-bench's (RUSAGE_CHILDREN).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from agent.errors import InvalidInput
from agent.generation import MAX_TOKENS, MEASURE, WARMUP, send
from agent.rss import peak_rss_bytes
from agent.runtimes import llama_bench
from agent.runtimes.llamacpp import int_options, model_info

GGUF_MISSING = "the gguf package reads a GGUF model's header (its quantization type): pip install gguf on the agent"


def _lengths(generation: dict[str, Any]) -> tuple[list[int], int]:
    if generation.get("prompt_text"):
        raise InvalidInput(
            "llama-bench measures synthetic prompts of given lengths, not a text: use --prompt-len, or "
            "llama-cpp-python on the agent for --prompt-file"
        )
    gen_len = int(generation.get("gen_len", 0))
    lengths = [int(n) for n in generation.get("prompt_lens", [])]
    if not 0 < gen_len <= MAX_TOKENS or not lengths or any(not 0 < n <= MAX_TOKENS for n in lengths):
        raise InvalidInput(f"prompt lengths and gen_len must be between 1 and {MAX_TOKENS} tokens")
    return lengths, gen_len


def run_llama_bench(worker: Any, path: str) -> None:
    """The whole job; `worker` is agent.worker.Worker (events, control line, progress)."""
    spec = worker.spec
    model = spec["model_path"]
    info = model_info(Path(model), GGUF_MISSING)
    lengths, gen_len = _lengths(spec.get("generation", {}))
    bench = llama_bench.LlamaBench(path, int(spec.get("threads", 0)), int_options(spec.get("options", {})))
    # One short run loads the model the way the measurement will: a bad file or binary fails here, in prepare.
    started = time.monotonic_ns()
    check = bench.run(model, lengths[0], 1, 1)
    pp, tg = llama_bench.split_tests(check.tests, lengths[0], 1)
    notes = {
        "latency_source": "block_means",
        "runner": f"llama-bench {llama_bench.version(check.tests)}",
        "llama_bench_tests": "pp (prompt) and tg (generation) tests, each repetition timed as a whole",
        "quantization": info.quantization,
        "quantization_source": info.quantization_source,
        "architecture": info.architecture,
        "n_ctx": "prompt + generated tokens (llama-bench sizes each test's context)",
        "n_ctx_train": str(info.context_length or ""),
        **llama_bench.settings(check.tests),
    }
    worker.event(
        type="info",
        runtime="llama-bench",
        runtime_version=llama_bench.version(check.tests),
        providers=[b.strip() for b in notes.get("backends", "CPU").split(",") if b.strip()],
        load_time_ns=check.last_result_ns - started,
        load_rss_delta_bytes=0,
        first_inference_ns=int(pp.avg_ns + tg.avg_ns),
        inputs=[{"name": "input_ids", "dtype": "int32", "shape": [1, n]} for n in lengths],
        outputs=[{"name": "tokens", "dtype": "int32", "shape": [1, gen_len]}],
        threads=int(notes.get("n_threads") or spec.get("threads", 0) or 0),
        inputs_source="random",
    )
    if not worker.await_go():
        return  # the agent cancelled the job
    warmup_count = _phase(worker, bench, model, lengths, gen_len, WARMUP)
    measured = _phase(worker, bench, model, lengths, gen_len, MEASURE)
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    worker.event(
        type="end",
        measured=measured,
        warmup=warmup_count,
        warmup_stable=True,  # llama-bench's own warmup run precedes every test; there is no plateau to wait for
        first_inference_ns=int(pp.avg_ns + tg.avg_ns),
        peak_rss_bytes=max(peak_rss_bytes(), children_peak),
        op_by_type=[],
        op_top_nodes=[],
        notes=notes,
    )


def _phase(worker: Any, bench: llama_bench.LlamaBench, model: str, lengths: list[int], gen_len: int, phase: int) -> int:
    spec = worker.spec
    name = "warmup" if phase == WARMUP else "measure"
    worker.phase = name
    begin = time.monotonic_ns()
    worker.event(type="phase", phase=name, start_ns=begin)
    count = 0
    for prompt_len in lengths:
        if phase == WARMUP:
            wanted, min_ns = int(spec.get("warmup", 1)), 0
        else:
            wanted = max(1, int(spec.get("runs", 10)))
            min_ns = int(float(spec.get("min_duration_s", 0.0)) * 1e9)
        done = measured_ns = 0
        reps = wanted
        while reps > 0:
            invocation = bench.run(model, prompt_len, gen_len, llama_bench.check_reps(reps))
            pp, tg = llama_bench.split_tests(invocation.tests, prompt_len, gen_len)
            found = llama_bench.generations(pp, tg, reps, invocation.last_result_ns)
            send(worker, phase, prompt_len, found)
            done += len(found)
            count += len(found)
            # The minimum duration is of generating, as in-process: llama-bench's start and model load do not count.
            span_ns = found[-1].token_end_ns[-1] - found[0].start_ns
            measured_ns += span_ns
            if phase == MEASURE:
                worker.done = count
            reps = llama_bench.next_reps(wanted - done, min_ns - measured_ns, span_ns / len(found))
    worker.event(type="phase", phase=name, start_ns=begin, end_ns=time.monotonic_ns(), count=count, stable=True)
    return count
