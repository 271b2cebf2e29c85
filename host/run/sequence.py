"""Multi-part profiles on the host (`host profile --repeat K`, `host ab`): one agent job per device, split into runs.

Each device gets ONE job whose parts run back to back in fresh workers (agent/jobs/parts.py), so no other
host's job can run between the repetitions or between A and B. The parts' measurements are split by
model into one run per model, each device entry carrying its `repetitions` (host/analysis/repetitions.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from host import __version__
from host.analysis.repetitions import merge_raw, pool, repetition_summary
from host.analysis.summary import device_entry, error_entry
from host.analysis.validity import assess
from host.fleet.client import AgentClient
from host.fleet.rpc_errors import describe_rpc_error
from host.prepare.modelfile import ModelFile
from host.run.collect import JobCollector, SequenceError
from host.run.interrupt import StopSignal
from host.run.profiling import (
    CompileFn,
    DeviceFailed,
    DeviceProgress,
    ProfileSettings,
    ProgressCallback,
    Target,
    _request,
    acknowledge,
    follow_collector,
    identity_compile,
    interrupted_error,
    settings_document,
    stream_job,
)
from host.store.rundata import DeviceRaw, RunData
from host.store.sqlite import Store
from protos import agent_pb2 as pb

#: DeviceInfo.capabilities entry of an agent that runs multi-part jobs (agent/jobs/parts.py CAPABILITY).
PARTS_CAPABILITY = "parts"


def repeat_order(repeat: int) -> list[int]:
    """`--repeat K` of one model: K parts of model 0."""
    return [0] * repeat


def ab_order(repeat: int) -> list[int]:
    """`host ab`: A B A B … K of each, interleaved so drift and heat hit both sides alike."""
    return [0, 1] * repeat


def _new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def profile_device_parts(
    target: Target,
    models: Sequence[ModelFile],
    order: Sequence[int],
    settings: ProfileSettings,
    *,
    progress: ProgressCallback,
    compile_fn: CompileFn = identity_compile,
    stop: StopSignal | None = None,
) -> list[tuple[dict[str, Any], DeviceRaw | None]]:
    """Run the parts (model index per part) as one job on one device; one (entry, raw) per model."""
    state = DeviceProgress(target.name, target_runs=settings.runs, parts=len(order))
    # `host ab`: which side each part measures; plain --repeat has one side, left unnamed.
    sides = [("A", "B")[m] if m < 2 else str(m) for m in order] if len(models) > 1 else []
    progress(state)
    upload_bytes = [0] * len(models)
    recipes: list[dict[str, Any] | None] = [None] * len(models)
    job_id = uuid.uuid4().hex
    try:
        with AgentClient(target.address, target.credentials) as client:
            info = client.describe()
            if len(order) > 1 and PARTS_CAPABILITY not in info.capabilities:
                raise DeviceFailed(
                    f"the agent at {target.address} (version {info.agent_version or 'unknown'}) cannot run"
                    " repetitions in fresh workers in one job: upgrade the agent, or run without --repeat/ab"
                )
            artifacts = []
            state.phase = "upload"
            progress(state)
            for i, model in enumerate(models):
                artifact, recipes[i] = compile_fn(model, info)
                if not client.has_model(artifact.sha256):
                    upload_bytes[i] = client.upload(artifact.path, artifact.sha256, artifact.format)
                artifacts.append(artifact)
            state.upload_bytes = sum(upload_bytes)
            request = _request(job_id, artifacts[order[0]], settings)
            if len(order) > 1:
                for index in order:
                    request.parts.add(model_sha256=artifacts[index].sha256, model_format=artifacts[index].format)
            collector = JobCollector(target.name)

            def on_batch(c: JobCollector) -> None:
                follow_collector(state, c, settings.min_duration_s, sides)
                progress(state)

            if stop is not None and stop.is_set():
                raise DeviceFailed(f"interrupted by {stop.reason} before the job started")
            stream_job(client, request, collector, on_batch, settings.reconnect_s, stop=stop)
            interrupted = interrupted_error(stop, collector) if stop is not None and stop.is_set() else ""
            results = [
                _model_entry(target, collector, order, i, settings, upload_bytes[i], recipes[i], job_id, interrupted)
                for i in range(len(models))
            ]
    except grpc.RpcError as err:
        message = describe_rpc_error(err, target.address)
        results = [_failed(target, message, upload_bytes[i], recipes[i]) for i in range(len(models))]
    except (DeviceFailed, SequenceError) as err:
        results = [_failed(target, str(err), upload_bytes[i], recipes[i], job_id) for i in range(len(models))]
    except Exception as err:  # e.g. a compile step that fails for this target only: the others go on
        message = f"{type(err).__name__}: {err}"
        results = [_failed(target, message, upload_bytes[i], recipes[i]) for i in range(len(models))]
    for entry, _ in results:  # a device that failed before it measured says why in its validity too
        entry.setdefault("validity", assess(entry, settings.runs, settings.min_duration_s))
        if entry["status"] != "ok" and stop is not None and stop.is_set():
            entry.setdefault("error_kind", "interrupted")
    failed = [entry for entry, _ in results if entry["status"] != "ok"]
    state.parts_done, state.eta_s = len(order) if not failed else state.parts_done, None
    state.status = "error" if failed else "ok"
    state.error = (failed[0].get("error") or "") if failed else ""
    state.phase = "failed" if failed else "done"
    progress(state)
    return results


def _model_end(end: pb.JobEnd | None, part: int) -> pb.JobEnd | None:
    """The job's end with what the model's first part noted and the combined end leaves out: how its runtime
    measured (latency_source, a phone's or llama-bench's block sizes) and ran it (a GGUF model's quantization
    and llama.cpp settings), which can differ between the models of `host ab`."""
    own = next((p for p in end.parts if p.part == part), None) if end is not None else None
    if end is None or own is None:
        return end
    model_end = pb.JobEnd()
    model_end.CopyFrom(end)
    for key, value in own.notes.items():
        if key not in model_end.notes:
            model_end.notes[key] = value
    return model_end


def _failed(
    target: Target, error: str, upload_bytes: int, recipe: dict[str, Any] | None, job_id: str = ""
) -> tuple[dict[str, Any], None]:
    known: dict[str, Any] = {"upload_bytes": upload_bytes, "recipe": recipe, "address": target.address}
    if job_id:
        known["job_id"] = job_id
    return error_entry(target.name, error, **known), None


def _model_entry(
    target: Target,
    collector: JobCollector,
    order: Sequence[int],
    model_index: int,
    settings: ProfileSettings,
    upload_bytes: int,
    recipe: dict[str, Any] | None,
    job_id: str,
    interrupted: str = "",
) -> tuple[dict[str, Any], DeviceRaw | None]:
    """The device entry of one model: its parts as repetitions, pooled (`interrupted`: Ctrl-C's one line)."""
    parts = [p for p, m in enumerate(order) if m == model_index]
    raws = [collector.part_raw(p) for p in parts]
    merged = merge_raw(target.name, raws)
    first_info = collector.infos.get(parts[0])
    entry = device_entry(
        target.name,
        merged,
        first_info,
        _model_end(collector.end, parts[0]),
        upload_bytes=upload_bytes,
        recipe=recipe,
        job_id=job_id,
    )
    entry["address"] = target.address
    entry["phases"] = [
        {"part": p, "name": s.name, "start_ns": s.start_ns, "end_ns": s.end_ns, "detail": s.detail, "count": s.count}
        for p, raw in zip(parts, raws, strict=True)
        for s in raw.phases
    ]
    if entry["status"] == "ok":
        in_blocks = collector.end is not None and "block_runs" in collector.end.notes  # a phone's runner blocks
        reps = [
            repetition_summary(i, p, raw, collector.infos.get(p), in_blocks=in_blocks)
            for i, (p, raw) in enumerate(zip(parts, raws, strict=True))
        ]
        pool(entry, reps, raws)
        k = len(reps)
        validity = assess(entry, settings.runs * k, settings.min_duration_s * k)
        for rep in reps:
            if rep["n"] < settings.runs:
                validity["reasons"].append(
                    f"repetition {rep['index'] + 1}: measured {rep['n']} inferences,"
                    f" fewer than the {settings.runs} required"
                )
        validity["valid"] = not validity["reasons"]
        entry["validity"] = validity
        return entry, merged
    if interrupted:  # what the cancelled job measured is kept, marked as the interrupted run it is
        entry["error"], entry["error_kind"] = interrupted, "interrupted"
        entry["validity"] = assess(entry, settings.runs, settings.min_duration_s)
        return entry, merged
    entry["validity"] = assess(entry, settings.runs, settings.min_duration_s)
    return entry, None


def run_parts(
    models: Sequence[ModelFile],
    order: Sequence[int],
    targets: Sequence[Target],
    settings: ProfileSettings,
    *,
    store: Store | None,
    progress: ProgressCallback,
    compile_fn: CompileFn = identity_compile,
    roles: Sequence[str] = (),
    stop: StopSignal | None = None,
) -> list[RunData]:
    """Profile the parts on every target concurrently; one run per model (stored when a store is given)."""
    run_ids = [_new_run_id() for _ in models]
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with ThreadPoolExecutor(max_workers=max(1, len(targets)), thread_name_prefix="device") as pool_:
        futures = [
            pool_.submit(
                profile_device_parts, t, models, order, settings, progress=progress, compile_fn=compile_fn, stop=stop
            )
            for t in targets
        ]
        per_device = [f.result() for f in futures]
    runs = []
    for i, model in enumerate(models):
        doc_settings = settings_document(settings)
        doc_settings["repeat"] = sum(1 for m in order if m == i)
        document: dict[str, Any] = {
            "run_id": run_ids[i],
            "created_at": created_at,
            "host_version": __version__,
            "model": {
                "path": str(model.display_path),
                "sha256": model.sha256,
                "format": model.format,
                "size_bytes": model.size_bytes,
            },
            "settings": doc_settings,
            "devices": [results[i][0] for results in per_device],
        }
        if roles:  # not under settings: the two sides were measured alike, and compare diffs settings
            document["ab"] = {
                "role": roles[i],
                "order": "".join("AB"[m] if len(models) == 2 else str(m) for m in order),
                "runs": dict(zip(roles, run_ids, strict=True)),
            }
        raw = {entry["device"]: r for entry, r in (results[i] for results in per_device) if r is not None}
        runs.append(RunData(document=document, raw=raw))
    if store is not None:
        for run in runs:
            store.save_run(run)
        acknowledge(runs[0], targets)
    return runs
