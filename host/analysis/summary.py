"""One device's entry of the result document (DESIGN.md §4), computed from its raw samples."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from host.analysis import accelerator, energy, stats
from host.analysis.contention import machine_load
from host.analysis.document import ONE_WORD
from host.analysis.drift import latency_drift
from host.analysis.energy_blocks import block_spans, runner_blocks
from host.analysis.generation import generation_block
from host.store.rundata import DeviceRaw
from host.store.strict_json import finite_or_null
from protos import agent_pb2 as pb

_STATUS = {pb.JobEnd.OK: "ok", pb.JobEnd.ERROR: "error", pb.JobEnd.CANCELLED: "error"}


def error_entry(device: str, error: str, **known: Any) -> dict[str, Any]:
    """A device that failed before or during its job: every metric null, the error named."""
    entry: dict[str, Any] = {
        "device": device,
        "profile": None,
        "status": "error",
        "error": error,
        "runtime": None,
        "execution_provider": None,
        "n_inferences": 0,
        "upload_bytes": 0,
        "latency_ms": None,
        "throughput_ips": None,
        "load_time_ms": None,
        "first_inference_ms": None,
        "peak_rss_mb": None,
        "energy": energy.empty(),
        "thermal": {"max_temp_c": None, "throttled": None},
    }
    entry.update(known)
    return entry


def device_entry(
    device: str,
    raw: DeviceRaw,
    info: pb.JobInfo | None,
    end: pb.JobEnd | None,
    *,
    upload_bytes: int,
    recipe: dict[str, Any] | None = None,
    job_id: str = "",
) -> dict[str, Any]:
    """Everything the host reports for one device, from what that device streamed."""
    if end is None:
        return error_entry(
            device, "the measurement stream ended without a result", upload_bytes=upload_bytes, job_id=job_id
        )
    entry = error_entry(device, end.error or "", upload_bytes=upload_bytes, recipe=recipe, job_id=job_id)
    entry["status"] = _STATUS.get(end.status, "error")
    if entry["status"] == "ok":
        entry["error"] = None
    elif end.status == pb.JobEnd.CANCELLED and not end.error:
        entry["error"] = "cancelled"
    entry["error_kind"] = end.error_kind or None
    if info is not None:
        entry.update(
            profile=info.profile or None,
            runtime=f"{info.runtime} {info.runtime_version}".strip(),
            execution_provider=info.execution_providers[0] if info.execution_providers else None,
            execution_providers=list(info.execution_providers),
            load_time_ms=info.load_time_ns / 1e6,
            threads=info.threads,
            inputs=[{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in info.inputs],
            inputs_source=info.inputs_source,
            sample_rate_hz=info.sample_rate_hz,
            board=_board(info.device),
        )
    entry["n_inferences"] = int(raw.start_ns.size)
    entry["n_warmup"] = int(raw.warmup_start_ns.size)
    if end.first_inference_ns:
        entry["first_inference_ms"] = end.first_inference_ns / 1e6
    peak_rss = max(float(end.peak_rss_bytes), energy.peak_bytes(raw.series, "rss_bytes") or 0.0)
    entry["peak_rss_mb"] = peak_rss / 1024**2 if peak_rss else None
    generation = generation_block(raw, entry["peak_rss_mb"])  # a generative model (host/analysis/generation.py)
    if generation is not None:
        entry["generation"] = generation
    entry["notes"] = dict(end.notes)
    llama = llama_cpp_settings(end.notes)  # a GGUF model: its quantization and llama.cpp's settings
    if llama:
        entry["quantization"] = llama.get("quantization")
        entry["llama_cpp"] = llama
    # A phone's benchmark_model reports each block's mean, not each inference (agent/adb/backend.py).
    entry["latency_source"] = end.notes.get("latency_source") or "per_inference"
    entry["phases"] = [
        {"name": p.name, "start_ns": p.start_ns, "end_ns": p.end_ns, "detail": p.detail, "count": p.count}
        for p in raw.phases
    ]
    # A runner started per block (a phone): energy counts each block's own windows, never the start-ups between.
    in_blocks = "block_runs" in end.notes
    if raw.start_ns.size:
        lat = stats.latency_stats(raw.start_ns, raw.end_ns)
        entry["latency_ms"] = lat.to_dict()
        if entry["latency_source"] == "block_means":
            # Each block's windows repeat its mean: the distribution and its intervals are over the blocks.
            order = np.argsort(raw.start_ns, kind="stable")
            starts, ends = raw.start_ns[order], raw.end_ns[order]
            firsts = np.array([i for i, _ in runner_blocks(starts, ends)], dtype=np.int64)
            blocks = stats.latency_stats(starts[firsts], ends[firsts])
            entry["latency_ms"] = blocks.to_dict(block_means=firsts.size)
        entry["throughput_ips"] = lat.throughput_ips
        entry["duration_s"] = lat.duration_s
        if in_blocks:  # inferences per second while the runner ran them, not counting its start-ups
            order = np.argsort(raw.start_ns, kind="stable")
            spans = block_spans(
                raw.start_ns[order], raw.end_ns[order], runner_blocks(raw.start_ns[order], raw.end_ns[order])
            )
            busy_s = float(np.sum(spans[:, 1] - spans[:, 0])) / 1e9
            entry["throughput_ips"] = lat.n / busy_s if busy_s > 0 else None
    measure = raw.phase("measure")
    if measure is not None and measure.end_ns and raw.start_ns.size:
        entry["energy"] = energy.energy_stats(
            raw.series, measure, raw.phase("idle"), raw.start_ns, raw.end_ns, in_blocks=in_blocks
        ).to_dict()
        entry["thermal"] = energy.thermal_stats(
            raw.series,
            measure,
            raw.phase("warmup"),
            raw.phase("idle"),
            trip_temp_c=_float_note(end.notes, "trip_temp_c"),
            settle=raw.phase("settle"),
        )
        if entry["latency_source"] == "per_inference":  # block means repeat each block's value: no series to test
            entry["latency_drift"] = latency_drift(raw.start_ns, raw.end_ns)
        cores = info.device.cpu_cores if info is not None else 0
        entry["machine_load"] = machine_load(raw.series, measure, info.threads if info is not None else 0, cores)
    if end.notes.get("energy_refused"):
        # The agent would not measure energy (a phone on USB power): the figures are absent by design, not
        # broken, so the latency stays valid; the reason goes in full to the warnings and in a word to the table.
        entry["energy"].update(refused=end.notes["energy_refused"], refused_short=_one_word(end.notes))
    _accelerator(entry, raw, end)
    if end.op_by_type:
        entry["op_profile"] = {
            "by_type": [_op(o) for o in end.op_by_type],
            "top_nodes": [_op(o) for o in end.op_top_nodes],
        }
    return finite_or_null(entry)  # strict JSON (DESIGN.md §4): null, never NaN or Infinity


def _accelerator(entry: dict[str, Any], raw: DeviceRaw, end: pb.JobEnd) -> None:
    """TensorRT engine, Jetson power mode and clocks, rails the work moved (host/analysis/accelerator.py)."""
    notes = accelerator.merged_notes(end)
    tensorrt = accelerator.tensorrt_block(notes)
    if tensorrt is not None:
        entry["tensorrt"] = tensorrt
    jetson = accelerator.jetson_block(notes)
    if jetson is not None:
        entry["jetson"] = jetson
    if raw.start_ns.size:
        window = (int(raw.start_ns.min()), int(raw.end_ns.max()))
        moved = accelerator.rail_movement(raw.series, window, raw.phase("idle"))
        if moved is not None:
            entry["rail_movement"] = moved


def _one_word(notes: Any) -> str:
    """The agent's one-word refusal ("charging", "plugged-in"), or "refused" when it sent none or not a word."""
    word = str(notes.get("energy_refused_short", ""))
    return word if ONE_WORD.fullmatch(word) else "refused"


