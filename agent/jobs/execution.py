"""One job's execution, PREPARE to FINISH: its worker's I/O, the settle/idle/measure phases, its outcome."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.device.sampler import MIN_COUNTER_UPDATES, Sampler
from agent.errors import AgentError, SensorError
from agent.jobs import settle
from agent.jobs.job import Job, RunnerContext
from agent.jobs.memory_limit import MemoryWatch
from agent.jobs.parts import Part, combine_ends, job_parts
from agent.jobs.worker_process import exit_text, kill_worker, send_line
from agent.measure import frames
from agent.runtimes import GENERATIVE_FORMATS
from agent.sensors.base import ENERGY_UJ, POWER_MW, TEMP_C, Sensor
from agent.storage.batches import BatchEmitter, job_end
from agent.storage.journal import JournalWriteError
from protos import agent_pb2 as pb

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.1
#: Measured inferences when a request leaves runs at 0.
DEFAULT_RUNS = 100
#: The longest warmup when a request leaves max_warmup_s at 0: warmup ends there, stable or not.
DEFAULT_MAX_WARMUP_S = 30.0
#: What a worker's error says when an allocation failed (Python, ONNX Runtime, TFLite, the C++ runtime).
_ALLOCATION_FAILED = re.compile(
    r"out of memory|MemoryError|Failed to allocate|bad_alloc|Cannot allocate memory|ENOMEM", re.IGNORECASE
)


class JobExecution:
    """One job from PREPARE to FINISH; see DESIGN.md §2 for the protocol."""

    def __init__(self, runner: RunnerContext, job: Job) -> None:
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
        self.prepare_detail = ""
        #: The rule that ended this part's settle wait (agent/jobs/settle.py), "" when there was none.
        self.settle_rule = ""
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
        board = self.settings.board_state  # a Jetson's power mode and clocks (agent/device/jetson_state.py)
        ready = True
        if board is not None:
            try:
                board.begin()
            except AgentError as err:  # the board could not be put in the state the job asks for
                ends.append(job_end(pb.JobEnd.ERROR, error=str(err), kind=err.kind, phase="prepare"))
                ready = False
        # Only the board's state is this job's error here: anything the parts raise (a model gone from the
        # cache, a broken backend) is the runner's to report as an internal failure.
        try:
            for part in parts if ready else ():  # agent/jobs/parts.py: each part in a fresh worker, none in between
                self._begin_part(part)
                ends.append(self._run_part(deadline))
                if ends[-1].status != pb.JobEnd.OK:
                    break
        except BaseException:
            if board is not None:  # the board's own power mode comes back whatever failed
                with contextlib.suppress(Exception):
                    board.end()
            raise
        end = combine_ends(ends, len(parts), multi_part=bool(req.parts))
        if board is not None:
            end.notes.update(board.end())
        self._finish(end)

    def _begin_part(self, part: Part) -> None:
        self.part = part
        self.emitter.part = part.index
        self.info_ready = threading.Event()
        self.end_event = None
        self.error_event = None
        self.phase = "prepare"
        self.measured = 0
        self.extended = ""
        self.settle_rule = ""

    def _run_part(self, deadline: float) -> pb.JobEnd:
        """One worker from PREPARE to its exit; returns how it ended."""
        if self.settings.backend is not None:
            return self.settings.backend.run_part(self, deadline)
        req = self.req
        now = time.monotonic_ns()
        self.emitter.phase("prepare", now)
        self._flush()
        self.model_dir = None
        if self.part.model_format == "genai":  # a tar in the cache, unpacked once (agent/storage/genai_unpack.py)
            try:
                self.model_dir = self.runner.cache.unpacked(self.part.model_sha256)
            except AgentError as err:
                return job_end(pb.JobEnd.ERROR, error=str(err), kind=err.kind, phase="prepare")
        worker, warm = self._start_worker()
        limit_mb = self.settings.worker_memory_mb
        watch = MemoryWatch(worker.pid, limit_mb).start() if limit_mb else None
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
                detail = "; ".join(d for d in ("warm worker" if warm else "", self.prepare_detail) if d)
                self.emitter.phase("prepare", now, time.monotonic_ns(), detail=detail)
                if not self._settle(deadline) or not self._idle(req.idle_s, deadline):
                    outcome = self._interrupted()
                else:
                    self._send(worker, self._go_command(sampler))
                    if not self._wait_exit(worker, deadline):
                        outcome = self._interrupted()
        finally:
            if watch is not None:
                watch.stop()
            if worker.poll() is None:
                self._send(worker, "stop\n")
                kill_worker(worker)
            reader.join(timeout=5)
            stop_flusher.set()
            flusher.join(timeout=5)
            self.emitter.series(sampler.stop())
        if watch is not None and watch.tripped_bytes is not None and not self.job.cancelled.is_set():
            return self._over_memory(watch, sampler)
        return self._outcome(worker, outcome, sampler)

    # -- steps -------------------------------------------------------------------------------------

    def _start_worker(self) -> tuple[subprocess.Popen[bytes], bool]:
        req = self.req
        model_path = self.model_dir or self.runner.cache.use(self.part.model_sha256)
        generative = self.part.model_format in GENERATIVE_FORMATS
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
            # The board's runtime options are for its ONNX models (TensorRT): a generative model keeps its own runtime.
            "options": {**({} if generative else self.settings.runtime_options), **req.options},
            "engine_dir": str(self.runner.work_dir.parent / "engines"),
            "op_profile": req.op_profile,
        }
        if generative:
            gen = req.generation
            spec["generation"] = {
                "prompt_lens": list(gen.prompt_lens),
                "gen_len": gen.gen_len,
                "prompt_text": gen.prompt_text,
            }
        if self.part.model_format == "gguf" and self.settings.llama_bench:
            spec["llama_bench"] = self.settings.llama_bench
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
                self.prepare_detail = str(payload.get("prepare_detail") or "")
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
        """What the host needs to judge the measurement: window extension, the lowest trip temperature, and the
        rule that ended the settle wait."""
        notes = {"measure_extended": self.extended} if self.extended else {}
        trip_c = self._trip_temp_c()
        if trip_c is not None:
            notes["trip_temp_c"] = f"{trip_c:.1f}"
        if self.settle_rule:
            notes["settle"] = self.settle_rule
        return notes

    def _trip_temp_c(self) -> float | None:
        """The lowest temperature at which the board throttles (zones' trip points, else the profile's max)."""
        trips = [t for s in self.settings.sensors if (t := getattr(s, "trip_temp_c", None)) is not None]
        return min(trips) if trips else None

    def _settle(self, deadline: float) -> bool:
        """Wait until the board is cool or no longer cooling, or the timeout (agent/jobs/settle.py); False on cancel."""
        limit_c = self.settings.settle_temp_c
        timeout_s = self.req.settle_timeout_s or self.settings.settle_timeout_s
        if limit_c is None or timeout_s <= 0:
            return True
        thermal = [s for s in self.settings.sensors if any(ch.kind == TEMP_C for ch in s.channels())]
        if not thermal:
            return True
        start = time.monotonic_ns()
        self.phase = "settle"
        plan = settle.SettlePlan(limit_c, timeout_s, hot_limit_c=self._trip_temp_c())
        end_by = min(deadline, time.monotonic() + timeout_s)
        outcome = settle.wait(plan, lambda: _max_temp_c(thermal), self.job.cancelled, end_by)
        if outcome is None:
            return False
        self.settle_rule = outcome.rule
        self.emitter.phase("settle", start, time.monotonic_ns(), detail=outcome.detail)
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

    def _over_memory(self, watch: MemoryWatch, sampler: Sampler) -> pb.JobEnd:
        """The worker the memory watch killed: one line, what it reached and the limit, in its phase."""
        notes = {"sampler_problems": "; ".join(sampler.problems())} if sampler.problems() else {}
        err = watch.error(self.phase)
        return job_end(
            pb.JobEnd.ERROR, error=str(err), kind=err.kind, phase=self.phase, measured=self.measured, notes=notes
        )

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
                error=exit_text(worker.returncode) + " " + where,
                kind="crash",
                phase=self.phase,
                measured=self.measured,
                notes=notes,
            )
        ev = self.end_event
        notes = {**{str(k): str(v) for k, v in (ev.get("notes") or {}).items()}, **notes}  # the runtime's own
        notes["warmup_stable"] = "true" if ev.get("warmup_stable") else "false"
        if ev.get("op_profile_note"):
            notes["op_profile"] = ev["op_profile_note"]
        trace = base64.b64decode(ev["op_trace_gz_b64"]) if ev.get("op_trace_gz_b64") else b""
        return job_end(
            pb.JobEnd.OK,
            measured=ev["measured"],
            warmup=ev["warmup"],
            first_inference_ns=ev["first_inference_ns"],
            peak_rss_bytes=ev["peak_rss_bytes"],
            op_by_type=ev["op_by_type"],
            op_top_nodes=ev["op_top_nodes"],
            op_trace_gz=trace,
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
        self.runner.journal_end(self.req.job_id, self.emitter, end, state)

    @staticmethod
    def _send(worker: subprocess.Popen[bytes], line: str) -> None:
        send_line(worker, line)  # the worker is gone when it fails: its exit status tells why


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
