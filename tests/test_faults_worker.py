"""A worker killed mid-measure fails its job with one line naming the signal, phase and count; the agent goes on."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import psutil
import pytest
from faultlib import AgentProc, assert_still_serving, batches_with_kill, profile_request, upload, wait_for

from protos import agent_pb2 as pb


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    proc = AgentProc(tmp_path_factory.mktemp("worker-kill")).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_worker_killed_mid_measure_fails_job_naming_signal_phase_and_count(agent: AgentProc, sig: int) -> None:
    client = agent.client()
    sha = upload(client)
    request = profile_request(sha, runs=1_000_000, min_duration_s=60, timeout_s=120)
    killed: list[int] = []

    def kill_worker() -> None:
        worker = wait_for(agent.workers, 10, "the worker subprocess")[0]
        worker.send_signal(sig)
        killed.append(worker.pid)

    batches, measured = batches_with_kill(client.profile(request, timeout_s=120), lambda _b, n: n > 0, kill_worker)

    end = batches[-1].end
    assert end.status == pb.JobEnd.ERROR and end.error_kind == "crash"
    assert f"killed by {signal.Signals(sig).name}" in end.error
    assert f"during measure after {measured} measured inferences" in end.error
    assert "\n" not in end.error
    assert end.measured == measured > 0
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert_still_serving(client, sha)
    client.close()