#: What llama.cpp runs record in JobEnd.notes (agent/runtimes/llamacpp.py and llama_bench.py), kept with the results.
LLAMA_CPP_KEYS = (
    "quantization",
    "quantization_source",
    "architecture",
    "runner",
    "n_ctx",
    "n_ctx_train",
    "n_batch",
    "n_ubatch",
    "n_threads",
    "n_gpu_layers",
    "backends",
)
#: A setting's text as agents write it; anything else (control characters, markup) is dropped, not shown.
_SETTING = re.compile(r"[A-Za-z0-9_.,:+()' -]{1,120}")


def llama_cpp_settings(notes: Any) -> dict[str, str]:
    """The llama.cpp settings among the notes (empty for other runtimes); values that are not plain text dropped."""
    if "quantization" not in notes:
        return {}
    return {k: str(notes[k]) for k in LLAMA_CPP_KEYS if k in notes and _SETTING.fullmatch(str(notes[k]))}


def _float_note(notes: Any, key: str) -> float | None:
    """A number the agent put in JobEnd.notes (e.g. the lowest thermal trip point), None when absent or bad."""
    try:
        value = float(notes[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _op(op: pb.OpStat) -> dict[str, Any]:
    return {
        "op_type": op.op_type,
        "node": op.node or None,
        "total_us": op.total_us,
        "calls": op.calls,
        "provider": op.provider,
    }


def _board(dev: pb.DeviceInfo) -> dict[str, Any]:
    return {
        "hostname": dev.hostname,
        "board": dev.board,
        "os": dev.os,
        "kernel": dev.kernel,
        "machine": dev.machine,
        "cpu_model": dev.cpu_model,
        "cpu_cores": dev.cpu_cores,
        "ram_mb": dev.ram_bytes / 1024**2,
        "agent_version": dev.agent_version,
        "runtimes": {rt.name: rt.version for rt in dev.runtimes},
        "metadata": dict(dev.metadata),
        "sensors": [{"name": s.name, "kind": s.kind, "role": s.role, "sensor": s.sensor} for s in dev.sensors],
    }
