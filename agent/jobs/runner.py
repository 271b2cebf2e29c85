"""The job runner: a bounded queue, one job at a time per board, each in a worker subprocess.

Measurements never overlap: a second Profile waits in the queue (its stream reports the QUEUED phase
with its position) and is refused with RESOURCE_EXHAUSTED only when the queue is full.

With `warm_worker` the runner keeps one worker started ahead of the next job, its runtimes already
imported (see agent/worker.py). It is started once the board has been idle for WARM_WORKER_DELAY_S, so its
start never overlaps a measurement; a job takes it if it is alive and starts a cold one if not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import frames
from agent.batches import BatchEmitter, job_end
from agent.errors import AgentError, Busy, InvalidInput, SensorError
from agent.inputs import parse_shape
from agent.journal import Journal, JournalWriteError
from agent.model_cache import ModelCache, check_sha256
from agent.parts import Part, combine_ends, job_parts, part_models, validate_parts
from agent.sampler import DEFAULT_RATE_HZ, MIN_COUNTER_UPDATES, Sampler
from agent.sensors.base import ENERGY_UJ, POWER_MW, TEMP_C, Sensor
from protos import agent_pb2 as pb

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FORMATS = ("onnx", "ort", "tflite", "genai")
MAX_NPZ_BYTES = 64 * 1024**2
MAX_SHAPE_CHARS = 256
FLUSH_INTERVAL_S = 0.1
#: Measured inferences when a request leaves runs at 0.
DEFAULT_RUNS = 100
#: The longest warmup when a request leaves max_warmup_s at 0: warmup ends there, stable or not.
DEFAULT_MAX_WARMUP_S = 30.0
#: Idle time before the warm worker is started: not while the host still reads the last job's stream
#: or sends the next job at once (a job that arrives meanwhile starts its own worker).
WARM_WORKER_DELAY_S = 1.0
#: Pause between attempts to write a job's end to a journal that refused a write (e.g. disk full).
JOURNAL_RETRY_INTERVAL_S = 0.2
#: How often an idle runner retries writing the batches of ended jobs that the journal refused.
JOURNAL_RETRY_IDLE_S = 1.0
#: How long shutdown waits for the runner's thread (a job stuck in a backend must not hang the agent's exit).
SHUTDOWN_WAIT_S = 10.0
#: What a worker's error says when an allocation failed (Python, ONNX Runtime, TFLite, the C++ runtime).
_ALLOCATION_FAILED = re.compile(
    r"out of memory|MemoryError|Failed to allocate|bad_alloc|Cannot allocate memory|ENOMEM", re.IGNORECASE
)


class RunnerStopped(AgentError):
    """The job runner's thread has died: no job can run until the agent is restarted."""

    kind = "internal"


@dataclass
class JobSettings:
    """What the board contributes to every job (from the device profile and `agent serve` flags)."""

    profile: str = "generic-linux"
    providers: Sequence[str] = ()
    settle_temp_c: float | None = None
    #: The settle wait when a request leaves it at 0 (the profile's settle_timeout_s).
    settle_timeout_s: float = 60.0
    default_timeout_s: float = 3600.0
    max_queued: int = 8
    sample_rate_hz: float = DEFAULT_RATE_HZ
    #: Sensors read during every job (power, temperature, frequency); the worker's memory is added.
    sensors: Sequence[Sensor] = ()
    #: Builds the sensor that follows the worker's memory, given its pid.
    memory_sensor: Callable[[int], Sensor] | None = None
    #: Builds the sensor of CPU used by other processes than the agent and that worker, given its pid.
    contention_sensor: Callable[[int], Sensor] | None = None
    #: Snapshot of the board for JobInfo.device.
    describe: Callable[[], pb.DeviceInfo] = field(default=lambda: pb.DeviceInfo())
    #: Keep one worker started, runtimes imported, for the next job (costs its memory while idle).
    warm_worker: bool = False
    #: Memory a job's worker may add once its runtime is imported, MB (0 = no limit; agent/memory_limit.py).
    worker_memory_mb: int = 0
    #: How long a job's end is retried against a journal that refuses writes (a brief disk-full) before
    #: the job is reported as lost; its batches stay in memory and are written before each later job.
    journal_retry_s: float = 10.0
    #: Runs each job part instead of a local worker (agent/adb/backend.py drives a phone); None = the worker.
    backend: Any = None


