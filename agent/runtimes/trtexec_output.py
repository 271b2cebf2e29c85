"""Read what TensorRT's `trtexec` says: its log (version, device, DLA/GPU layers, warmup) and its export files.

The formats, as trtexec writes them (samples/common/sampleReporting.cpp in TensorRT's repository):
- the banner `&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # …` on every release (v8602 = 8.6.2, v100300 =
  10.3.0), and `&&&& PASSED` / `&&&& FAILED` at the end;
- `--exportTimes=FILE`: a JSON list, one object per inference, times in ms from the start of inference. TensorRT
  7/8.0 write startInMs/endInMs/startComputeMs/endComputeMs/startOutMs/endOutMs/inMs/computeMs/outMs/latencyMs/
  endToEndMs; 8.2+ write startEnqMs/endEnqMs/startH2dMs/endH2dMs/…/startD2hMs/endD2hMs/h2dMs/computeMs/d2hMs/
  latencyMs (endToEndMs until 8.6). Releases before 8.6 include the warmup inferences, later ones do not; both are
  told apart by startComputeMs against the warmup length;
- `--exportProfile=FILE`: `[{"count": N}, {"name", "timeMs", "averageMs", ["medianMs",] "percentage"}, …]`, one
  object per engine layer, times summed over the N profiled iterations;
- the builder's placement report, `[DlaLayer] …` and `[GpuLayer] …` lines under "Layers Running on DLA/GPU".
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from agent.runtimes.base import OpTiming

_BANNER = re.compile(r"&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT v(\d+)\]")
_VERSION_LINE = re.compile(r"TensorRT version: (\d+\.\d+\.\d+)")
_DEVICE = re.compile(r"Selected Device: (.+)$")
_CAPABILITY = re.compile(r"Compute Capability: (\d+\.\d+)")
_WARMUP = re.compile(r"Warmup completed (\d+) queries over ([\d.eE+-]+) ms")
_BUILT = re.compile(r"Engine built in ([\d.eE+-]+) sec")
_PREFIX = re.compile(r"^(\[[^\]]*\d[^\]]*\]\s*)?(\[[IWEVF]\]\s*)?(\[TRT\]\s*)?(\[[IWEVF]\]\s*)?")
#: What TensorRT says when a saved engine is not for this TensorRT or this GPU: the engine is rebuilt.
_INCOMPATIBLE = re.compile(
    r"incompatible|not compatible|Serialization assertion|version tag does not match|magicTag|"
    r"Platform specific tag mismatch|different (?:device|platform)",
    re.IGNORECASE,
)
STARTING_INFERENCE = "Starting inference"


def decode_version(code: str) -> str:
    """The banner's version number as dotted text: 8602 -> 8.6.2, 8001 -> 8.0.1, 100300 -> 10.3.0."""
    n = int(code)
    if n >= 100_000:
        return f"{n // 10_000}.{n % 10_000 // 100}.{n % 100}"
    return f"{n // 1000}.{n % 1000 // 100}.{n % 100}"


def strip_prefix(line: str) -> str:
    """A log line without its `[date-time] [I] [TRT]` prefixes."""
    return _PREFIX.sub("", line.strip(), count=1).strip()


@dataclass
class TrtexecLog:
    """What one trtexec invocation printed that edgeprof uses."""

    version: str = ""
    device: str = ""
    compute_capability: str = ""
    passed: bool | None = None
    dla_layers: list[str] = field(default_factory=list)
    gpu_layers: list[str] = field(default_factory=list)
    warmup_queries: int | None = None
    warmup_ms: float | None = None
    build_s: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def incompatible_engine(self) -> bool:
        """The engine file was built by another TensorRT or for another GPU (rebuild it)."""
        return any(_INCOMPATIBLE.search(e) for e in self.errors)

    def failure_line(self, limit: int = 300) -> str:
        """The most telling error line, for a one-line message."""
        text = next((e for e in self.errors if e and "FAILED" not in e), "") or (self.errors[-1] if self.errors else "")
        text = text or "no error message"
        return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_log(text: str) -> TrtexecLog:
    log = TrtexecLog()
    for raw in text.splitlines():
        if m := _BANNER.search(raw):
            log.version = log.version or decode_version(m.group(2))
            if m.group(1) != "RUNNING":
                log.passed = m.group(1) == "PASSED"
                if not log.passed:
                    log.errors.append(raw.strip())
            continue
        line = strip_prefix(raw)
        if m := _VERSION_LINE.search(line):
            log.version = m.group(1)  # exact, where the release prints it (8.4+)
        elif m := _DEVICE.search(line):
            log.device = m.group(1).strip()
        elif m := _CAPABILITY.search(line):
            log.compute_capability = m.group(1)
        elif "[DlaLayer]" in line:
            log.dla_layers.append(line.split("[DlaLayer]", 1)[1].strip())
        elif "[GpuLayer]" in line:
            log.gpu_layers.append(line.split("[GpuLayer]", 1)[1].strip())
        elif m := _WARMUP.search(line):
            log.warmup_queries, log.warmup_ms = int(m.group(1)), float(m.group(2))
        elif m := _BUILT.search(line):
            log.build_s = float(m.group(1))
        if re.search(r"\[E\]|\bERROR\b|Error Code", raw):
            log.errors.append(line)
    return log


