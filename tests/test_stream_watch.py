"""The stall watchdog on a job's stream: silence while a job runs ends the wait; silence while queued does not.

Keepalive cannot see these: the connection is healthy, only the stream carries nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_agent import FakeAgentServer, job_batches
from faultlib import AgentProc, profile_request, upload, wait_for
from grpc_health.v1 import health_pb2

from host.fleet.client import AgentClient, Credentials
from host.run import profiling
from host.run.collect import JobCollector
from host.run.fetch import fetch_runs
from host.run.profiling import STALL_S, DeviceFailed, ProfileSettings, stall_bound_s, stream_job
from host.store.open import open_store
from host.store.sqlite import PendingJob
from protos import agent_pb2 as pb

#: Far beyond every bound these tests set: reaching it means stream_job waited without one.
_HANG_S = 90.0


def _follow(client: AgentClient, request: pb.ProfileRequest, **kwargs: float) -> tuple[JobCollector, Exception | None]:
    """stream_job in a thread, so that a host that hangs fails the test instead of hanging it."""
    collector = JobCollector("board")
    failure: list[Exception] = []

    def follow() -> None:
        try:
            stream_job(client, request, collector, lambda _c: None, **kwargs)  # type: ignore[arg-type]
        except Exception as err:
            failure.append(err)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    thread.join(_HANG_S)
    assert not thread.is_alive(), f"stream_job still waiting after {_HANG_S:g} s: it waits without a bound"
    return collector, failure[0] if failure else None


def test_stream_that_goes_silent_while_the_job_runs_is_given_up_within_the_budget() -> None:
    release = threading.Event()

    def silent_after_three(job_id: str) -> Iterator[pb.MeasurementBatch]:
        yield from job_batches(job_id, [1, 2, 3], end=False)
        release.wait(_HANG_S + 10)  # connected, answering pings, sending nothing

    fake = FakeAgentServer(silent_after_three)
    try:
        with AgentClient(fake.address) as client:
            request = profile_request("ab" * 32)
            collector, failure = _follow(client, request, reconnect_s=1.0, stall_s=1.0)
    finally:
        release.set()
        fake.stop()

    assert isinstance(failure, DeviceFailed), failure
    assert "no data from the agent for 1 s" in str(failure) and "host runs fetch" in str(failure)
    assert collector.last_seq == 3 and not collector.finished
    assert fake.servicer.attaches and set(fake.servicer.attaches) == {3}


def test_job_queued_on_an_agent_that_stopped_serving_is_given_up() -> None:
    release = threading.Event()

    def queued_then_silent(job_id: str) -> Iterator[pb.MeasurementBatch]:
        batch = pb.MeasurementBatch(job_id=job_id, seq=1)
        batch.phases.add(phase=pb.QUEUED, start_ns=1, detail="position 1 in queue")
        yield batch
        release.wait(_HANG_S + 10)

    fake = FakeAgentServer(queued_then_silent)
    request = profile_request("ab" * 32)
    fake.servicer.jobs = [pb.JobSummary(job_id=request.job_id, state="queued", last_seq=1)]
    # The agent still lists the job as queued, but says it no longer serves: its job runner is gone.
    fake.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        with AgentClient(fake.address) as client:
            collector, failure = _follow(client, request, reconnect_s=1.0, stall_s=1.0)
    finally:
        release.set()
        fake.stop()

    assert isinstance(failure, DeviceFailed), failure
    assert "during queued" in str(failure) and "no data from the agent for 1 s" in str(failure)
    assert collector.last_seq == 1


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProc]:
    proc = AgentProc(tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_job_waiting_in_the_queue_longer_than_the_stall_bound_is_followed_to_its_end(agent: AgentProc) -> None:
    with agent.client() as client:
        sha = upload(client)
        ahead = client.profile(profile_request(sha, runs=5, min_duration_s=4.0), timeout_s=120)
        reader = threading.Thread(target=lambda: [b for b in ahead], daemon=True)
        reader.start()
        wait_for(lambda: any(j.state == "running" for j in client.list_jobs()), 120, "the first job to run")

        # Silent for as long as the job ahead runs (seconds), with a stall bound of 1 s and no reconnect budget.
        collector, failure = _follow(client, profile_request(sha, runs=3), reconnect_s=0.0, stall_s=1.0)
        reader.join(60)

    assert failure is None, failure
    assert collector.finished and collector.end is not None and collector.end.status == pb.JobEnd.OK
    queued = next(p for p in collector.raw().phases if p.name == "queued")
    assert (queued.end_ns - queued.start_ns) / 1e9 > 1.0, "the job waited longer than the stall bound"


def test_a_slow_sampling_rate_stretches_the_stall_bound_to_three_periods() -> None:
    # At 0.01 Hz the agent's memory samples (what keeps a running job's stream busy) come 100 s apart.
    assert stall_bound_s(ProfileSettings(sample_rate_hz=0.01)) == pytest.approx(300.0)
    assert stall_bound_s(ProfileSettings(sample_rate_hz=100.0)) == STALL_S
    assert stall_bound_s(ProfileSettings()) == STALL_S


def test_runs_fetch_allows_the_silence_of_the_jobs_own_slow_sampling_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profiling, "STALL_S", 1.0)  # so that 3 periods of 0.5 Hz (6 s) exceed it

    def pause_then_finish(job_id: str) -> Iterator[pb.MeasurementBatch]:
        first, *rest = job_batches(job_id, [1, 2, 3], end=True)
        yield first
        time.sleep(2.5)  # the agent's side of the scenario: 2.5 s between samples at the job's 0.5 Hz
        yield from rest

    fake = FakeAgentServer(pause_then_finish)
    store = open_store(tmp_path / "runs.sqlite")
    job = PendingJob("20260101-120000-abcdef", "board-a", fake.address, uuid.uuid4().hex, {}, {"sample_rate_hz": 0.5})
    try:
        store.add_pending(job)
        [result] = fetch_runs(store, job.run_id, lambda _job: Credentials(), reconnect_s=0.0)
    finally:
        store.close()
        fake.stop()

    [outcome] = result.outcomes
    assert (outcome.status, outcome.n_inferences) == ("ok", 30), outcome.message
