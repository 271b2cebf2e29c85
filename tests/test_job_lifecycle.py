"""Parts of a job's life no other test reaches: the settle phase ending settled, a queued job cancelled,
and the journal's age pruning when `agent serve` starts.

Real agents (in this process where the test must see inside, else `agent serve` subprocesses), real
workers, a fake sysfs thermal tree (EDGEPROF_SYSFS_ROOT) read by the real thermal backend.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from faultlib import AgentProc, profile_request, upload, wait_for
from sensor_fakes import build_thermal

from agent.serve import AgentProcess, ServeOptions
from host.fleet.client import AgentClient
from protos import agent_pb2 as pb

HOT_C, COOL_C, LIMIT_C = 80.0, 45.0, 50.0
#: The profile's max_temp_c (the zone has no trip point): HOT_C is beyond it, so stability alone does not settle.
TRIP_C = 75.0
#: Reads by the settle loop that still find the board hot; the next one finds it cool.
HOT_READS = 3
#: The settle loop re-reads once a second.
SETTLE_POLL_S = 1.0


def _in_process_agent(tmp_path: Path, **options: object) -> AgentProcess:
    agent = AgentProcess(
        ServeOptions(listen="127.0.0.1:0", advertise=False, data_dir=tmp_path / "agent", **options)  # type: ignore[arg-type]
    )
    agent.start()
    return agent


@pytest.fixture(params=[TRIP_C])
def settle_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[AgentProcess, Path]]:
    """An agent whose profile settles below LIMIT_C and throttles at the param (max_temp_c), on a fake board with
    one zone at HOT_C."""
    root = tmp_path / "sys"
    build_thermal(root, {"cpu-thermal": HOT_C})
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test-settle.toml").write_text(
        'name = "test-settle"\nruntime = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\n'
        f"power_sensors = []\nsettle_temp_c = {LIMIT_C}\nsettle_timeout_s = 120.0\nmax_temp_c = {request.param}\n"
    )
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(root))
    monkeypatch.setenv("EDGEPROF_PROFILES_DIR", str(profiles))
    agent = _in_process_agent(tmp_path, profile="test-settle")
    try:
        yield agent, root / "sys/class/thermal/thermal_zone0/temp"
    finally:
        agent.stop()


def _settle_phase(batches: Sequence[pb.MeasurementBatch]) -> pb.PhaseEvent:
    (settle,) = [p for b in batches for p in b.phases if p.phase == pb.SETTLE and p.end_ns]
    return settle


def test_settle_waits_until_the_board_cools_below_the_profile_limit(
    settle_agent: tuple[AgentProcess, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, temp_file = settle_agent
    (thermal,) = [s for s in agent.sensors if s.backend == "thermal"]
    real_read = thermal.read
    settle_reads: list[float] = []

    def read() -> Sequence[float]:
        if sys._getframe(1).f_code.co_name != "_max_temp_c":  # the sampler's reads are not the settle loop's
            return real_read()
        if len(settle_reads) == HOT_READS:
            temp_file.write_text(f"{int(COOL_C * 1000)}\n")  # the fan caught up
        values = real_read()
        settle_reads.append(values[0])
        return values

    monkeypatch.setattr(thermal, "read", read)
    with AgentClient(f"127.0.0.1:{agent.port}") as client:
        sha = upload(client)
        batches = list(client.profile(profile_request(sha, runs=3, warmup=1), timeout_s=120))

    (end,) = [b.end for b in batches if b.HasField("end")]
    assert end.status == pb.JobEnd.OK, end
    assert settle_reads == [HOT_C] * HOT_READS + [COOL_C]
    settle = _settle_phase(batches)
    assert settle.detail == f"settled at {COOL_C:.1f} C: at or below the limit {LIMIT_C:.1f} C"
    assert end.notes["settle"] == "cool"
    # It waited between its reads; an agent that measured at once would span almost nothing.
    assert (settle.end_ns - settle.start_ns) / 1e9 >= HOT_READS * SETTLE_POLL_S
    # Measuring started only after the board had settled.
    (measure,) = [p for b in batches for p in b.phases if p.phase == pb.MEASURE and p.end_ns]
    assert measure.start_ns >= settle.end_ns


def test_a_board_that_stays_beyond_its_trip_limit_is_measured_after_the_timeout_and_says_so(
    settle_agent: tuple[AgentProcess, Path],
) -> None:
    agent, _temp_file = settle_agent
    with AgentClient(f"127.0.0.1:{agent.port}") as client:
        sha = upload(client)
        request = profile_request(sha, runs=3, warmup=1, settle_timeout_s=2.0)
        batches = list(client.profile(request, timeout_s=120))

    (end,) = [b.end for b in batches if b.HasField("end")]
    assert end.status == pb.JobEnd.OK, end
    settle = _settle_phase(batches)
    assert settle.detail.startswith(
        f"not settled: {HOT_C:.1f} C after 2 s, at or above the {TRIP_C:.1f} C trip-related limit (+0.0 C/min"
    )
    assert (settle.end_ns - settle.start_ns) / 1e9 >= 2.0
    assert end.notes["settle"] == "timeout"


@pytest.mark.parametrize("settle_agent", [90.0], indirect=True)
def test_a_board_that_idles_warm_below_its_trip_limit_is_settled_once_it_stops_cooling(
    settle_agent: tuple[AgentProcess, Path],
) -> None:
    agent, _temp_file = settle_agent  # HOT_C, flat, is above the settle limit and below the 90 C max_temp_c
    with AgentClient(f"127.0.0.1:{agent.port}") as client:
        sha = upload(client)
        request = profile_request(sha, runs=3, warmup=1, settle_timeout_s=6.0)
        batches = list(client.profile(request, timeout_s=120))

    (end,) = [b.end for b in batches if b.HasField("end")]
    assert end.status == pb.JobEnd.OK, end
    settle = _settle_phase(batches)
    assert settle.detail == f"settled at {HOT_C:.1f} C: no longer cooling (+0.0 C/min over 2 s, limit {LIMIT_C:.1f} C)"
    assert end.notes["settle"] == "stable"
    # A window of flat readings (a third of the 6 s timeout) ended it, not the timeout.
    assert 1.8 <= (settle.end_ns - settle.start_ns) / 1e9 < 4.0


def test_a_cancelled_queued_job_never_runs_and_frees_its_queue_place(tmp_path: Path) -> None:
    agent = _in_process_agent(tmp_path, max_queued=1)
    try:
        with AgentClient(f"127.0.0.1:{agent.port}") as client:
            sha = upload(client)
            # A long job holds the board; the next one waits in the only queue place.
            running = profile_request(sha, runs=10_000_000, warmup=0, min_duration_s=600)
            running_stream = client.profile(running, timeout_s=300)
            next(running_stream)
            wait_for(lambda: client.job_state(running.job_id, 10) == "running", 60, "the long job to run")
            queued = profile_request(sha, runs=3, warmup=0)
            queued_stream = client.profile(queued, timeout_s=60)
            first = next(queued_stream)
            assert client.job_state(queued.job_id, 10) == "queued"
            with pytest.raises(grpc.RpcError) as full:  # the place is taken
                list(client.profile(profile_request(sha, runs=3, warmup=0), timeout_s=30))
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            reply = client.cancel(queued.job_id)

            assert reply.cancelled and reply.state == "cancelling"
            batches = [first, *queued_stream]
            (end,) = [b.end for b in batches if b.HasField("end")]
            assert end.status == pb.JobEnd.CANCELLED and end.phase == "queued" and end.measured == 0, end
            phases = {p.phase for b in batches for p in b.phases}
            assert phases == {pb.QUEUED}, phases  # never prepared, never measured
            assert not any(b.HasField("info") or b.latency for b in batches)
            assert client.job_state(queued.job_id, 10) == "cancelled"
            # Its place is free again: a new job queues behind the running one.
            another = profile_request(sha, runs=3, warmup=0)
            another_stream = client.profile(another, timeout_s=300)
            next(another_stream)
            assert client.job_state(another.job_id, 10) == "queued"
            for job in (another, running):
                client.cancel(job.job_id)
            assert [b.end.status for b in another_stream if b.HasField("end")] == [pb.JobEnd.CANCELLED]
            assert [b.end.status for b in running_stream if b.HasField("end")] == [pb.JobEnd.CANCELLED]
    finally:
        agent.stop(grace_s=0)


def _finish_job(client: AgentClient, sha: str) -> tuple[str, int]:
    """Run a short job to the end and acknowledge all of it: (job_id, last seq)."""
    request = profile_request(sha, runs=2, warmup=0)
    batches = list(client.profile(request, timeout_s=120))
    assert batches[-1].end.status == pb.JobEnd.OK
    client.acknowledge(request.job_id, batches[-1].seq)
    return request.job_id, batches[-1].seq


def test_agent_serve_prunes_jobs_that_ended_long_ago_when_it_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    agent = AgentProc(tmp_path, data_dir=data_dir).start()
    try:
        with agent.client() as client:
            sha = upload(client)
            old_job, _ = _finish_job(client, sha)
            recent_job, _ = _finish_job(client, sha)
    finally:
        agent.stop()
    journal = data_dir / "journal.sqlite"
    eight_days_ago = time.time() - 8 * 24 * 3600  # the journal keeps ended jobs for 7 days
    with sqlite3.connect(journal) as db:
        changed = db.execute(
            "UPDATE jobs SET created = ?, finished = ? WHERE job_id = ?", (eight_days_ago, eight_days_ago, old_job)
        )
        assert changed.rowcount == 1
    db.close()

    agent = AgentProc(tmp_path, data_dir=data_dir).start()
    try:
        with agent.client() as client:
            listed = {job.job_id for job in client.list_jobs(include_acknowledged=True)}
            with pytest.raises(grpc.RpcError) as gone:
                list(client.attach(old_job, 0, timeout_s=30))
    finally:
        agent.stop()

    assert recent_job in listed and old_job not in listed
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE job_id = ?", (old_job,)).fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM batches WHERE job_id = ?", (old_job,)).fetchone()[0] == 0
    db.close()