@dataclass
class _Job:
    request: pb.ProfileRequest
    submitted_ns: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    worker: subprocess.Popen[bytes] | None = None
    #: Taken off the queue by the runner (under JobRunner._lock): a cancel no longer ends it at once.
    started: bool = False


#: The slowest sampling rate a request may ask for: one sample every 10 s.
MIN_SAMPLE_RATE_HZ = 0.1


def validate(request: pb.ProfileRequest) -> None:
    """Reject malformed requests with one line (INVALID_ARGUMENT) before anything is queued."""
    if not _JOB_ID.fullmatch(request.job_id):  # `$` alone would let a trailing newline through
        raise InvalidInput("job_id must be 32 lower-case hex digits (a uuid4 hex)")
    check_sha256(request.model_sha256)
    if request.model_format not in FORMATS:
        raise InvalidInput(f"model_format '{request.model_format[:40]}' is not one of {', '.join(FORMATS)}")
    bounds: list[tuple[str, float, float, float]] = [
        ("runs", request.runs, 0, 10_000_000),
        ("warmup", request.warmup, 0, 1_000_000),
        ("min_duration_s", request.min_duration_s, 0, 86_400),
        ("idle_s", request.idle_s, 0, 3_600),
        ("threads", request.threads, 0, 1_024),
        ("sample_rate_hz", request.sample_rate_hz, 0, 10_000),
        ("settle_timeout_s", request.settle_timeout_s, 0, 3_600),
        ("timeout_s", request.timeout_s, 0, 7 * 86_400),
        ("max_warmup_s", request.max_warmup_s, 0, 3_600),
    ]
    for name, value, low, high in bounds:
        if not low <= value <= high:  # also catches NaN
            raise InvalidInput(f"{name} must be between {low:g} and {high:g}, got {value}")
    if 0 < request.sample_rate_hz < MIN_SAMPLE_RATE_HZ:  # a period of years overflows the sampler's wait
        raise InvalidInput(
            f"sample_rate_hz must be between {MIN_SAMPLE_RATE_HZ:g} and 10000, or 0 for the agent's default, "
            f"got {request.sample_rate_hz}"
        )
    for name, shape in request.input_shapes.items():
        if not name or len(name) > 1024:
            raise InvalidInput("input_shapes has an empty or overlong input name")
        if len(shape) > MAX_SHAPE_CHARS:  # int() refuses 4300+ digits with a ValueError, an INTERNAL error here
            raise InvalidInput(f"input shape for '{name[:40]}' is longer than {MAX_SHAPE_CHARS} characters")
        parse_shape(shape)
    if len(request.inputs_npz) > MAX_NPZ_BYTES:
        raise InvalidInput(f"inputs .npz is larger than {MAX_NPZ_BYTES // 1024**2} MB")
    validate_parts(request, FORMATS)
    _validate_generation(request)


def _validate_generation(request: pb.ProfileRequest) -> None:
    """A GenAI model needs a generation spec with sane sizes (the worker checks the model's context length)."""
    formats = {request.model_format, *(p.model_format for p in request.parts)}
    spec = request.generation
    if "genai" not in formats:
        return
    if not 0 < spec.gen_len <= 1_000_000:
        raise InvalidInput(f"a GenAI model needs generation.gen_len between 1 and 1000000, got {spec.gen_len}")
    if not spec.prompt_text and not spec.prompt_lens:
        raise InvalidInput("a GenAI model needs generation.prompt_lens or generation.prompt_text")
    if len(spec.prompt_lens) > 64 or any(not 0 < n <= 1_000_000 for n in spec.prompt_lens):
        raise InvalidInput("generation.prompt_lens takes at most 64 lengths, each between 1 and 1000000 tokens")
    if len(spec.prompt_text) > 1_000_000:
        raise InvalidInput("generation.prompt_text is longer than 1000000 characters")


