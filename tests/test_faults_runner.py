"""The job runner against real faults: a journal whose SQLite database is full, jobs that fail inside the
runner, a runner thread that dies, duplicate job ids racing, cancelled queued jobs, failed allocations.

The disk-full is real from SQLite's side: `PRAGMA max_page_count` on the journal's own connection makes
every write that needs a new page fail with SQLITE_FULL ("database or disk is full"), exactly what a full
filesystem returns, without needing a root-only tmpfs in CI.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from faultlib import assert_still_serving, profile_request, upload, wait_for

from host.fleet.client import AgentClient
from protos import agent_pb2 as pb

SQLITE_MAX_PAGES = 1073741823  # SQLite's default max_page_count


def _client(agent: Any) -> AgentClient:
    return AgentClient(f"127.0.0.1:{agent.port}")


def _set_max_pages(agent: Any, pages: int | None) -> None:
    """Make the agent's journal database full at its current size (None: lift the limit)."""
    journal = agent.journal
    with journal._lock:  # the journal's own connection: the pragma is per connection
        if pages is None:
            current = journal._db.execute("PRAGMA page_count").fetchone()[0]
            freelist = journal._db.execute("PRAGMA freelist_count").fetchone()[0]
            pages = current - freelist
        journal._db.execute(f"PRAGMA max_page_count = {int(pages)}")


def _fill_journal(agent: Any) -> None:
    _set_max_pages(agent, None)


def _free_journal(agent: Any) -> None:
    _set_max_pages(agent, SQLITE_MAX_PAGES)


class _Stream:
    """Reads one job's stream in a thread; records every batch and how the stream ended."""

    def __init__(self, batches: Iterator[pb.MeasurementBatch]) -> None:
        self.batches: list[pb.MeasurementBatch] = []
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(batches,), daemon=True)
        self._thread.start()

    def _read(self, batches: Iterator[pb.MeasurementBatch]) -> None:
        try:
            for batch in batches:
                self.batches.append(batch)
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.done.set()

    def measuring(self) -> bool:
        return any(block.phase == pb.MEASURE and block.start_ns for b in self.batches for block in b.latency)


def _attach_or_none(client: AgentClient, job_id: str, after_seq: int) -> list[pb.MeasurementBatch] | None:
    """The rest of a job's batches, or None while the agent still answers that it could not journal them."""
    try:
        return list(client.attach(job_id, after_seq, timeout_s=30))
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.INTERNAL and "could not write job" in err.details():
            return None
        raise


def _assert_complete(batches: list[pb.MeasurementBatch], runs: int = 20) -> pb.JobEnd:
    """Seqs 1..N without a gap or repeat, an OK end, and every measured inference present."""
    seqs = [b.seq for b in batches]
    assert seqs == list(range(1, len(seqs) + 1)), f"sequence numbers not contiguous from 1: {seqs}"
    ends = [b.end for b in batches if b.HasField("end")]
    assert len(ends) == 1 and ends[0].status == pb.JobEnd.OK, ends
    measured = sum(len(block.start_ns) for b in batches for block in b.latency if block.phase == pb.MEASURE)
    assert ends[0].measured >= runs
    assert measured == ends[0].measured, f"{ends[0].measured} inferences measured, {measured} received"
    return ends[0]


def test_brief_disk_full_mid_job_loses_no_samples(agent_process: Any) -> None:
    with _client(agent_process) as client:
        sha = upload(client)
        stream = _Stream(client.profile(profile_request(sha, runs=20, min_duration_s=2.5), timeout_s=120))
        wait_for(stream.measuring, 60, "the job to start measuring")
        failures_before = agent_process.journal.write_failures
        _fill_journal(agent_process)
        # Several flushes refused (one every 0.1 s) while the worker keeps measuring.
        wait_for(lambda: agent_process.journal.write_failures >= failures_before + 5, 30, "refused journal writes")
        _free_journal(agent_process)
        assert stream.done.wait(120), "the job's stream did not end"
        assert stream.error is None, stream.error
        _assert_complete(stream.batches)
        assert client.health() == "SERVING"
        assert_still_serving(client, sha)


def test_disk_full_through_a_jobs_end_keeps_its_batches_and_the_next_job_runs(agent_process: Any) -> None:
    agent_process.runner.settings.journal_retry_s = 0.5
    with _client(agent_process) as client:
        sha = upload(client)
        request = profile_request(sha, runs=20, min_duration_s=1.0)
        stream = _Stream(client.profile(request, timeout_s=120))
        wait_for(stream.measuring, 60, "the job to start measuring")
        _fill_journal(agent_process)
        # The job ends while the journal refuses every write: its stream ends with a clear error, not
        # silently and not never.
        assert stream.done.wait(90), "the stream of a job whose end cannot be journaled never ended"
        assert stream.error is not None and stream.error.code() == grpc.StatusCode.INTERNAL
        assert "could not write job" in stream.error.details()
        assert client.health() == "SERVING"
        _free_journal(agent_process)
        # With no other job coming, the idle runner writes the kept batches: the host's re-attach gets them.
        last_seq = stream.batches[-1].seq if stream.batches else 0
        wait_for(lambda: _attach_or_none(client, request.job_id, last_seq), 30, "the kept batches to be journaled")
        rest = list(client.attach(request.job_id, last_seq, timeout_s=30))
        _assert_complete(stream.batches + rest)
        assert_still_serving(client, sha)  # the runner survived
        job = next(j for j in client.list_jobs(include_acknowledged=True) if j.job_id == request.job_id)
        assert job.state == "ok"


