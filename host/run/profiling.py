"""Runs one profile across devices: describe, upload if missing, stream with resume, summarise, store."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from host import __version__
from host.analysis.summary import device_entry, error_entry
from host.analysis.validity import assess
from host.fleet.client import AgentClient
from host.fleet.rpc_errors import describe_rpc_error
from host.fleet.target import Target
from host.prepare.modelfile import ModelFile
from host.run.collect import JobCollector, SequenceError
from host.run.interrupt import StopSignal
from host.run.stream_watch import StallWatch
from host.store.rundata import DeviceRaw, RunData
from host.store.sqlite import PendingJob, Store
from protos import agent_pb2 as pb

#: Stream errors after which the host re-attaches (with backoff) instead of failing the device.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
}
#: Longest silence of a running job's stream. The agent flushes a batch every 0.1 s while a job runs (its
#: sampler reads the worker's memory at least), so a minute of nothing means the stream is stuck.
STALL_S = 60.0
#: With a slow requested sampling rate the memory samples that keep a stream busy come one period apart:
#: then a stream counts as stalled only after this many periods.
STALL_SAMPLE_PERIODS = 3
#: Deadline of the call that asks an agent whether a silent job is still queued.
PROBE_TIMEOUT_S = 5.0
#: The least time a re-attach gets to deliver its first batch, even at the very end of the reconnect budget.
MIN_ATTEMPT_S = 2.0
#: After Ctrl-C: how long the host waits for an agent to end a cancelled job and send what it measured.
INTERRUPT_COLLECT_S = 8.0
#: Deadline of the Cancel call sent on Ctrl-C.
CANCEL_TIMEOUT_S = 3.0


@dataclass
class ProfileSettings:
    runs: int = 100
    warmup: int = 10
    min_duration_s: float = 1.0
    idle_s: float = 2.0
    threads: int = 0
    input_shapes: dict[str, str] = field(default_factory=dict)
    inputs_npz: bytes = b""
    sample_rate_hz: float = 0.0
    settle_timeout_s: float = 0.0
    op_profile: bool = False
    timeout_s: float = 0.0
    #: How long the host keeps re-attaching to a job whose stream broke.
    reconnect_s: float = 300.0
    #: GenAI models (host/analysis/generation.py): prompt lengths swept, tokens per generation, or a text prompt.
    prompt_lens: tuple[int, ...] = (128,)
    gen_len: int = 64
    prompt_text: str = ""
    #: Job options every device gets: {"runtime": "tensorrt", "tensorrt.precision": "fp16", ...}.
    options: dict[str, str] = field(default_factory=dict)
    #: GGUF models: llama.cpp's settings, sent as request options ("n_ctx", "n_batch", "n_gpu_layers").
    llama_options: dict[str, str] = field(default_factory=dict)
    #: What changes the model each board runs (host/prepare/compile.py), recorded so that runs, comparisons and
    #: trends tell a float run from an int8 one: "int8" or None, its mode, the calibration file's sha256.
    quantize: str | None = None
    quantize_mode: str | None = None
    calibration_sha256: str | None = None


@dataclass
class DeviceProgress:
    device: str
    phase: str = "connect"
    #: Inferences measured: in the whole job, and in the current repetition (part) against its target.
    measured: int = 0
    target_runs: int = 0
    part_measured: int = 0
    p50_ms: float | None = None
    power_w: float | None = None
    status: str = "running"  # "running" | "ok" | "error"
    error: str = ""
    upload_bytes: int = 0
    #: Repetitions (--repeat, `host ab`): the current one (0-based), how many, how many ended, and for `host ab`
    #: the side of the current one ("A" base, "B" candidate) and of the one that ended last.
    part: int = 0
    parts: int = 1
    parts_done: int = 0
    side: str = ""
    done_side: str = ""
    #: p50 of the repetition that ended last, ms.
    done_p50_ms: float | None = None
    done_measured: int = 0
    #: Seconds left: of the current measure phase (--min-duration), and of the whole job (estimated from the
    #: repetitions done); None while unknown.
    measure_left_s: float | None = None
    eta_s: float | None = None
    started_at: float = field(default_factory=time.monotonic)


def follow_collector(state: DeviceProgress, c: JobCollector, min_duration_s: float, sides: Sequence[str] = ()) -> None:
    """Update a device's progress from its job's collector after a batch (live displays read `state`)."""
    state.phase = c.current_phase
    state.measured = c.measured
    state.part = c.current_part
    state.part_measured = c.part_measured.get(c.current_part, 0)
    state.side = sides[c.current_part] if c.current_part < len(sides) else ""
    if c.recent_latency_ns.size:
        state.p50_ms = float(np.median(c.recent_latency_ns)) / 1e6
    state.power_w = c.recent_power_w()
    if c.current_part > state.parts_done:  # a new part started: the one before it ended
        state.parts_done = c.current_part
        done = c.current_part - 1
        state.done_side = sides[done] if done < len(sides) else ""
        state.done_p50_ms = c.part_p50_ms(done)
        state.done_measured = c.part_measured.get(done, 0)
    elapsed = c.measure_elapsed_s() if c.current_phase == "measure" else None
    state.measure_left_s = None if elapsed is None else max(0.0, min_duration_s - elapsed)
    if state.parts_done:
        per_part_s = (time.monotonic() - state.started_at) / state.parts_done
        state.eta_s = max(0.0, per_part_s * state.parts - (time.monotonic() - state.started_at))
    elif state.parts == 1:
        state.eta_s = state.measure_left_s


ProgressCallback = Callable[[DeviceProgress], None]
#: Turns the model into what a target needs (issue #4's per-target compile); identity by default.
CompileFn = Callable[[ModelFile, pb.DeviceInfo], tuple[ModelFile, dict[str, Any]]]


def identity_compile(model: ModelFile, info: pb.DeviceInfo) -> tuple[ModelFile, dict[str, Any]]:
    return model, {"target_format": model.format, "steps": []}


class DeviceFailed(Exception):
    """A device's profile failed; the message is the one line the user sees."""