class JobRunner:
    def __init__(self, journal: Journal, cache: ModelCache, settings: JobSettings, work_dir: Path) -> None:
        self.journal = journal
        self.cache = cache
        self.settings = settings
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._running: _Job | None = None
        self._spare: subprocess.Popen[bytes] | None = None
        self._spare_lock = threading.Lock()
        #: Ended jobs whose last batches the journal refused: (emitter holding them, final state).
        self._unjournaled: dict[str, tuple[BatchEmitter, str]] = {}
        self._stopping = False
        self._died = False
        self._death_listeners: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        for job_id in journal.unfinished():
            # Left behind by an agent that died mid-job: end their streams with a clear error.
            emitter = BatchEmitter(journal, job_id)
            emitter.end(job_end(pb.JobEnd.ERROR, error="the agent restarted while this job was running", kind="crash"))
            emitter.flush()
            journal.set_state(job_id, "error")
        self._thread.start()

    @property
    def queued(self) -> int:
        """Jobs waiting for the board (cancelled ones are not waiting)."""
        with self._lock:
            return self._waiting()

    @property
    def alive(self) -> bool:
        """False once the runner's thread has died (not after a shutdown): health reports NOT_SERVING."""
        return not self._died

    def on_death(self, listener: Callable[[], None]) -> None:
        """Call `listener` if the runner's thread dies (at once if it already has)."""
        self._death_listeners.append(listener)
        if self._died:
            listener()

    def _waiting(self) -> int:
        return sum(1 for job in self._jobs.values() if not job.started and not job.cancelled.is_set())

    def submit(self, request: pb.ProfileRequest, owner: str | None = None) -> bool:
        """Queue a job owned by `owner` (agent/ownership.py). False when the id exists (the caller re-attaches)."""
        validate(request)
        # One lock from the existence check to the queue: two Profiles with one id (a host's retry racing
        # its first try) must not both create it; the second re-attaches to the first.
        with self._lock:
            if self._died:
                raise RunnerStopped("the agent's job runner has stopped after an internal error: restart the agent")
            if request.job_id in self._jobs or self.journal.exists(request.job_id):
                return False
            for sha256 in part_models(request):
                self.cache.use(sha256)  # raises ModelNotFound
            waiting = self._waiting()
            if waiting >= self.settings.max_queued:
                raise Busy(f"the agent's queue is full ({self.settings.max_queued} jobs waiting): try again later")
            self.journal.create_job(request.job_id, request.model_sha256, owner)  # before the pins: it can fail
            job = _Job(request, time.monotonic_ns())
            self._jobs[request.job_id] = job
            for sha256 in part_models(request):
                self.cache.pin(sha256)
            position = waiting + (1 if self._running else 0)
            emitter = BatchEmitter(self.journal, request.job_id)
            emitter.phase("queued", job.submitted_ns, detail=f"position {position} in queue" if position else "")
            try:
                emitter.flush()
            except JournalWriteError as err:  # not a measurement: the job's run emits QUEUED again
                log.warning("job %s: queued phase not journaled: %s", request.job_id, err)
            self._queue.put(job)
        return True

    def cancel(self, job_id: str) -> str:
        with self._lock:
            job = self._jobs.get(job_id)
            waiting = job is not None and not job.started
            if job is not None:
                job.cancelled.set()
            if waiting:
                self._jobs.pop(job_id)  # the runner skips it: it no longer holds a place in the queue
        if job is None:
            return self.journal.job(job_id).state  # raises UnknownJob
        if waiting:
            end = job_end(pb.JobEnd.CANCELLED, error="cancelled before it started", phase="queued")
            self._journal_end(job_id, BatchEmitter(self.journal, job_id), end, "cancelled")
            self._unpin(job)
            return "cancelling"
        if job.worker is not None and job.worker.poll() is None:
            job.worker.terminate()
        return "cancelling"

    def _unpin(self, job: _Job) -> None:
        for sha256 in part_models(job.request):
            self.cache.unpin(sha256)

    def _journal_end(self, job_id: str, emitter: BatchEmitter, end: pb.JobEnd, state: str) -> None:
        """Journal a job's last batch (with `end`) and its final state, retrying a journal that refuses writes.

        If it still cannot be written, the batches stay in memory (written before each later job) and the
        job is marked abandoned, so its streams end with an error instead of waiting or ending silently.
        """
        emitter.end(end)
        give_up = time.monotonic() + self.settings.journal_retry_s
        while True:
            try:
                emitter.flush()
                self.journal.set_state(job_id, state)
                return
            except JournalWriteError as err:
                if time.monotonic() >= give_up:
                    log.error("job %s ended (%s) but its end could not be journaled: %s", job_id, state, err)
                    with self._lock:
                        self._unjournaled[job_id] = (emitter, state)
                    self.journal.abandon(
                        job_id,
                        f"the agent could not write job {job_id}'s last measurements to its journal ({err});"
                        " they are kept in memory and written when the journal accepts them again",
                    )
                    return
                time.sleep(JOURNAL_RETRY_INTERVAL_S)

    def _write_unjournaled(self) -> None:
        """Retry the journal for ended jobs whose last batches it refused."""
        with self._lock:
            pending = list(self._unjournaled.items())
        for job_id, (emitter, state) in pending:
            try:
                emitter.flush()
                self.journal.set_state(job_id, state)
            except JournalWriteError:
                return
            with self._lock:
                self._unjournaled.pop(job_id, None)

    def shutdown(self) -> None:
        self._stopping = True
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self.cancel(job.request.job_id)
        self._queue.put(None)
        self._thread.join(timeout=SHUTDOWN_WAIT_S)
        self._discard_spare()

    def take_worker(self, job_id: str, spec_line: str) -> tuple[subprocess.Popen[bytes], bool]:
        """A worker that has received the job's spec: the warm one if it takes it, else a cold start.

        Returns (worker, warm). The warm worker counts as alive only once the spec is written to it: poll()
        can miss a death (it answers None while another thread waits on the process), a closed pipe cannot.
        """
        log_path = self.work_dir / f"{job_id}.log"
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None and _send(spare, spec_line):
            os.replace(self._spare_log_path, log_path)  # its stderr becomes the job's log
            return spare, True
        if spare is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spare.wait(timeout=5)
            log.warning("the warm worker had exited (%s); starting a cold one", _exit_text(spare.returncode))
        worker = _spawn_worker(log_path, preload=False)
        _send(worker, spec_line)
        return worker, False

    @property
    def _spare_log_path(self) -> Path:
        return self.work_dir / "warm-worker.log"

    def _next_job(self) -> _Job | None:
        """The next job from the queue; with warm_worker, the spare is started once the board is idle."""
        while self._unjournaled:  # while idle, keep offering kept batches to the journal
            try:
                return self._queue.get(timeout=JOURNAL_RETRY_IDLE_S)
            except queue.Empty:
                self._write_unjournaled()
        if not self.settings.warm_worker:
            return self._queue.get()
        try:
            return self._queue.get(timeout=WARM_WORKER_DELAY_S)
        except queue.Empty:
            self._ensure_spare()
            return self._queue.get()

    def _ensure_spare(self) -> None:
        with self._spare_lock:
            if self._spare is not None and self._spare.poll() is None:
                return
            self._spare = _spawn_worker(self._spare_log_path, preload=True)

    def _discard_spare(self) -> None:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return
        with contextlib.suppress(OSError):
            assert spare.stdin is not None
            spare.stdin.close()  # end of input: a waiting warm worker exits by itself
        try:
            spare.wait(timeout=3)
        except subprocess.TimeoutExpired:
            _kill(spare)
        if spare.stdout is not None:
            spare.stdout.close()
        self._spare_log_path.unlink(missing_ok=True)

    def _loop(self) -> None:
        try:
            while True:
                job = self._next_job()
                if job is None:
                    return
                with self._lock:
                    if job.cancelled.is_set() and not job.started:
                        continue  # cancelled while queued: cancel() has ended it
                    job.started = True
                    self._running = job
                self._run_one(job)
        finally:
            if not self._stopping:
                with self._lock:
                    self._died = True
                    stranded = list(self._jobs)
                log.critical("the job runner stopped unexpectedly; jobs cannot run until the agent restarts")
                for job_id in stranded:  # their streams end with the reason instead of waiting forever
                    self.journal.abandon(job_id, "the agent's job runner stopped: restart the agent")
                for listener in self._death_listeners:
                    listener()

    def _run_one(self, job: _Job) -> None:
        """Run one job; whatever it raises ends that job as an error and never the runner."""
        job_id = job.request.job_id
        execution: _JobExecution | None = None
        try:
            self._write_unjournaled()
            execution = _JobExecution(self, job)
            execution.run()
        except Exception as err:
            log.exception("job %s failed unexpectedly", job_id)
            emitter = execution.emitter if execution is not None else BatchEmitter(self.journal, job_id)
            end = job_end(
                pb.JobEnd.ERROR,
                error=f"the agent failed while running this job: {type(err).__name__}: {err}"[:2000],
                kind="journal" if isinstance(err, JournalWriteError) else "internal",
                phase=execution.phase if execution is not None else "prepare",
            )
            with contextlib.suppress(Exception):  # _journal_end handles journal errors; nothing may escape
                self._journal_end(job_id, emitter, end, "error")
        finally:
            with self._lock:
                self._running = None
                self._jobs.pop(job_id, None)
            self._unpin(job)


