"""Checks every number an agent streams before the host keeps it: finite, in range, arrays of matching length.

An agent is a program on a board the host does not control: a bug, a broken sensor driver or a hostile
process can send NaN, infinities, absurd magnitudes or arrays that do not line up. Statistics computed from
such values are wrong while looking precise (a run "ok" at -inf W), so a batch that fails any check is
refused whole and the device's job ends with the reason; nothing of it is kept.

Ranges are wide on purpose: they only exclude what no board can report. Power may be negative (a charging
battery, a rail's offset near zero: the energy code handles the sign), so its range is -10..10 kW.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from protos import agent_pb2 as pb

#: How many samples (inference windows plus sensor samples) the host holds for one job, unless
#: EDGEPROF_MAX_SAMPLES_PER_JOB says otherwise. Measured at 10 M (half latency, half power samples): the host
#: held 201 MB and peaked at 622 MB while summarising; a 2 s default run holds a few thousand.
DEFAULT_MAX_SAMPLES_PER_JOB = 10_000_000
MAX_SAMPLES_ENV = "EDGEPROF_MAX_SAMPLES_PER_JOB"
#: Distinct sensor series one job may open (a board has tens of channels, not thousands).
MAX_SERIES_PER_JOB = 512

TIB_BYTES = float(1 << 40)

#: (low, high, unit) for each SeriesKind name; kinds not listed must only be finite.
SERIES_RANGES: dict[str, tuple[float, float, str]] = {
    "power_mw": (-1e7, 1e7, "mW"),
    "energy_uj": (0.0, 1e18, "µJ"),
    "temp_c": (-60.0, 200.0, "°C"),
    "rss_bytes": (0.0, TIB_BYTES, "bytes"),
    "gpu_mem_bytes": (0.0, TIB_BYTES, "bytes"),
    "cpu_freq_khz": (0.0, 1e8, "kHz"),
    "throttle": (0.0, 1.0, ""),
    "voltage_mv": (-1e6, 1e6, "mV"),
    "current_ma": (-1e6, 1e6, "mA"),
    "cpu_other_pct": (0.0, 100.0, "%"),
}
#: Phases/rates/times an agent reports about itself.
MAX_SAMPLE_RATE_HZ = 1e6
MAX_OP_TIME_US = 1e15


class BatchError(ValueError):
    """A batch holds a number the host refuses; the message says which and why, in one line."""


def max_samples_per_job() -> int:
    """The cap on samples one job may hold on the host: EDGEPROF_MAX_SAMPLES_PER_JOB, else the default."""
    text = os.environ.get(MAX_SAMPLES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_SAMPLES_PER_JOB
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise BatchError(f"{MAX_SAMPLES_ENV} must be a positive integer, not {text!r}")
    return value


def samples_in(batch: pb.MeasurementBatch) -> int:
    """Samples a batch adds, counted from the message before any array is built."""
    return sum(max(len(b.start_ns), len(b.end_ns)) for b in batch.latency) + sum(
        max(len(s.t_ns), len(s.value)) for s in batch.series
    )


def check_latency(start_ns: np.ndarray, end_ns: np.ndarray, phase: str) -> None:
    """Inference windows: as many starts as ends, non-negative, each end at or after its start, in order."""
    if start_ns.size != end_ns.size:
        raise BatchError(f"{phase} latency block has {start_ns.size} start times but {end_ns.size} end times")
    if not start_ns.size:
        return
    if int(start_ns.min()) < 0:
        raise BatchError(f"{phase} latency block has a negative start time ({int(start_ns.min())} ns)")
    backwards = np.flatnonzero(end_ns < start_ns)
    if backwards.size:
        i = int(backwards[0])
        raise BatchError(f"{phase} inference {i} ends before it starts ({int(start_ns[i])} ns -> {int(end_ns[i])} ns)")
    if start_ns.size > 1 and bool(np.any(np.diff(start_ns) < 0)):
        raise BatchError(f"{phase} latency block's start times go backwards (CLOCK_MONOTONIC never does)")


def check_series(name: str, kind: str, t_ns: np.ndarray, value: np.ndarray) -> None:
    """One sensor block: a time per value, times non-negative and in order, values finite and in range."""
    label = f"series '{name}' ({kind})"
    if t_ns.size != value.size:
        raise BatchError(f"{label} has {t_ns.size} timestamps but {value.size} values")
    if not t_ns.size:
        return
    if int(t_ns.min()) < 0:
        raise BatchError(f"{label} has a negative timestamp ({int(t_ns.min())} ns)")
    if t_ns.size > 1 and bool(np.any(np.diff(t_ns) < 0)):
        raise BatchError(f"{label} timestamps go backwards (CLOCK_MONOTONIC never does)")
    bad = np.flatnonzero(~np.isfinite(value))
    if bad.size:
        raise BatchError(f"{label} holds a non-finite value ({float(value[int(bad[0])])!r}) at sample {int(bad[0])}")
    low, high, unit = SERIES_RANGES.get(kind, (-1e18, 1e18, ""))
    out = np.flatnonzero((value < low) | (value > high))
    if out.size:
        shown = f"{value[int(out[0])]:g} {unit}".strip()
        raise BatchError(f"{label} value {shown} is outside {low:g}..{high:g} {unit}".rstrip())


def _count(name: str, value: int) -> None:
    if value < 0:
        raise BatchError(f"{name} is negative ({value})")


def _bytes(name: str, value: int) -> None:
    if not 0 <= value <= TIB_BYTES:
        raise BatchError(f"{name} {value} is outside 0..{int(TIB_BYTES)} bytes")


def _finite(name: str, value: float, low: float, high: float) -> None:
    if not math.isfinite(value):
        raise BatchError(f"{name} is not a finite number ({value!r})")
    if not low <= value <= high:
        raise BatchError(f"{name} {value:g} is outside {low:g}..{high:g}")


def check_phase(event: pb.PhaseEvent, phase: str) -> None:
    _count(f"{phase} phase start time", event.start_ns)
    _count(f"{phase} phase end time", event.end_ns)
    _count(f"{phase} phase inference count", event.count)
    if event.end_ns and event.start_ns and event.end_ns < event.start_ns:
        raise BatchError(f"{phase} phase ends before it starts ({event.start_ns} ns -> {event.end_ns} ns)")


def check_info(info: pb.JobInfo) -> None:
    _count("load time", info.load_time_ns)
    if abs(info.load_rss_delta_bytes) > TIB_BYTES:
        raise BatchError(f"load RSS delta {info.load_rss_delta_bytes} is outside ±{int(TIB_BYTES)} bytes")
    _count("threads", info.threads)
    _finite("sample rate", info.sample_rate_hz, 0.0, MAX_SAMPLE_RATE_HZ)
    for tensor in (*info.inputs, *info.outputs):
        if any(dim < -1 for dim in tensor.shape):
            raise BatchError(f"tensor '{tensor.name}' has a negative dimension {list(tensor.shape)}")


def _check_ops(ops: Iterable[pb.OpStat]) -> None:
    for op in ops:
        _finite("operator time", op.total_us, 0.0, MAX_OP_TIME_US)
        _count("operator calls", op.calls)


def check_end(end: pb.JobEnd) -> None:
    _count("measured inferences", end.measured)
    _count("warmup inferences", end.warmup)
    _count("first inference time", end.first_inference_ns)
    _bytes("peak RSS", end.peak_rss_bytes)
    _check_ops(end.op_by_type)
    _check_ops(end.op_top_nodes)
