"""`agent serve --warm-worker`: a worker with the runtimes imported waits for the next job.

Real agent processes, real workers, real signals: a job takes the waiting worker; a dead warm worker
costs a cold start, not a failed job; the warm worker never outlives its agent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from faultlib import AgentProc, profile_request, upload, wait_for

from protos import agent_pb2 as pb


def _waiting_worker(agent: AgentProc) -> psutil.Process | None:
    """The agent's `--preload` worker once its imports are done and it blocks reading a job spec."""
    for worker in agent.workers():
        with contextlib.suppress(psutil.NoSuchProcess, OSError):
            wchan = Path(f"/proc/{worker.pid}/wchan").read_text()
            if "--preload" in worker.cmdline() and "pipe_read" in wchan:
                return worker
    return None


def _run_job(agent: AgentProc, sha: str, timeout_s: float = 180) -> tuple[pb.JobEnd, pb.PhaseEvent]:
    """Run a short job; wait for the agent to report it ended (polled), not for a fixed stream deadline.

    A cold start on a loaded 2-core machine can take tens of seconds: a 60 s deadline on the whole stream
    used to fail the test while the job was still queued or preparing.
    """
    client = agent.client()
    request = profile_request(sha, runs=5, warmup=1)
    stream = client.profile(request, timeout_s=timeout_s + 60)
    try:
        batches = [next(stream)]  # the job is queued once its first batch (QUEUED) arrives
        state = ""

        def ended() -> bool:
            nonlocal state
            state = client.job_state(request.job_id, timeout_s=10) or ""
            return state in ("ok", "error", "cancelled")

        try:
            wait_for(ended, timeout_s, f"job {request.job_id} to end", poll_s=0.2)
        except AssertionError as err:
            raise AssertionError(f"{err}; its last state was {state!r}") from None
        batches += list(stream)  # the job has ended: the rest of its batches are in the journal
    finally:
        stream.cancel()
        client.close()
    prepare = [p for b in batches for p in b.phases if p.phase == pb.PREPARE and p.end_ns]
    ends = [b.end for b in batches if b.HasField("end")]
    assert ends and prepare, batches
    return ends[-1], prepare[-1]


@pytest.fixture
def agent(tmp_path) -> Iterator[AgentProc]:  # type: ignore[no-untyped-def]
    proc = AgentProc(tmp_path, "--warm-worker").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_job_takes_the_waiting_worker_and_a_new_one_waits_after_it(agent: AgentProc) -> None:
    client = agent.client()
    sha = upload(client)
    client.close()
    first = wait_for(lambda: _waiting_worker(agent), 30, "a warm worker waiting for a job")

    end, prepare = _run_job(agent, sha)

    assert end.status == pb.JobEnd.OK and end.measured >= 5, end
    assert prepare.detail == "warm worker"
    assert not psutil.pid_exists(first.pid) or first.status() == psutil.STATUS_ZOMBIE  # it ran the job and exited
    second = wait_for(lambda: _waiting_worker(agent), 30, "a new warm worker after the job")
    assert second.pid != first.pid


def test_dead_warm_worker_means_a_cold_start_not_a_failed_job(agent: AgentProc) -> None:
    client = agent.client()
    sha = upload(client)
    client.close()
    warm = wait_for(lambda: _waiting_worker(agent), 30, "a warm worker waiting for a job")
    warm.kill()
    wait_for(lambda: not warm.is_running() or warm.status() == psutil.STATUS_ZOMBIE, 10, "the warm worker to die")

    end, prepare = _run_job(agent, sha)

    assert end.status == pb.JobEnd.OK and end.measured >= 5, end
    assert prepare.detail == ""  # the job started its own worker
    # Reaped by then, or (on a busy machine) its threads still tearing down: either way a cold start.
    log = agent.log_path.read_text()
    assert "warm worker had exited (the worker was killed by SIGKILL" in log or "(it was exiting)" in log, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_warm_worker_does_not_outlive_its_agent(agent: AgentProc, sig: int) -> None:
    warm = wait_for(lambda: _waiting_worker(agent), 30, "a warm worker waiting for a job")

    agent.kill(sig)

    # SIGTERM: the agent closes the worker's input on shutdown; SIGKILL: the kernel closes it. Either
    # way the worker reads end of input and exits by itself (it runs in its own session).
    wait_for(
        lambda: not psutil.pid_exists(warm.pid) or warm.status() == psutil.STATUS_ZOMBIE,
        15,
        "the warm worker to exit after its agent",
    )
    if sig == signal.SIGTERM:
        assert not (agent.data_dir / "jobs" / "warm-worker.log").exists()


#: A process whose main thread has exited while another thread lives on: its main thread is a zombie, as a
#: killed multithreaded worker's is while its other threads tear down; waitpid() reports nothing and its stdin
#: pipe stays open (pthread_exit from the main thread, through ctypes).
_DYING = (
    "import ctypes, sys, threading, time\n"
    "threading.Thread(target=time.sleep, args=(60,)).start()\n"
    "ctypes.CDLL(None).pthread_exit(None)\n"
)


def test_a_warm_worker_whose_main_thread_is_a_zombie_is_not_given_the_job(tmp_path: Path) -> None:
    from agent.jobs import job as job_data
    from agent.jobs import runner as job_runner
    from agent.jobs.worker_process import kill_worker, send_line
    from agent.storage.journal import Journal
    from agent.storage.model_cache import ModelCache

    dying = subprocess.Popen([sys.executable, "-c", _DYING], stdin=subprocess.PIPE, start_new_session=True)
    journal = Journal(tmp_path / "journal.db")
    runner = job_runner.JobRunner(journal, ModelCache(tmp_path / "models"), job_data.JobSettings(), tmp_path / "jobs")
    worker = None
    try:
        wait_for(lambda: psutil.Process(dying.pid).status() == psutil.STATUS_ZOMBIE, 30, "the main thread to exit")
        # What fooled the runner: the process still "runs" and its pipe takes a line.
        assert dying.poll() is None and send_line(dying, "\n")
        runner._spare = dying  # the warm worker the runner started, dying as a job arrives

        worker, warm = runner.take_worker("f" * 32, '{"job": "spec"}\n')

        assert not warm and worker.pid != dying.pid  # a cold start, the spec written to it
        assert dying.poll() is None  # still "tearing down": the runner did not wait for it to finish
    finally:
        os.killpg(dying.pid, signal.SIGKILL)
        dying.wait(timeout=10)
        if worker is not None:
            kill_worker(worker)
        runner.shutdown()
        journal.close()