@dataclass(frozen=True)
class InferenceTime:
    """One inference of --exportTimes, in ms from trtexec's start of inference."""

    start_ms: float
    latency_ms: float
    compute_start_ms: float
    compute_ms: float


def parse_times(text: str) -> list[InferenceTime]:
    """--exportTimes JSON of any release; ValueError when it is not that format."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("exportTimes is not a JSON list")
    out: list[InferenceTime] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"exportTimes entry {i} is not an object")
        start = _first(item, "startH2dMs", "startInMs", "startComputeMs")
        end = _first(item, "endD2hMs", "endOutMs", "endComputeMs")
        compute_start = _first(item, "startComputeMs")
        compute_end = _first(item, "endComputeMs")
        if start is None or end is None or compute_start is None or compute_end is None:
            raise ValueError(f"exportTimes entry {i} lacks start/end times: {sorted(item)[:6]}")
        latency = item.get("latencyMs")
        latency_ms = float(latency) if isinstance(latency, (int, float)) else end - start
        compute = item.get("computeMs")
        compute_ms = float(compute) if isinstance(compute, (int, float)) else compute_end - compute_start
        out.append(InferenceTime(start, latency_ms, compute_start, compute_ms))
    return out


def _first(item: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass(frozen=True)
class LayerTime:
    """One engine layer of --exportProfile: total over `count` iterations, in ms."""

    name: str
    total_ms: float
    average_ms: float


def parse_profile(text: str) -> tuple[int, list[LayerTime]]:
    """--exportProfile JSON: (profiled iterations, layers); ValueError when it is not that format."""
    data = json.loads(text)
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "count" not in data[0]:
        raise ValueError('exportProfile does not start with {"count": N}')
    count = int(data[0]["count"])
    layers = []
    for item in data[1:]:
        if isinstance(item, dict) and "name" in item and isinstance(item.get("timeMs"), (int, float)):
            average = item.get("averageMs")
            layers.append(
                LayerTime(
                    str(item["name"]),
                    float(item["timeMs"]),
                    float(average) if isinstance(average, (int, float)) else float(item["timeMs"]) / max(count, 1),
                )
            )
    return count, layers


_TYPED = re.compile(r"^([A-Z][A-Z0-9_]+): (.+)$")


def placement_types(gpu_layers: list[str]) -> dict[str, str]:
    """Layer name -> type from the placement report where it names types (8.6+: `[GpuLayer] CONVOLUTION: /c/Conv`)."""
    found = {}
    for line in gpu_layers:
        match = _TYPED.match(line.strip())
        if match:
            found[match.group(2).strip()] = match.group(1).capitalize()
    return found


def layer_kind(name: str) -> str:
    """A coarse type for an engine layer from its name (TensorRT fuses ONNX nodes: "/l1/Conv + /l1/Relu").

    The first fused node's ONNX op type; "ForeignNode" for a DLA (or Myelin) subgraph; "Reformat" for the copies
    TensorRT inserts between formats; "PointWise" for fused elementwise kernels.
    """
    text = name.strip()
    if "ForeignNode" in text:
        return "ForeignNode"
    if text.startswith("Reformatting") or "CopyNode" in text:
        return "Reformat"
    if text.startswith("PWN(") or text.startswith("PointWise"):
        return "PointWise"
    first = text.split(" + ")[0].strip("{}[] ")
    if "/" not in first:
        return "Layer"  # a bare node name ("n12") says nothing of its type
    tail = first.rstrip("/").rsplit("/", 1)[-1]
    kind = re.split(r"[_.:\s\d]", tail, maxsplit=1)[0]
    return kind or "Layer"


def layer_profile(
    count: int,
    layers: list[LayerTime],
    dla_layers: list[str],
    types: dict[str, str] | None = None,
    top: int = 15,
) -> tuple[list[OpTiming], list[OpTiming]]:
    """(time by layer kind, slowest layers) as per-operator rows; `provider` says DLA or GPU per layer.

    A layer's kind is its type from the placement report where trtexec printed one, else guessed from its name."""
    on_dla = {name.strip() for name in dla_layers}
    types = types or {}
    by_kind: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    nodes = []
    for layer in layers:
        provider = "DLA" if layer.name.strip() in on_dla else "GPU"
        kind = types.get(layer.name.strip()) or layer_kind(layer.name)
        row = by_kind[(kind, provider)]
        row[0] += layer.total_ms * 1000.0
        row[1] += count
        nodes.append(OpTiming(kind, layer.name, layer.total_ms * 1000.0, count, provider))
    kinds = [OpTiming(k, "", total, int(calls), p) for (k, p), (total, calls) in by_kind.items()]
    kinds.sort(key=lambda t: t.total_us, reverse=True)
    nodes.sort(key=lambda t: t.total_us, reverse=True)
    return kinds, nodes[:top]