def _request(job_id: str, model: ModelFile, s: ProfileSettings) -> pb.ProfileRequest:
    request = _inference_request(job_id, model, s)
    if model.format in ("genai", "gguf"):
        lens = [] if s.prompt_text else list(s.prompt_lens)
        request.generation.CopyFrom(pb.GenerationSpec(prompt_lens=lens, gen_len=s.gen_len, prompt_text=s.prompt_text))
    if model.format == "gguf":
        request.options.update(s.llama_options)
    return request


def _inference_request(job_id: str, model: ModelFile, s: ProfileSettings) -> pb.ProfileRequest:
    return pb.ProfileRequest(
        job_id=job_id,
        model_sha256=model.sha256,
        model_format=model.format,
        runs=s.runs,
        warmup=s.warmup,
        min_duration_s=s.min_duration_s,
        idle_s=s.idle_s,
        threads=s.threads,
        input_shapes=s.input_shapes,
        inputs_npz=s.inputs_npz,
        sample_rate_hz=s.sample_rate_hz,
        settle_timeout_s=s.settle_timeout_s,
        op_profile=s.op_profile,
        timeout_s=s.timeout_s,
        options=s.options,
    )


def stream_job(
    client: AgentClient,
    request: pb.ProfileRequest,
    collector: JobCollector,
    on_batch: Callable[[JobCollector], None],
    reconnect_s: float,
    attach_only: bool = False,
    stall_s: float | None = None,
    stop: StopSignal | None = None,
) -> None:
    """Follow a job to its end, re-attaching after lost streams from the last batch received.

    A lost stream is an error, a stream that ends before the job's JobEnd, or one that carries nothing for
    `stall_s` (default STALL_S) while the job runs (a queued job is asked after). From the first loss on, the
    host keeps re-attaching for at most `reconnect_s` seconds without receiving a batch, then gives up
    (DeviceFailed), so it never waits without a bound: a batch received restarts the budget.

    When `stop` is set (Ctrl-C, SIGTERM) the open stream is cancelled at once, the job is cancelled on the
    agent, and what it journalled up to its end (CANCELLED) is collected within INTERRUPT_COLLECT_S.
    """
    stall_s = STALL_S if stall_s is None else stall_s
    started = not attach_only and collector.last_seq == 0
    give_up_at: float | None = None
    first_reason = ""
    backoff_s = 0.2
    interrupted = False
    while not collector.finished:
        if stop is not None and stop.is_set() and not interrupted:
            interrupted = True
            collector.phase_at_stop = collector.current_phase
            _cancel_quietly(client, request.job_id)
            give_up_at = time.monotonic() + INTERRUPT_COLLECT_S
            first_reason = f"interrupted by {stop.reason}, the job was cancelled"
        if interrupted and collector.last_seq == 0 and started:
            return  # Ctrl-C before the job was even submitted: nothing to collect
        if not started:
            stream = client.attach(request.job_id, collector.last_seq)
        else:
            stream = client.profile(request)
            started = False  # later rounds re-attach; Profile with a known job_id is also safe
        # While re-attaching, an attempt may take until the budget ends (at least MIN_ATTEMPT_S) to deliver.
        first_by = None if give_up_at is None else max(give_up_at, time.monotonic() + MIN_ATTEMPT_S)
        watch = StallWatch(stream, stall_s, lambda: _still_queued(client, request.job_id, collector), first_by)
        lost: grpc.RpcError | None = None
        unwatch = stop.on_set(stream.cancel) if stop is not None and not interrupted else (lambda: None)
        try:
            with watch:
                for batch in stream:
                    watch.fed()
                    collector.add(batch)
                    if not interrupted:  # after Ctrl-C the deadline to collect the job's end stays
                        give_up_at = None
                    backoff_s = 0.2
                    on_batch(collector)
            if collector.finished:
                return
            reason = "its stream ended before the job did"
        except grpc.RpcError as err:
            if stop is not None and stop.is_set() and not interrupted:
                continue  # cancelled by the stop signal: cancel the job, then collect its end
            if err.code() not in RETRYABLE:  # type: ignore[attr-defined]
                raise
            lost = err
            reason = watch.reason or describe_rpc_error(err, client.address)
        finally:
            unwatch()
        now = time.monotonic()
        if give_up_at is None:
            give_up_at = now + reconnect_s
            first_reason = reason  # why the job was lost says more than how the last re-attach failed
        if now >= give_up_at and interrupted:
            raise DeviceFailed(
                f"{first_reason} during {collector.current_phase}; the agent at {client.address} did not send "
                f"its end within {INTERRUPT_COLLECT_S:g} s: what it measured can be collected with `host runs fetch`"
            ) from lost
        if now >= give_up_at:
            raise DeviceFailed(
                f"lost the agent at {client.address} during {collector.current_phase} and could not re-attach "
                f"for {reconnect_s:g} s ({first_reason}); collect it later with `host runs fetch`"
            ) from lost
        time.sleep(min(backoff_s, give_up_at - now))
        backoff_s = min(backoff_s * 2, 5.0)


