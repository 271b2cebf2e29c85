"""The native llama.cpp runner: the user's own `llama-bench` binary, for boards where llama-cpp-python does not fit.

One invocation per prompt length P measures `-r R` repetitions of a prompt test (pp P: the prefill of P tokens)
and of a generation test (tg N: N single-token decodes), each repetition timed as a whole (`samples_ns`,
tools/llama-bench). So llama-bench reports each repetition's mean per token, never a token's own time. The
generations edgeprof reports from it are built from them: repetition i is a prefill of pp_i, a first token
at its end (llama-bench times no sampling), then N-1 tokens tg_i/N apart. They are laid back to back so that
the last ends when llama-bench printed its last result, as a phone's benchmark_model blocks are
(agent/adb/backend.py), which keeps counts, tokens/s and energy per token; the result says
`latency_source: block_means`: ITL percentiles are over repetitions' means, and prefill and decode energy
split the invocation's energy by time. The tg test decodes from an empty context (no `-d`, which older builds
lack and which would time a depth fill once, not per repetition), so its per-token time does not grow with the
prompt length. A build whose llama-bench has no `-o jsonl` printer (an older one) is asked for `json`.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError, InvalidInput, InvalidModel, RuntimeMissing
from agent.runtimes.generative import Generation
from agent.runtimes.llama_bench_output import BenchOutputError, BenchTest, parse

#: Request options passed on as llama-bench flags.
FLAGS = {"n_batch": "-b", "n_gpu_layers": "-ngl"}
#: Settings recorded from what llama-bench printed (its fields), under edgeprof's names.
RECORDED = {
    "n_threads": "n_threads",
    "n_batch": "n_batch",
    "n_ubatch": "n_ubatch",
    "n_gpu_layers": "n_gpu_layers",
    "backends": "backends",
    "type_k": "type_k",
    "type_v": "type_v",
    "flash_attn": "flash_attn",
    "model_type": "llama_bench_model_type",
}


class RunnerFailed(AgentError):
    """llama-bench exited with an error or was killed; the message is its last error line."""

    kind = "crash"


@dataclass(frozen=True)
class Invocation:
    """What one llama-bench run printed, and when (CLOCK_MONOTONIC ns) its last result line arrived."""

    tests: list[BenchTest]
    started_ns: int
    last_result_ns: int
    command: list[str]


class LlamaBench:
    """The binary at `path`, run with the job's settings; the output format is found on the first run."""

    def __init__(self, path: str, threads: int = 0, options: dict[str, int] | None = None) -> None:
        self.path = path
        self.threads = threads
        self.options = dict(options or {})
        self.fmt = "jsonl"
        resolved = Path(path)
        if not resolved.is_file() or not os.access(resolved, os.X_OK):
            raise RuntimeMissing(f"llama-bench is not an executable file at {path} (agent serve --llama-bench PATH)")

    def command(self, model: str, prompt_len: int, gen_len: int, reps: int) -> list[str]:
        cmd = [self.path, "-m", model, "-p", str(prompt_len), "-n", str(gen_len), "-r", str(reps), "-o", self.fmt]
        if self.threads:
            cmd += ["-t", str(self.threads)]
        for key, flag in FLAGS.items():
            if key in self.options:
                cmd += [flag, str(self.options[key])]
        return cmd

    def run(self, model: str, prompt_len: int, gen_len: int, reps: int, timeout_s: float | None = None) -> Invocation:
        """One invocation; RunnerFailed, InvalidModel (llama.cpp refused the model) or BenchOutputError."""
        try:
            return self._run(model, prompt_len, gen_len, reps, timeout_s)
        except (RunnerFailed, BenchOutputError):
            if self.fmt != "jsonl":
                raise
            self.fmt = "json"  # an older build: no jsonl printer
            try:
                return self._run(model, prompt_len, gen_len, reps, timeout_s)
            except (RunnerFailed, BenchOutputError):
                self.fmt = "jsonl"
                raise

    def _run(self, model: str, prompt_len: int, gen_len: int, reps: int, timeout_s: float | None) -> Invocation:
        cmd = self.command(model, prompt_len, gen_len, reps)
        lines: list[str] = []
        last_ns = 0
        with tempfile.TemporaryFile() as errors:
            started = time.monotonic_ns()
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
            except OSError as err:
                raise RuntimeMissing(f"cannot run llama-bench at {self.path}: {err.strerror or err}") from err
            assert proc.stdout is not None
            for raw in proc.stdout:  # line by line: a result line's arrival is when its test ended
                line = raw.decode("utf-8", errors="replace")
                if line.strip():
                    lines.append(line)
                    last_ns = time.monotonic_ns()
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RunnerFailed(f"llama-bench did not exit within {timeout_s:g} s") from None
            errors.seek(0)
            stderr = errors.read().decode("utf-8", errors="replace")
        if code != 0:
            reason = last_error(stderr) or f"exit code {code}"
            if "failed to load model" in stderr or "error loading model" in stderr:
                raise InvalidModel(f"llama-bench cannot load the model: {reason}")
            raise RunnerFailed(f"llama-bench failed ({' '.join(cmd[1:])}): {reason}")
        tests = parse("".join(lines), self.fmt)
        return Invocation(tests, started, last_ns, cmd)