class _JobExecution:
    """One job from PREPARE to FINISH; see DESIGN.md §2 for the protocol."""

    def __init__(self, runner: JobRunner, job: _Job) -> None:
        self.runner = runner
        self.job = job
        self.req = job.request
        self.settings = runner.settings
        self.emitter = BatchEmitter(runner.journal, self.req.job_id)
        self.info_ready = threading.Event()
        self.end_event: dict[str, Any] | None = None
        self.error_event: dict[str, Any] | None = None
        self.phase = "prepare"
        self.measured = 0
        self.extended = ""
        self.part = Part(0, self.req.model_sha256, self.req.model_format)
        self.model_dir: Path | None = None

    def run(self) -> None:
        req, job = self.req, self.job
        journal = self.runner.journal
        now = time.monotonic_ns()
        self.emitter.phase("queued", job.submitted_ns, now)
        if job.cancelled.is_set():
            self._finish(job_end(pb.JobEnd.CANCELLED, error="cancelled before it started", phase="queued"))
            return
        try:
            journal.set_state(req.job_id, "running")
        except JournalWriteError as err:  # the final state is retried in _finish; the job can still run
            log.warning("job %s: 'running' state not journaled: %s", req.job_id, err)
        timeout_s = req.timeout_s or self.settings.default_timeout_s
        deadline = time.monotonic() + timeout_s
        parts = job_parts(req)
        ends: list[pb.JobEnd] = []
        for part in parts:  # agent/parts.py: each part in a fresh worker, no other job in between
            self._begin_part(part)
            ends.append(self._run_part(deadline))
            if ends[-1].status != pb.JobEnd.OK:
                break
        self._finish(combine_ends(ends, len(parts), multi_part=bool(req.parts)))

    def _begin_part(self, part: Part) -> None:
        self.part = part
        self.emitter.part = part.index
        self.info_ready = threading.Event()
        self.end_event = None
        self.error_event = None
        self.phase = "prepare"
        self.measured = 0
        self.extended = ""

    def _run_part(self, deadline: float) -> pb.JobEnd:
        """One worker from PREPARE to its exit; returns how it ended."""
        if self.settings.backend is not None:
            return self.settings.backend.run_part(self, deadline)
        req = self.req
        now = time.monotonic_ns()
        self.emitter.phase("prepare", now)
        self._flush()
        self.model_dir = None
        if self.part.model_format == "genai":  # a tar in the cache, unpacked once (agent/genai_unpack.py)
            try:
                self.model_dir = self.runner.cache.unpacked(self.part.model_sha256)
            except AgentError as err:
                return job_end(pb.JobEnd.ERROR, error=str(err), kind=err.kind, phase="prepare")
        worker, warm = self._start_worker()
        sensors = list(self.settings.sensors)
        if self.settings.memory_sensor is not None:
            sensors.append(self.settings.memory_sensor(worker.pid))
        if self.settings.contention_sensor is not None:
            try:
                sensors.append(self.settings.contention_sensor(worker.pid))
            except SensorError as err:  # no psutil, or the worker already gone: measure without it
                log.warning("cpu contention not sampled: %s", err)
        sampler = Sampler(sensors, req.sample_rate_hz or self.settings.sample_rate_hz)
        sampler.start()
        stop_flusher = threading.Event()
        flusher = threading.Thread(target=self._flush_loop, args=(sampler, stop_flusher), daemon=True)
        flusher.start()
        reader = threading.Thread(target=self._read_worker, args=(worker,), daemon=True)
        reader.start()
        outcome = "ok"
        try:
            if not self._wait(lambda: self.info_ready.is_set() or worker.poll() is not None, deadline):
                outcome = self._interrupted()
            elif self.info_ready.is_set() and self.error_event is None:
                self.emitter.phase("prepare", now, time.monotonic_ns(), detail="warm worker" if warm else "")
                if not self._settle(deadline) or not self._idle(req.idle_s, deadline):
                    outcome = self._interrupted()
                else:
                    self._send(worker, self._go_command(sampler))
                    if not self._wait_exit(worker, deadline):
                        outcome = self._interrupted()
        finally:
            if worker.poll() is None:
                self._send(worker, "stop\n")
                _kill(worker)
            reader.join(timeout=5)
            stop_flusher.set()
            flusher.join(timeout=5)
            self.emitter.series(sampler.stop())
        return self._outcome(worker, outcome, sampler)

    # -- steps -------------------------------------------------------------------------------------

    def _start_worker(self) -> tuple[subprocess.Popen[bytes], bool]:
        req = self.req
        model_path = self.model_dir or self.runner.cache.use(self.part.model_sha256)
        spec: dict[str, Any] = {
            "model_path": str(model_path),
            "format": self.part.model_format,
            "threads": req.threads,
            "providers": list(req.execution_providers) or list(self.settings.providers),
            "input_shapes": dict(req.input_shapes),
            "runs": req.runs or DEFAULT_RUNS,
            "warmup": req.warmup,
            "min_duration_s": req.min_duration_s,
            "max_warmup_s": req.max_warmup_s or DEFAULT_MAX_WARMUP_S,
            "options": dict(req.options),
            "op_profile": req.op_profile,
            "memory_limit_mb": self.settings.worker_memory_mb,
        }
        if self.part.model_format == "genai":
            gen = req.generation
            spec["generation"] = {
                "prompt_lens": list(gen.prompt_lens),
                "gen_len": gen.gen_len,
                "prompt_text": gen.prompt_text,
            }
        if req.inputs_npz:
            npz_path = self.runner.work_dir / f"{req.job_id}.npz"
            npz_path.write_bytes(req.inputs_npz)
            spec["inputs_npz_path"] = str(npz_path)
        worker, warm = self.runner.take_worker(req.job_id, json.dumps(spec) + "\n")
        self.job.worker = worker
        return worker, warm

    def _read_worker(self, worker: subprocess.Popen[bytes]) -> None:
        assert worker.stdout is not None
        while True:
            try:
                frame = frames.read_frame(worker.stdout)
            except (ValueError, OSError):
                return
            if frame is None:
                return
            kind, payload = frame
            if kind == frames.LATENCY:
                phase, start_ns, end_ns = payload
                self.emitter.latency(phase, start_ns, end_ns)
                if phase == pb.MEASURE:
                    self.measured += len(start_ns)
                continue
            etype = payload.get("type")
            if etype == "info":
                self.emitter.info(self._job_info(payload))
                self.info_ready.set()
            elif etype == "phase":
                self.phase = payload["phase"]
                self.emitter.phase(
                    payload["phase"],
                    payload["start_ns"],
                    payload.get("end_ns", 0),
                    detail="stable"
                    if payload.get("stable")
                    else ("" if "stable" not in payload else "not stable: time cap reached"),
                    count=payload.get("count", 0),
                )
            elif etype == "tokens":
                self.emitter.tokens(payload)
            elif etype == "end":
                self.end_event = payload
            elif etype == "error":
                self.error_event = payload
                self.info_ready.set()

    def _job_info(self, event: dict[str, Any]) -> pb.JobInfo:
        info = pb.JobInfo(
            runtime=event["runtime"],
            runtime_version=event["runtime_version"],
            execution_providers=event["providers"],
            load_time_ns=event["load_time_ns"],
            load_rss_delta_bytes=event["load_rss_delta_bytes"],
            threads=event["threads"],
            profile=self.settings.profile,
            sample_rate_hz=self.req.sample_rate_hz or self.settings.sample_rate_hz,
            inputs_source=event["inputs_source"],
            worker_pid=self.job.worker.pid if self.job.worker is not None else 0,
        )
        for tensor in event["inputs"]:
            info.inputs.add(name=tensor["name"], dtype=tensor["dtype"], shape=tensor["shape"])
        for tensor in event["outputs"]:
            info.outputs.add(name=tensor["name"], dtype=tensor["dtype"], shape=tensor["shape"])
        info.device.CopyFrom(self.settings.describe())
        return info

    def _flush_loop(self, sampler: Sampler, stop: threading.Event) -> None:
        while not stop.wait(FLUSH_INTERVAL_S):
            self.emitter.series(sampler.drain())
            self._flush()

    def _flush(self) -> None:
        """Journal what is pending; a refused write keeps it pending for the next flush (the job goes on)."""
        try:
            self.emitter.flush()
        except JournalWriteError as err:
            log.warning("job %s: journal write failed, batch kept for the next flush: %s", self.req.job_id, err)

    def _go_command(self, sampler: Sampler) -> str:
        """The worker's start line: "go SECONDS" when an energy counter updates too rarely for the requested
        measure time (the window is extended to MIN_COUNTER_UPDATES of its updates: NVML, 0.1 s steps, 5 s)."""
        self.extended = ""
        need = sampler.counter_window_s(MIN_COUNTER_UPDATES)
        if need is None or need[0] <= self.req.min_duration_s:
            return "go\n"
        self.extended = (
            f"min duration {self.req.min_duration_s:g} s raised to {need[0]:.2f} s, {MIN_COUNTER_UPDATES} updates:"
            f" {need[1]}"
        )
        return f"go {need[0]:.3f}\n"

    def _measurement_notes(self) -> dict[str, str]:
        """What the host needs to judge the measurement: window extension, the lowest trip temperature."""
        notes = {"measure_extended": self.extended} if self.extended else {}
        trips = [t for s in self.settings.sensors if (t := getattr(s, "trip_temp_c", None)) is not None]
        if trips:
            notes["trip_temp_c"] = f"{min(trips):.1f}"
        return notes

    def _settle(self, deadline: float) -> bool:
        """Wait for the board to cool below the profile's temperature, or the request's timeout."""
        limit_c = self.settings.settle_temp_c
        timeout_s = self.req.settle_timeout_s or self.settings.settle_timeout_s
        if limit_c is None or timeout_s <= 0:
            return True
        thermal = [s for s in self.settings.sensors if any(ch.kind == TEMP_C for ch in s.channels())]
        if not thermal:
            return True
        start = time.monotonic_ns()
        self.phase = "settle"
        end_by = min(deadline, time.monotonic() + timeout_s)
        temp_c = _max_temp_c(thermal)
        while temp_c is not None and temp_c > limit_c and time.monotonic() < end_by:
            if self.job.cancelled.wait(1.0):
                return False
            temp_c = _max_temp_c(thermal)
        settled = temp_c is None or temp_c <= limit_c
        shown = "unknown" if temp_c is None else f"{temp_c:.1f} C"
        detail = (
            f"settled at {shown}"
            if settled
            else f"not settled: {shown} after {timeout_s:.0f} s (limit {limit_c:.1f} C)"
        )
        self.emitter.phase("settle", start, time.monotonic_ns(), detail=detail)
        return True

    def _idle(self, idle_s: float, deadline: float) -> bool:
        if idle_s <= 0:
            return True
        start = time.monotonic_ns()
        if not any(ch.kind in (POWER_MW, ENERGY_UJ) for s in self.settings.sensors for ch in s.channels()):
            # An idle baseline is only worth its seconds when there is power to measure.
            self.emitter.phase("idle", start, start, detail="skipped: no power sensor")
            return True
        self.phase = "idle"
        if self.job.cancelled.wait(min(idle_s, max(0.0, deadline - time.monotonic()))):
            return False
        self.emitter.phase("idle", start, time.monotonic_ns())
        return time.monotonic() < deadline

    def _wait(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait until `done()`; False on cancel or timeout."""
        while not done():
            if self.job.cancelled.is_set() or time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _wait_exit(self, worker: subprocess.Popen[bytes], deadline: float) -> bool:
        """Block until the worker exits (no polling while it measures); False on cancel or timeout.

        A cancel terminates the worker, which ends the wait at once; the timeout is checked every 0.5 s.
        """
        while True:
            try:
                worker.wait(timeout=0.5)
                return not self.job.cancelled.is_set()
            except subprocess.TimeoutExpired:
                if self.job.cancelled.is_set() or time.monotonic() >= deadline:
                    return False

    def _interrupted(self) -> str:
        return "cancelled" if self.job.cancelled.is_set() else "timeout"

    def _outcome(self, worker: subprocess.Popen[bytes], outcome: str, sampler: Sampler) -> pb.JobEnd:
        where = f"during {self.phase} after {self.measured} measured inferences"
        if self.job.cancelled.is_set():
            # Checked first: the worker may have exited from the cancel's SIGTERM before the job noticed.
            outcome = "cancelled"
        notes = {"sampler_problems": "; ".join(sampler.problems())} if sampler.problems() else {}
        notes.update(self._measurement_notes())
        if outcome == "cancelled":
            return job_end(
                pb.JobEnd.CANCELLED, error=f"cancelled {where}", phase=self.phase, measured=self.measured, notes=notes
            )
        if outcome == "timeout":
            timeout_s = self.req.timeout_s or self.settings.default_timeout_s
            return job_end(
                pb.JobEnd.ERROR,
                error=f"job timed out after {timeout_s:g} s {where}",
                kind="timeout",
                phase=self.phase,
                measured=self.measured,
                notes=notes,
            )
        if self.error_event is not None:
            ev = self.error_event
            kind, message = _error_kind(ev["kind"], ev["message"])
            return job_end(
                pb.JobEnd.ERROR,
                error=message,
                kind=kind,
                phase=ev["phase"],
                measured=self.measured,
                notes=notes,
            )
        if self.end_event is None or worker.returncode != 0:
            return job_end(
                pb.JobEnd.ERROR,
                error=_exit_text(worker.returncode) + " " + where,
                kind="crash",
                phase=self.phase,
                measured=self.measured,
                notes=notes,
            )
        ev = self.end_event
        notes["warmup_stable"] = "true" if ev.get("warmup_stable") else "false"
        return job_end(
            pb.JobEnd.OK,
            measured=ev["measured"],
            warmup=ev["warmup"],
            first_inference_ns=ev["first_inference_ns"],
            peak_rss_bytes=ev["peak_rss_bytes"],
            op_by_type=ev["op_by_type"],
            op_top_nodes=ev["op_top_nodes"],
            notes=notes,
        )

    def _finish(self, end: pb.JobEnd) -> None:
        finish_ns = time.monotonic_ns()
        self.emitter.phase("finish", finish_ns, finish_ns)
        state = {pb.JobEnd.OK: "ok", pb.JobEnd.CANCELLED: "cancelled"}.get(end.status, "error")
        # Scratch files go before the end is journaled: a job seen as ended has left nothing behind.
        for suffix in (".npz", ".log"):
            path = self.runner.work_dir / f"{self.req.job_id}{suffix}"
            if suffix == ".log" and state == "error":
                continue  # keep the worker's stderr of a failed job for diagnosis
            path.unlink(missing_ok=True)
        self.runner._journal_end(self.req.job_id, self.emitter, end, state)

    @staticmethod
    def _send(worker: subprocess.Popen[bytes], line: str) -> None:
        _send(worker, line)  # the worker is gone when it fails: its exit status tells why


def _send(worker: subprocess.Popen[bytes], line: str) -> bool:
    """Write one line to a worker's input; False when the worker is gone (its pipe is closed)."""
    try:
        assert worker.stdin is not None
        worker.stdin.write(line.encode())
        worker.stdin.flush()
    except (BrokenPipeError, OSError):
        return False
    return True


def _spawn_worker(log_path: Path, *, preload: bool) -> subprocess.Popen[bytes]:
    """Start `python -m agent.worker`, its stderr to log_path; it waits for a spec line on stdin."""
    with open(log_path, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.worker", *(["--preload"] if preload else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # a signal meant for the agent's terminal does not hit the worker
        )


def _error_kind(kind: str, message: str) -> tuple[str, str]:
    """A worker's error as (kind, message): a failed allocation is out of memory, whatever raised it.

    ONNX Runtime reports "Failed to allocate memory" from inside a run, which the backend wraps as the model
    rejecting its inputs (invalid_input), and Python's MemoryError reached the agent as a crash.
    """
    if kind == "out_of_memory" or _ALLOCATION_FAILED.search(message):
        if not message.lower().startswith("out of memory"):
            message = f"out of memory: {message}"
        return "out_of_memory", message
    return kind, message


def _max_temp_c(sensors: Sequence[Sensor]) -> float | None:
    temps: list[float] = []
    for sensor in sensors:
        try:
            values = sensor.read()
        except Exception:  # a flaky zone must not stall the job
            continue
        temps.extend(v for ch, v in zip(sensor.channels(), values, strict=False) if ch.kind == TEMP_C)
    return max(temps) if temps else None


def _kill(worker: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(worker.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        worker.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=5)


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "the worker did not exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory, or killed)" if name == "SIGKILL" else ""
        return f"the worker was killed by {name}{hint}"
    return f"the worker exited with code {returncode} without finishing"
