"""A stream that breaks mid-job: the agent restarts, the connection is cut, or the host gives up and fetches later."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from faultlib import SQUEEZENET, AgentProc, TcpProxy, assert_still_serving, profile_request, upload, wait_for

from host.fleet.client import AgentClient
from host.fleet.target import Target
from host.prepare.modelfile import inspect
from host.run.collect import JobCollector
from host.run.fetch import fetch_runs
from host.run.profiling import DeviceProgress, ProfileSettings, run_profile, stream_job
from host.store.open import open_store
from protos import agent_pb2 as pb


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProc]:
    proc = AgentProc(tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()


class _Follow:
    """stream_job in a thread, recording every seq it accepts and every re-attach it makes."""

    def __init__(self, client: AgentClient, request: pb.ProfileRequest, reconnect_s: float = 30) -> None:
        self.collector = JobCollector("board")
        self.seqs: list[int] = []
        self.attaches = 0
        self.error: BaseException | None = None
        attach = client.attach

        def counting_attach(*args: Any, **kwargs: Any) -> Any:
            self.attaches += 1
            return attach(*args, **kwargs)

        client.attach = counting_attach  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, args=(client, request, reconnect_s), daemon=True)
        self._thread.start()

    def _run(self, client: AgentClient, request: pb.ProfileRequest, reconnect_s: float) -> None:
        try:
            stream_job(client, request, self.collector, lambda c: self.seqs.append(c.last_seq), reconnect_s)
        except BaseException as err:
            self.error = err

    def measuring(self, more_than: int = 0) -> bool:
        return self.collector.current_phase == "measure" and self.collector.measured > more_than

    def join(self, timeout_s: float = 60) -> JobCollector:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the host never finished following the job"
        if self.error is not None:
            raise self.error
        return self.collector


def _journaled_last_seq(client: AgentClient, job_id: str) -> int:
    return next(j.last_seq for j in client.list_jobs(include_acknowledged=True) if j.job_id == job_id)


def test_agent_killed_and_restarted_mid_stream_ends_with_agent_restarted_error(agent: AgentProc) -> None:
    client = agent.client()
    sha = upload(client)
    follow = _Follow(client, profile_request(sha, runs=1_000_000, min_duration_s=60, timeout_s=120))
    wait_for(follow.measuring, 30, "the measure phase")
    workers = agent.workers()

    agent.kill()
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    restarted = AgentProc(agent.tmp, data_dir=agent.data_dir, port=agent.port).start()
    try:
        collector = follow.join()
        assert collector.end is not None and collector.end.status == pb.JobEnd.ERROR
        assert collector.end.error == "the agent restarted while this job was running"
        assert follow.seqs == list(range(1, collector.last_seq + 1))
        assert follow.attaches >= 1
        assert not alive, "a worker orphaned by the dead agent went on running inferences"
        assert_still_serving(client, sha)
    finally:
        client.close()
        restarted.stop()


def test_connection_cut_mid_stream_resumes_with_every_batch_exactly_once(agent: AgentProc) -> None:
    proxy = TcpProxy(agent.port)
    client = AgentClient(proxy.address)
    try:
        sha = upload(client)
        request = profile_request(sha, runs=20, min_duration_s=2.0)
        follow = _Follow(client, request)
        wait_for(follow.measuring, 30, "the measure phase")
        assert proxy.cut() >= 1
        seen = follow.collector.measured
        wait_for(lambda: follow.measuring(seen) or follow.collector.finished, 30, "measurements after the cut")
        proxy.cut()
        collector = follow.join()

        assert collector.end is not None and collector.end.status == pb.JobEnd.OK
        assert follow.attaches >= 1
        assert follow.seqs == list(range(1, collector.last_seq + 1))
        assert collector.last_seq == _journaled_last_seq(client, request.job_id)
        assert collector.measured == collector.end.measured >= 20
        assert collector.raw().start_ns.size == collector.end.measured
    finally:
        client.close()
        proxy.stop()


def test_host_that_gave_up_reattaching_collects_the_job_with_runs_fetch(agent: AgentProc, tmp_path: Path) -> None:
    proxy = TcpProxy(agent.port)
    store = open_store(tmp_path / "runs.sqlite")
    model = inspect(SQUEEZENET)
    progress: list[DeviceProgress] = []
    settings = ProfileSettings(runs=20, warmup=1, min_duration_s=2.0, idle_s=0, reconnect_s=0.5)
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_profile(model, [Target("board", proxy.address)], settings, store=store, progress=progress.append)
        ),
        daemon=True,
    )
    try:
        thread.start()
        wait_for(lambda: any(p.phase == "measure" and p.measured > 0 for p in progress), 30, "the measure phase")
        proxy.blocked.set()
        proxy.cut()
        thread.join(30)
        run = result[0]
        entry = run.document["devices"][0]
        assert entry["status"] == "error" and "host runs fetch" in entry["error"]
        assert [p.job_id for p in store.pending(run.run_id)] == [entry["job_id"]]

        proxy.blocked.clear()
        fetched = fetch_runs(store, run.run_id, lambda _job: AgentClient(proxy.address).credentials)

        assert [o.status for o in fetched[0].outcomes] == ["ok"]
        stored = store.load_run(run.run_id).document["devices"]
        assert len(stored) == 1 and stored[0]["status"] == "ok"
        measure = next(p for p in stored[0]["phases"] if p["name"] == "measure")
        assert stored[0]["n_inferences"] == measure["count"] >= 20
        assert store.pending(run.run_id) == []
        with AgentClient(agent.address) as client:
            assert entry["job_id"] not in [j.job_id for j in client.list_jobs()]
    finally:
        proxy.stop()
        store.close()
