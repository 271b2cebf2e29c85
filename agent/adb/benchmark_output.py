"""Parse what TensorFlow Lite's `benchmark_model` prints: init, first inference, warmup, run statistics, memory.

The tool logs aggregates, not each inference (see its README: "Inference timings in us: Init: …, First
inference: …, Warmup (avg): …, Inference (avg): …", a `count=… avg=… std=…` line per phase, and the peak
memory lines of --report_peak_memory_footprint). Lines may carry a log prefix ("INFO: ", "I tflite  : ").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, Warmup \(avg\): {_NUMBER},"
    rf" Inference \(avg\): {_NUMBER}"
)
_COUNT = re.compile(rf"count={_NUMBER}(.*)")
_FIELD = re.compile(rf"(\w+)={_NUMBER}")
_PEAK = re.compile(rf"(?:Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER})")
_FOOTPRINT = re.compile(
    r"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
    rf"init={_NUMBER} overall={_NUMBER}"
)
_REPLACED = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate")
_DELEGATE_FAILED = re.compile(r"(Failed to apply .*delegate.*|.*delegate.*(?:failed|not supported|rejected).*)", re.I)


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
    errors: list[str] = field(default_factory=list)
    #: (start µs, duration µs) of each measured run where the runner's profile gives them (onnxruntime_perf_test).
    run_windows_us: list[tuple[float, float]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.inference_avg_us is not None and self.runs.get("count", 0) > 0


def _strip_prefix(line: str) -> str:
    for marker in ("INFO: ", "ERROR: ", "WARNING: "):
        if marker in line:
            return line.split(marker, 1)[1]
    return re.sub(r"^[A-Z] tflite\s*: ", "", line)


def parse(output: str) -> BenchmarkResult:
    result = BenchmarkResult()
    counts: list[dict[str, float]] = []
    for raw in output.splitlines():
        if "ERROR" in raw or _DELEGATE_FAILED.search(raw):
            result.errors.append(_strip_prefix(raw).strip())
        line = _strip_prefix(raw).strip()
        if m := _TIMINGS.search(line):
            result.init_us, result.first_inference_us, result.warmup_avg_us, result.inference_avg_us = (
                float(g) for g in m.groups()
            )
        elif line.startswith("count=") and (m := _COUNT.match(line)):
            fields = {k: float(v) for k, v in _FIELD.findall(line)}
            counts.append(fields)
        elif m := _PEAK.search(line):
            result.peak_memory_mb = float(m.group(1))
        elif (m := _FOOTPRINT.search(line)) and result.peak_memory_mb is None:
            result.peak_memory_mb = float(m.group(2))
        elif m := _REPLACED.search(line):
            result.delegated_nodes = (int(m.group(1)), int(m.group(2)))
    # The warmup phase prints its count line first, the measured runs theirs last.
    if counts:
        result.runs = counts[-1]
        if len(counts) >= 2:
            result.warmup_count = int(counts[0].get("count", 0))
    return result


def failure_line(output: str, limit: int = 300) -> str:
    """The most telling line of a failed run: its first error, else its last line."""
    parsed = parse(output)
    interesting = [e for e in parsed.errors if e and e != "Benchmarking failed."]
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    text = interesting[0] if interesting else (lines[-1] if lines else "no output")
    return text if len(text) <= limit else text[: limit - 3] + "..."