def stall_bound_s(settings: ProfileSettings) -> float:
    """STALL_S, or longer when a slow requested sampling rate leaves seconds between the agent's batches."""
    if settings.sample_rate_hz > 0:
        return max(STALL_S, STALL_SAMPLE_PERIODS / settings.sample_rate_hz)
    return STALL_S


def _cancel_quietly(client: AgentClient, job_id: str) -> None:
    """Ask the agent to stop a job, within a short deadline; an agent that cannot be reached ends it itself."""
    with contextlib.suppress(grpc.RpcError):
        client.cancel(job_id, timeout_s=CANCEL_TIMEOUT_S)


def _still_queued(client: AgentClient, job_id: str, collector: JobCollector) -> bool:
    """Whether a silent stream is only waiting in the agent's queue (asked with deadlines of its own).

    An agent that no longer serves (its job runner died) will never start the job: that is no reason to wait.
    """
    if collector.current_phase != "queued":
        return False
    if client.health(timeout_s=PROBE_TIMEOUT_S) != "SERVING":
        return False
    try:
        return client.job_state(job_id, timeout_s=PROBE_TIMEOUT_S) == "queued"
    except grpc.RpcError:
        return False


def profile_device(
    target: Target,
    model: ModelFile,
    settings: ProfileSettings,
    *,
    run_id: str,
    store: Store | None,
    progress: ProgressCallback,
    compile_fn: CompileFn = identity_compile,
    stop: StopSignal | None = None,
) -> tuple[dict[str, Any], DeviceRaw | None]:
    state = DeviceProgress(target.name, target_runs=settings.runs)
    progress(state)
    upload_bytes = 0
    recipe: dict[str, Any] | None = None
    job_id = uuid.uuid4().hex
    try:
        with AgentClient(target.address, target.credentials) as client:
            info = client.describe()
            artifact, recipe = compile_fn(model, info)
            state.phase = "upload"
            progress(state)
            if not client.has_model(artifact.sha256):
                upload_bytes = client.upload(artifact.path, artifact.sha256, artifact.format)
            state.upload_bytes = upload_bytes
            request = _request(job_id, artifact, settings)
            if stop is not None and stop.is_set():
                raise DeviceFailed(f"interrupted by {stop.reason} before the job started")
            if store is not None and not target.ephemeral:
                store.add_pending(
                    PendingJob(
                        run_id,
                        target.name,
                        target.address,
                        job_id,
                        # The user's model for the run document; the compiled artifact is what the job runs.
                        {
                            "model": asdict_model(model),
                            "artifact": asdict_model(artifact),
                            "recipe": recipe,
                            "discovered": target.discovered,
                        },
                        settings_document(settings),
                    )
                )
            collector = JobCollector(target.name)

            def on_batch(c: JobCollector) -> None:
                follow_collector(state, c, settings.min_duration_s)
                progress(state)

            stream_job(
                client, request, collector, on_batch, settings.reconnect_s, stall_s=stall_bound_s(settings), stop=stop
            )
            raw = collector.raw()
            entry = device_entry(
                target.name, raw, collector.info, collector.end, upload_bytes=upload_bytes, recipe=recipe, job_id=job_id
            )
            entry["address"] = target.address
            if stop is not None and stop.is_set() and entry["status"] != "ok":
                entry["error"] = interrupted_error(stop, collector)
                entry["error_kind"] = "interrupted"
            entry["validity"] = assess(entry, settings.runs, settings.min_duration_s)
            if collector.end is not None and collector.end.op_trace_gz:
                keep_op_trace(entry, collector.end.op_trace_gz, run_id)
    except grpc.RpcError as err:
        entry, raw = (
            error_entry(
                target.name,
                describe_rpc_error(err, target.address),
                upload_bytes=upload_bytes,
                recipe=recipe,
                address=target.address,
            ),
            None,
        )
    except (DeviceFailed, SequenceError) as err:
        entry, raw = (
            error_entry(
                target.name, str(err), upload_bytes=upload_bytes, recipe=recipe, address=target.address, job_id=job_id
            ),
            None,
        )
        if stop is not None and stop.is_set():
            entry["error_kind"] = "interrupted"
    except Exception as err:  # e.g. a compile step that fails for this target only: the others go on
        entry, raw = (
            error_entry(
                target.name,
                f"{type(err).__name__}: {err}",
                upload_bytes=upload_bytes,
                recipe=recipe,
                address=target.address,
            ),
            None,
        )
    # A device that failed before it measured (no connection, a refused model) is not valid either, and says why.
    entry.setdefault("validity", assess(entry, settings.runs, settings.min_duration_s))
    state.status = entry["status"]
    state.error = entry.get("error") or ""
    state.phase = "done" if state.status == "ok" else "failed"
    progress(state)
    return entry, raw