def test_a_job_that_fails_inside_the_runner_ends_as_error_and_the_next_runs(agent_process: Any) -> None:
    with _client(agent_process) as client:
        sha = upload(client)
        # The model disappears from the cache between Profile and the job's start: the runner itself
        # raises (ModelNotFound in the worker's start), not the worker.
        blocker = profile_request(sha, runs=20, min_duration_s=60)
        first = _Stream(client.profile(blocker, timeout_s=120))
        wait_for(first.measuring, 60, "the first job to start measuring")
        doomed = profile_request(sha, runs=3)
        second = _Stream(client.profile(doomed, timeout_s=120))
        wait_for(lambda: second.batches, 30, "the second job to be queued")
        model_path = agent_process.cache.use(sha)
        hidden = model_path.with_name("hidden-by-test")
        model_path.rename(hidden)
        client.cancel(blocker.job_id)  # the second job starts now, without its model file
        assert second.done.wait(120) and second.error is None, second.error
        ends = [b.end for b in second.batches if b.HasField("end")]
        assert len(ends) == 1 and ends[0].status == pb.JobEnd.ERROR
        assert ends[0].error_kind == "internal" and "the agent failed while running this job" in ends[0].error
        assert first.done.wait(120) and first.error is None
        assert [b.end.status for b in first.batches if b.HasField("end")] == [pb.JobEnd.CANCELLED]
        hidden.rename(model_path)
        assert client.health() == "SERVING"
        assert_still_serving(client, sha)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_health_is_not_serving_when_the_runner_thread_dies(agent_process: Any, monkeypatch: Any) -> None:
    import agent.jobs.runner

    class RunnerKilled(BaseException):
        """Not an Exception: what no per-job handler catches (as a bug in the loop itself would be)."""

    def die(self: Any, job: Any) -> None:
        raise RunnerKilled()

    with _client(agent_process) as client:
        sha = upload(client)
        assert client.health() == "SERVING"
        monkeypatch.setattr(agent.jobs.runner.JobRunner, "_run_one", die)
        stream = _Stream(client.profile(profile_request(sha), timeout_s=60))
        wait_for(lambda: client.health() == "NOT_SERVING", 30, "health to report NOT_SERVING")
        # The job the runner died on does not wait forever: its stream ends with the reason.
        assert stream.done.wait(30) and stream.error is not None
        assert stream.error.code() == grpc.StatusCode.INTERNAL and "restart the agent" in stream.error.details()
        with pytest.raises(grpc.RpcError) as err:
            list(client.profile(profile_request(sha), timeout_s=30))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "restart the agent" in err.value.details()


def test_concurrent_profiles_with_one_job_id_share_one_job(agent_process: Any) -> None:
    with _client(agent_process) as client:
        sha = upload(client)
    for _round in range(5):
        request = profile_request(sha, runs=3)
        start = threading.Barrier(8)
        streams: list[_Stream] = []

        def fire(request: pb.ProfileRequest, start: threading.Barrier, streams: list[_Stream]) -> None:
            with _client(agent_process) as client:
                client.describe()  # connected before the barrier: the Profiles arrive together
                start.wait(timeout=30)
                stream = _Stream(client.profile(request, timeout_s=120))
                stream.done.wait(120)
                streams.append(stream)

        threads = [threading.Thread(target=fire, args=(request, start, streams)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=150)
        assert len(streams) == 8
        errors = [s.error for s in streams if s.error is not None]
        assert not errors, [(e.code(), e.details()) for e in errors]  # never INTERNAL: the late ones re-attach
        for stream in streams:
            _assert_complete(stream.batches, runs=3)  # the same single job, seen whole by every caller
        assert len({tuple(b.SerializeToString() for b in s.batches) for s in streams}) == 1
        with _client(agent_process) as client:
            jobs = [j for j in client.list_jobs(include_acknowledged=True) if j.job_id == request.job_id]
        assert len(jobs) == 1 and jobs[0].state == "ok"
    # No job holds the model any more: a leaked pin would keep it from ever being evicted.
    wait_for(lambda: not agent_process.cache._pinned, 30, "the model's pins to be released")
