"""onnxruntime_perf_test on a phone: its flags for a delegate, its printed summary, its profile's per-run events.

Invocation (flags as onnxruntime/test/perftest/command_args_parser.cc declares them): `-m times -r N` runs N
timed inferences after the tool's own warm-up run, `-x` sets intra-op threads, `-e` the execution provider
(`-i "key|value"` its options), `-I` generates inputs from the model's declared shapes (free dims as 1),
`-s` prints the latency statistics, `-p PREFIX` turns on ONNX Runtime's profiler, which writes
PREFIX_<date>.json: a Chrome-trace list whose "model_run" events (category "Session") are each inference,
start and duration in µs, and whose "*_kernel_time" events (category "Node") are each operator.

The printed summary (performance_runner.cc) is "Session creation time cost: S s", "First inference time
cost: MS ms", "Total inference requests: N", "Average inference time cost[ total]: MS ms", "Peak working
set size: B bytes", and with -s "Min/Max/P50/P90/P95/P99/P999 Latency: S s" (before ONNX Runtime 1.2: "Total
iterations", "Average time cost" and "P50 Latency is S sec").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agent.adb.benchmark_output import BenchmarkResult
from agent.errors import InvalidInput

RUNTIME = "onnxruntime_perf_test"
#: --delegate names -> onnxruntime_perf_test's -e value and provider options.
PROVIDERS: dict[str, list[str]] = {
    "cpu": ["-e", "cpu"],
    "xnnpack": ["-e", "xnnpack"],
    "nnapi": ["-e", "nnapi"],
    # The Hexagon NPU through Qualcomm's QNN: libQnnHtp.so must be on the phone's library path.
    "qnn": ["-e", "qnn", "-i", "backend_type|htp"],
}
_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_LINES = {
    "init_s": re.compile(rf"^Session creation time cost:\s*{_NUMBER}\s*s"),
    "first_ms": re.compile(rf"^First inference time cost:\s*{_NUMBER}\s*ms"),
    # Tools before 1.2 (2020) said "Total iterations" and "Average time cost".
    "count": re.compile(rf"^Total (?:inference requests|iterations):\s*{_NUMBER}"),
    "avg_ms": re.compile(rf"^Average (?:inference )?time cost(?: total)?:\s*{_NUMBER}\s*ms"),
    "peak_bytes": re.compile(rf"^Peak working set size:\s*{_NUMBER}\s*bytes"),
}
#: "P50 Latency: 0.0587 s"; tools before 1.2 wrote "P50 Latency is 0.0587108 sec".
_LATENCY = re.compile(rf"^(Min|Max|P50|P90|P95|P99|P999) Latency(?::| is)\s*{_NUMBER}\s*s")
_LATENCY_KEYS = {"Min": "min", "Max": "max", "P50": "median", "P90": "p90", "P95": "p95", "P99": "p99", "P999": "p999"}
_ERROR = re.compile(r"error|exception|fail|not supported|invalid", re.I)


def provider_flags(delegate: str) -> list[str]:
    """onnxruntime_perf_test flags for a delegate name (cpu, xnnpack, nnapi, qnn); one line for the others."""
    flags = PROVIDERS.get(delegate or "cpu")
    if flags is not None:
        return list(flags)
    if delegate == "gpu" or delegate.startswith("external:"):
        raise InvalidInput(
            f"delegate '{delegate[:40]}' is LiteRT's: onnxruntime_perf_test runs ONNX models with "
            f"{', '.join(PROVIDERS)} (or profile the .tflite with benchmark_model)"
        )
    raise InvalidInput(f"unknown delegate '{delegate[:40]}' for ONNX models: use one of {', '.join(PROVIDERS)}")


def parse(output: str) -> BenchmarkResult:
    """The tool's printed summary, times in µs, as benchmark_model's parser gives them."""
    result = BenchmarkResult()
    values: dict[str, float] = {}
    for raw in output.splitlines():
        line = raw.strip()
        for key, pattern in _LINES.items():
            if m := pattern.match(line):
                values.setdefault(key, float(m.group(1)))
        if m := _LATENCY.match(line):
            result.runs[_LATENCY_KEYS[m.group(1)]] = float(m.group(2)) * 1e6
        elif _ERROR.search(line) and not line.startswith(("Avg CPU", "Total ")):
            result.errors.append(line)
    if "init_s" in values:
        result.init_us = values["init_s"] * 1e6
    if "first_ms" in values:
        result.first_inference_us = values["first_ms"] * 1000
    if "avg_ms" in values:
        result.inference_avg_us = values["avg_ms"] * 1000
    if "count" in values:
        result.runs["count"] = values["count"]
        result.runs["avg"] = result.inference_avg_us or 0.0
    if "peak_bytes" in values:
        result.peak_memory_mb = values["peak_bytes"] / 1024**2
    return result


def run_events(events: Sequence[Mapping[str, Any]], count: int) -> list[tuple[float, float]]:
    """(start µs, duration µs) of the last ``count`` inferences in a profile (the tool's warm-up run comes first)."""
    runs = sorted(
        (float(e["ts"]), float(e["dur"]))
        for e in events
        if e.get("name") == "model_run" and e.get("cat") == "Session" and "ts" in e and "dur" in e
    )
    return runs[-count:] if count > 0 else []


def load_profile(text: str) -> list[dict[str, Any]]:
    """The profile's events; [] when it is missing or not the JSON list the profiler writes."""
    try:
        events = json.loads(text)
    except ValueError:
        return []
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def failure_line(output: str, limit: int = 300) -> str:
    """The most telling line of a failed run: its first error, else its last line."""
    errors = parse(output).errors
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    text = errors[0] if errors else (lines[-1] if lines else "no output")
    return text if len(text) <= limit else text[: limit - 3] + "..."