def keep_op_trace(entry: dict[str, Any], gz: bytes, run_id: str) -> None:
    """Write the runtime's op trace in the working directory and name it in the entry (or say why not)."""
    from host.run.op_trace import TraceError, write_trace

    profile = entry.setdefault("op_profile", {"by_type": [], "top_nodes": []})
    try:
        profile["trace_file"] = str(write_trace(gz, Path.cwd(), run_id, entry["device"]))
    except TraceError as err:
        profile["trace_problem"] = str(err)


def interrupted_error(stop: StopSignal, collector: JobCollector) -> str:
    """The one line of a device whose job Ctrl-C (or SIGTERM) cancelled: where it was, what was kept."""
    return (
        f"interrupted by {stop.reason} during {collector.phase_at_stop or collector.current_phase}: the job was "
        f"cancelled after {collector.measured} measured inferences, which are kept in the run"
    )


def settings_document(settings: ProfileSettings) -> dict[str, Any]:
    """The settings as a run document records them (an inputs file as whether one was given, and its sha256)."""
    doc = asdict(settings)
    doc["inputs_npz"] = bool(settings.inputs_npz)
    doc["inputs_sha256"] = hashlib.sha256(settings.inputs_npz).hexdigest() if settings.inputs_npz else None
    return doc


def asdict_model(model: ModelFile) -> dict[str, Any]:
    return {
        "path": str(model.display_path),
        "format": model.format,
        "sha256": model.sha256,
        "size_bytes": model.size_bytes,
    }


