"""Parse what TensorFlow Lite's `benchmark_model` prints: init, first inference, warmup, run statistics, memory.

The tool logs aggregates, not each inference (see its README: "Inference timings in us: Init: …, First
inference: …, Warmup (avg): …, Inference (avg): …", a `count=… avg=… std=…` line per phase, and the peak
memory lines of --report_peak_memory_footprint). Lines may come with any log prefix ("INFO: ", logcat's
"07-14 13:14:56.520 22838 22838 I tflite  : ": agent/adb/log_lines.py). Tools before TF 2.2 print "Average
inference timings in us: Warmup: …, Init: …, no stats: …" instead, some print no summary at all: the measured
runs' own `avg=` is the mean then. Each phase announces itself ("Running benchmark for at least N iterations
…"): the count line after the first announcement is the warmup's, after the second the measured runs'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.adb import log_lines

_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, Warmup \(avg\): {_NUMBER},"
    rf" Inference \(avg\): {_NUMBER}"
)
_OLD_TIMINGS = re.compile(
    rf"Average inference timings in us: Warmup: {_NUMBER}, Init: {_NUMBER}, (?:no stats|Inference): {_NUMBER}"
)
_ANNOUNCE = re.compile(r"Running benchmark for at least \d+ iterations")
_COUNT = re.compile(rf"^count={_NUMBER}(.*)")
_FIELD = re.compile(rf"(\w+)={_NUMBER}")
_PEAK = re.compile(rf"(?:Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER})")
_FOOTPRINT = re.compile(
    r"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
    rf"init={_NUMBER} overall={_NUMBER}"
)
_REPLACED = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate")
_DELEGATED = re.compile(r"delegate: (\d+) nodes delegated out of (\d+) nodes")
_DELEGATE_FAILED = re.compile(
    r"(Failed to apply .*delegate.*|Could not create .*delegate.*|.*delegate.*(?:failed|not supported|rejected).*)",
    re.I,
)
#: The tool goes on without the delegate: the run measures the CPU, not what was asked for.
_NOT_DELEGATED = re.compile(
    r"Could not create .*delegate|delegate is explicitly applied, the model graph will not be executed|"
    r"delegate: 0 nodes delegated out of",
    re.I,
)


@dataclass
class BenchmarkResult:
    """One run of benchmark_model, times in microseconds."""

    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    #: The `count=` line of the measured runs: count, min, max, avg, std (and p5/median/p95 on newer tools).
    runs: dict[str, float] = field(default_factory=dict)
    warmup_count: int = 0
    peak_memory_mb: float | None = None
    #: (nodes taken by the delegate, nodes in the graph) when the tool says so.
    delegated_nodes: tuple[int, int] | None = None
    #: The line saying the delegate was not used after all (the tool then runs on the CPU), None otherwise.
    not_delegated: str | None = None
    errors: list[str] = field(default_factory=list)
    #: (start µs, duration µs) of each measured run where the runner's profile gives them (onnxruntime_perf_test).
    run_windows_us: list[tuple[float, float]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.inference_avg_us is not None and self.runs.get("count", 0) > 0

    def missing(self) -> str:
        """Why the result is not complete, in words ("" when it is)."""
        if self.complete:
            return ""
        if not self.runs:
            return "no statistics of measured runs"
        return "no mean latency of the measured runs"


def parse(output: str) -> BenchmarkResult:
    result = BenchmarkResult()
    #: (announcements seen before it, fields) of each count line.
    counts: list[tuple[int, dict[str, float]]] = []
    announced = 0
    for raw in output.splitlines():
        level, line = log_lines.split(raw)
        line = line.strip()
        if level in ("E", "F") or "ERROR" in raw or _DELEGATE_FAILED.search(line):
            result.errors.append(line)
        if result.not_delegated is None and _NOT_DELEGATED.search(line):
            result.not_delegated = line
        if m := _TIMINGS.search(line):
            result.init_us, result.first_inference_us, result.warmup_avg_us, result.inference_avg_us = (
                float(g) for g in m.groups()
            )
        elif m := _OLD_TIMINGS.search(line):
            result.warmup_avg_us, result.init_us, result.inference_avg_us = (float(g) for g in m.groups())
        elif _ANNOUNCE.search(line):
            announced += 1
        elif m := _COUNT.match(line):
            counts.append((announced, {k: float(v) for k, v in _FIELD.findall(line)}))
        elif m := _PEAK.search(line):
            result.peak_memory_mb = float(m.group(1))
        elif (m := _FOOTPRINT.search(line)) and result.peak_memory_mb is None:
            result.peak_memory_mb = float(m.group(2))
        elif m := _REPLACED.search(line) or _DELEGATED.search(line):
            result.delegated_nodes = (int(m.group(1)), int(m.group(2)))
    _assign_counts(result, counts, announced)
    if result.inference_avg_us is None and "avg" in result.runs:
        result.inference_avg_us = result.runs["avg"]
    return result


def _assign_counts(result: BenchmarkResult, counts: list[tuple[int, dict[str, float]]], announced: int) -> None:
    """The warmup's and the measured runs' count lines, by the announcements before them where the tool made
    them (an output cut after the warmup has no measured runs), else the first and the last."""
    if announced:
        warmup = [fields for seen, fields in counts if seen == 1]
        measured = [fields for seen, fields in counts if seen >= 2]
        if warmup:
            result.warmup_count = int(warmup[-1].get("count", 0))
        if measured:
            result.runs = measured[-1]
        return
    if counts:
        result.runs = counts[-1][1]
        if len(counts) >= 2:
            result.warmup_count = int(counts[0][1].get("count", 0))


def failure_line(output: str, limit: int = 300) -> str:
    """The most telling line of a failed run: its first error, else its last line."""
    parsed = parse(output)
    interesting = [e for e in parsed.errors if e and e != "Benchmarking failed."]
    lines = [log_lines.message(ln).strip() for ln in output.splitlines() if log_lines.message(ln).strip()]
    text = interesting[0] if interesting else (lines[-1] if lines else "no output")
    return text if len(text) <= limit else text[: limit - 3] + "..."
