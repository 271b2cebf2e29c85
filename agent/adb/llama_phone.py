"""A GGUF model on a phone: the user's llama-bench (installed with `agent adb install-runner`) run over adb.

The phone's protocol is agent/adb/backend.py's (model pushed content-addressed, battery gauge and thermal zones
sampled by one loop on the phone, settle, screen off, idle baseline), the measurement the board's llama-bench
one (agent/runtimes/llama_bench.py): one invocation per prompt length, `-p P -n N -r R -o jsonl`, its
repetitions laid out as generations ending where the invocation ended on the phone's clock (mapped onto this
computer's), so the result says `latency_source: block_means`. Threads default to the big cores, which the
run is pinned to (taskset), as for benchmark_model. llama-bench reports no memory: the peak is left unknown.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

import numpy as np

from agent.adb import runners, screen
from agent.adb.describe import taskset_mask
from agent.adb.phone import PHONE_DIR
from agent.batches import job_end
from agent.errors import InvalidInput, InvalidModel
from agent.runtimes import llama_bench
from agent.runtimes.generative import Generation
from agent.runtimes.llama_bench_output import parse
from agent.runtimes.llamacpp import int_options
from protos import agent_pb2 as pb
from protos.gguf_file import GGUFFileError, read_gguf

_ERRORS = f"{PHONE_DIR}/llama-bench.err"
# `run` below is agent/adb/backend.py's _PhoneRun (its phone, job, notes, clock offset and phone-side steps); it
# calls this module, so this module does not import it back.


def measure_generations(run: Any, model: str, runner: runners.Runner) -> pb.JobEnd:
    """The whole part on the phone; returns its JobEnd (errors raise, as in _PhoneRun.execute)."""
    ex, req = run.ex, run.req
    gen = req.generation
    if gen.prompt_text:
        raise InvalidInput("llama-bench measures synthetic prompts of given lengths, not a text: use --prompt-len")
    lengths, gen_len = [int(n) for n in gen.prompt_lens], int(gen.gen_len)
    cores = run.backend.info.big_cores if req.options.get("adb.all_cores", "") != "1" else []
    mask = taskset_mask(cores)
    threads = req.threads or len(cores) or 4
    flags = [f"-t {threads}"]
    flags += [
        f"{llama_bench.FLAGS[k]} {v}" for k, v in int_options(dict(req.options)).items() if k in llama_bench.FLAGS
    ]
    base = f"{f'taskset {mask} ' if mask else ''}{runner.path} -m {shlex.quote(model)} {' '.join(flags)}"
    run.notes.update(
        latency_source="block_means",
        runner=f"llama-bench {runner.version}",
        llama_bench_tests="pp (prompt) and tg (generation) tests, each repetition timed as a whole",
        cpu_mask=mask or "all",
        n_ctx="prompt + generated tokens (llama-bench sizes each test's context)",
    )
    _note_quantization(run)
    run._sync_clock()
    refused = run.energy_refusal()
    check = _invoke(run, base, lengths[0], 1, 1, "loading the model")
    pp, tg = llama_bench.split_tests(check[0], lengths[0], 1)
    run.notes.update(llama_bench.settings(check[0]))
    prepared_ns = time.monotonic_ns()
    ex.emitter.info(
        pb.JobInfo(
            runtime="llama-bench",
            runtime_version=llama_bench.version(check[0]),
            execution_providers=[b.strip() for b in run.notes.get("backends", "CPU").split(",") if b.strip()],
            load_time_ns=check[2] - check[1],
            threads=threads,
            profile=ex.settings.profile,
            sample_rate_hz=1.0 / run._gauge_period_s(),
            inputs_source="random",
            device=ex.settings.describe(),
        )
    )
    ex.emitter.phase("prepare", prepared_ns, prepared_ns, detail=f"llama-bench {runner.version} on {run.phone.serial}")
    ex._flush()
    run._start_gauge(with_power=refused is None)
    run._settle()
    with screen.dark(run.phone) as changed:
        run.notes["screen"] = changed
        run._idle()
        warm = _phase(run, base, lengths, gen_len, pb.WARMUP)
        run.measured = _phase(run, base, lengths, gen_len, pb.MEASURE)
    run._finish_gauge()
    return job_end(
        pb.JobEnd.OK,
        measured=run.measured,
        warmup=warm,
        first_inference_ns=int(pp.avg_ns + tg.avg_ns),
        notes=run.notes,
    )


def _note_quantization(run: Any) -> None:
    """The model's quantization type, from its header in this computer's cache (the phone has no gguf package)."""
    local = run.ex.runner.cache.use(run.ex.part.model_sha256)
    try:
        info = read_gguf(local, "the model")
    except ImportError:
        run.notes["quantization_problem"] = "the gguf package is not installed beside the bridge: pip install gguf"
        return
    except GGUFFileError as err:
        raise InvalidModel(str(err)) from err
    run.notes.update(
        quantization=info.quantization,
        quantization_source=info.quantization_source,
        architecture=info.architecture,
        n_ctx_train=str(info.context_length or ""),
    )


def _phase(run: Any, base: str, lengths: list[int], gen_len: int, phase: int) -> int:
    """Warmup (one invocation of `--warmup` repetitions per prompt length) or measure (runs and min duration)."""
    name = "warmup" if phase == pb.WARMUP else "measure"
    run.phase = name
    count = 0
    first_ns = last_ns = 0
    for prompt_len in lengths:
        wanted = max(1, run.req.warmup) if phase == pb.WARMUP else max(1, run.req.runs or 100)
        min_ns = 0 if phase == pb.WARMUP else int(run.req.min_duration_s * 1e9)
        done = measured_ns = 0
        reps = wanted
        while reps > 0:
            tests, _, end_ns = _invoke(run, base, prompt_len, gen_len, llama_bench.check_reps(reps), name)
            pp, tg = llama_bench.split_tests(tests, prompt_len, gen_len)
            found = llama_bench.generations(pp, tg, reps, end_ns)
            _emit(run, phase, prompt_len, found)
            first_ns = first_ns or found[0].start_ns
            last_ns = found[-1].token_end_ns[-1]
            span_ns = last_ns - found[0].start_ns
            done += len(found)
            count += len(found)
            measured_ns += span_ns
            reps = llama_bench.next_reps(wanted - done, min_ns - measured_ns, span_ns / len(found))
    run.ex.emitter.phase(name, first_ns, last_ns, count=count, detail="llama-bench repetitions (block means)")
    run.ex._flush()
    return count


def _emit(run: Any, phase: int, prompt_len: int, found: list[Generation]) -> None:
    for g in found:
        run.ex.emitter.tokens(
            {
                "phase": phase,
                "prompt_tokens": prompt_len,
                "start_ns": g.start_ns,
                "prefill_end_ns": g.prefill_end_ns,
                "token_end_ns": g.token_end_ns,
            }
        )
    starts = np.array([g.start_ns for g in found], dtype=np.int64)
    run.ex.emitter.latency(phase, starts, np.array([g.token_end_ns[-1] for g in found], dtype=np.int64))
    run.ex._flush()


def _invoke(
    run: Any, base: str, prompt_len: int, gen_len: int, reps: int, what: str
) -> tuple[list[llama_bench.BenchTest], int, int]:
    """One llama-bench run on the phone: (its tests, start and end on this computer's clock)."""
    command = (
        f'cat /proc/uptime; {base} -p {prompt_len} -n {gen_len} -r {reps} -o jsonl 2>{_ERRORS}; echo "@rc $?";'
        f" cat /proc/uptime; echo @stderr; tail -n 20 {_ERRORS}"
    )
    stream = run.phone.stream(command)
    run._active = stream
    try:
        lines = list(stream.lines())
    finally:
        run._active = None
        stream.close()
    run.check_cancelled()
    errors = lines[lines.index("@stderr") + 1 :] if "@stderr" in lines else []
    lines = lines[: lines.index("@stderr")] if "@stderr" in lines else lines
    uptimes = [round(float(ln.split()[0]) * 1e9) for ln in lines if _is_uptime(ln)]
    rc_line = next((ln for ln in lines if ln.startswith("@rc ")), None)
    if rc_line is None or len(uptimes) < 2:
        raise run.phone.unavailable(f"during {run.phase} ({what})")
    rc = int(rc_line.split()[1])
    if rc != 0:
        reason = llama_bench.last_error("\n".join(errors)) or f"exit code {rc}"
        if any("failed to load model" in e or "error loading model" in e for e in errors):
            raise InvalidModel(f"llama-bench cannot load the model on phone {run.phone.serial}: {reason}")
        raise llama_bench.RunnerFailed(f"llama-bench failed (exit {rc}) during {run.phase} ({what}): {reason}")
    output = "\n".join(ln for ln in lines if ln.lstrip().startswith("{"))
    return parse(output, "jsonl"), uptimes[0] + run.offset_ns, uptimes[-1] + run.offset_ns


def _is_uptime(line: str) -> bool:
    parts = line.split()
    return len(parts) == 2 and all(p.replace(".", "", 1).isdigit() and "." in p for p in parts)