def last_error(stderr: str) -> str:
    lines = [" ".join(line.split()) for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "failed" in line.lower()]
    text = (errors or lines or [""])[-1]
    return text if len(text) <= 300 else text[:297] + "..."


def split_tests(tests: Sequence[BenchTest], prompt_len: int, gen_len: int) -> tuple[BenchTest, BenchTest]:
    """The prompt test and the generation test of one invocation; BenchOutputError when either is missing."""
    pp = [t for t in tests if t.n_prompt == prompt_len and t.n_gen == 0 and t.n_depth == 0]
    tg = [t for t in tests if t.n_gen == gen_len and t.n_prompt == 0 and t.n_depth == 0]
    if not pp or not tg:
        found = ", ".join(t.name for t in tests) or "none"
        raise BenchOutputError(f"llama-bench printed no pp{prompt_len} and tg{gen_len} tests (it printed: {found})")
    return pp[-1], tg[-1]


def repetitions(test: BenchTest, reps: int) -> list[float]:
    """Each repetition's time in ns: the printed samples, or the mean `reps` times where the format has none."""
    if test.samples_ns:
        return [float(s) for s in test.samples_ns]
    return [test.avg_ns] * reps


def generations(pp: BenchTest, tg: BenchTest, reps: int, end_ns: int) -> list[Generation]:
    """The repetitions as generations (module docstring), back to back, the last ending at end_ns."""
    prefill = repetitions(pp, reps)
    decode = repetitions(tg, reps)
    if len(prefill) != len(decode) or not prefill:
        raise BenchOutputError(
            f"llama-bench printed {len(prefill)} prompt and {len(decode)} generation repetitions; edgeprof pairs them"
        )
    n_gen = tg.n_gen
    durations = [p + (n_gen - 1) * d / n_gen for p, d in zip(prefill, decode, strict=True)]
    # One nanosecond between generations: each starts strictly after the one before ends.
    start = end_ns - int(sum(durations)) - len(durations)
    found = []
    for p_ns, d_ns in zip(prefill, decode, strict=True):
        start += 1
        first = start + max(1, round(p_ns))
        tokens = [first + round(k * d_ns / n_gen) for k in range(n_gen)]
        found.append(Generation(start, first, tokens))
        start = tokens[-1]
    return found


def settings(tests: Sequence[BenchTest]) -> dict[str, str]:
    """What llama-bench says it used (threads, batch, GPU layers, backends, ...), as notes."""
    fields = tests[0].fields if tests else {}
    return {ours: str(fields[theirs]) for theirs, ours in RECORDED.items() if fields.get(theirs) not in (None, "")}


def version(tests: Sequence[BenchTest]) -> str:
    fields = tests[0].fields if tests else {}
    number, commit = fields.get("build_number"), fields.get("build_commit")
    if number in (None, "") and not commit:
        return "unknown build"
    return f"b{number} ({commit})" if commit else f"b{number}"


def next_reps(missing: int, left_ns: float, per_rep_ns: float) -> int:
    """Repetitions the next invocation needs: the `missing` count, else enough to fill the minimum duration
    (`left_ns` of it still to measure, at `per_rep_ns` per repetition), else none."""
    if missing > 0:
        return missing
    if left_ns <= 0:
        return 0
    return min(100_000, max(1, math.ceil(left_ns / max(1.0, per_rep_ns))))


def check_reps(reps: int) -> int:
    if not 0 < reps <= 100_000:
        raise InvalidInput(f"llama-bench repetitions must be between 1 and 100000, got {reps}")
    return reps