def run_profile(
    model: ModelFile,
    targets: Sequence[Target],
    settings: ProfileSettings,
    *,
    store: Store | None,
    progress: ProgressCallback,
    compile_fn: CompileFn = identity_compile,
    stop: StopSignal | None = None,
) -> RunData:
    """Profile every target concurrently; one device's failure never stops the others.

    `stop` (Ctrl-C, SIGTERM) cancels every job and stores the run with what each device measured.
    """
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with ThreadPoolExecutor(max_workers=max(1, len(targets)), thread_name_prefix="device") as pool:
        futures = [
            pool.submit(
                profile_device,
                t,
                model,
                settings,
                run_id=run_id,
                store=store,
                progress=progress,
                compile_fn=compile_fn,
                stop=stop,
            )
            for t in targets
        ]
        results = [f.result() for f in futures]
    document: dict[str, Any] = {
        "run_id": run_id,
        "created_at": created_at,
        "host_version": __version__,
        "model": {
            "path": str(model.display_path),
            "sha256": model.sha256,
            "format": model.format,
            "size_bytes": model.size_bytes,
        },
        "settings": settings_document(settings),
        "devices": [entry for entry, _raw in results],
    }
    raw = {entry["device"]: r for entry, r in results if r is not None}
    run = RunData(document=document, raw=raw)
    if store is not None:
        # save_run clears the run's pending jobs; a job whose stream was lost (its entry names the job, but
        # no samples came) must stay pending, or the `host runs fetch` its error suggests finds nothing.
        lost = {e["device"] for e in document["devices"] if e.get("job_id") and e["device"] not in raw}
        uncollected = [job for job in store.pending(run_id) if job.device in lost]
        store.save_run(run)
        for job in uncollected:
            store.add_pending(job)
        acknowledge(run, targets)
    return run


def acknowledge(run: RunData, targets: Sequence[Target]) -> None:
    """Tell each agent its journal for this run may be pruned (best effort: age pruning backs it up).

    Only after the run is stored, and to all agents at once: one at a time, a 16-board fleet waited
    for 16 connections in a row before the command could end.
    """
    by_name = {t.name: t for t in targets}
    jobs = [
        (by_name[entry["device"]], entry["job_id"])
        for entry in run.document["devices"]
        if entry["device"] in by_name and entry.get("job_id") and entry["device"] in run.raw
    ]

    def ack(target: Target, job_id: str) -> None:
        try:
            with AgentClient(target.address, target.credentials, timeout_s=5) as client:
                client.acknowledge(job_id, 1 << 62)
        except grpc.RpcError:
            pass

    if jobs:
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="ack") as pool:
            list(pool.map(lambda job: ack(*job), jobs))
