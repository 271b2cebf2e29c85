"""The job runner: a bounded queue, one job at a time per board, each in a worker subprocess.

Measurements never overlap: a second Profile waits in the queue (its stream reports the QUEUED phase
with its position) and is refused with RESOURCE_EXHAUSTED only when the queue is full.

With `warm_worker` the runner keeps one worker started ahead of the next job, its runtimes already
imported (see agent/inference/worker.py). It is started once the board has been idle for WARM_WORKER_DELAY_S, so its
start never overlaps a measurement; a job takes it if it is alive and starts a cold one if not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.errors import Busy
from agent.jobs.execution import JobExecution
from agent.jobs.job import Job, JobSettings, RunnerStopped
from agent.jobs.parts import part_models
from agent.jobs.validation import validate
from agent.jobs.worker_process import exit_text, is_exiting, kill_worker, send_line, spawn_worker
from agent.storage.batches import BatchEmitter, job_end
from agent.storage.journal import Journal, JournalWriteError
from agent.storage.model_cache import ModelCache
from protos import agent_pb2 as pb

log = logging.getLogger(__name__)

#: Idle time before the warm worker is started: not while the host still reads the last job's stream
#: or sends the next job at once (a job that arrives meanwhile starts its own worker).
WARM_WORKER_DELAY_S = 1.0
#: Pause between attempts to write a job's end to a journal that refused a write (e.g. disk full).
JOURNAL_RETRY_INTERVAL_S = 0.2
#: How often an idle runner retries writing the batches of ended jobs that the journal refused.
JOURNAL_RETRY_IDLE_S = 1.0
#: How long shutdown waits for the runner's thread (a job stuck in a backend must not hang the agent's exit).
SHUTDOWN_WAIT_S = 10.0


class JobRunner:
    def __init__(self, journal: Journal, cache: ModelCache, settings: JobSettings, work_dir: Path) -> None:
        self.journal = journal
        self.cache = cache
        self.settings = settings
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._running: Job | None = None
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
        """Queue a job owned by `owner` (agent/service/ownership.py). False when the id exists (caller re-attaches)."""
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
            job = Job(request, time.monotonic_ns())
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
            self.journal_end(job_id, BatchEmitter(self.journal, job_id), end, "cancelled")
            self._unpin(job)
            return "cancelling"
        if job.worker is not None and job.worker.poll() is None:
            job.worker.terminate()
        return "cancelling"

    def _unpin(self, job: Job) -> None:
        for sha256 in part_models(job.request):
            self.cache.unpin(sha256)

    def journal_end(self, job_id: str, emitter: BatchEmitter, end: pb.JobEnd, state: str) -> None:
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

        Returns (worker, warm). The warm worker counts as alive only when poll() says so, its main thread is not
        a zombie (a killed worker's other threads may still hold its pipes open while it tears down: poll() and
        the pipe both miss that death) and the spec is written to it (poll() answers None while another thread
        waits on the process; a closed pipe cannot).
        """
        log_path = self.work_dir / f"{job_id}.log"
        with self._spare_lock:
            spare, self._spare = self._spare, None
        alive = spare is not None and spare.poll() is None and not is_exiting(spare.pid)
        if spare is not None and alive and send_line(spare, spec_line):
            os.replace(self._spare_log_path, log_path)  # its stderr becomes the job's log
            return spare, True
        if spare is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spare.wait(timeout=2)  # a killed worker's threads may still be tearing down: not worth the job's wait
            why = exit_text(spare.returncode) if spare.returncode is not None else "it was exiting"
            log.warning("the warm worker had exited (%s); starting a cold one", why)
        worker = spawn_worker(log_path, preload=False)
        send_line(worker, spec_line)
        return worker, False

    @property
    def _spare_log_path(self) -> Path:
        return self.work_dir / "warm-worker.log"

    def _next_job(self) -> Job | None:
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
            self._spare = spawn_worker(self._spare_log_path, preload=True)

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
            kill_worker(spare)
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

    def _run_one(self, job: Job) -> None:
        """Run one job; whatever it raises ends that job as an error and never the runner."""
        job_id = job.request.job_id
        execution: JobExecution | None = None
        try:
            self._write_unjournaled()
            execution = JobExecution(self, job)
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
                self.journal_end(job_id, emitter, end, "error")
        finally:
            with self._lock:
                self._running = None
                self._jobs.pop(job_id, None)
            self._unpin(job)
