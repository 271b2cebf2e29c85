"""A worker's peak memory is its own, not that of the process that started it."""

from __future__ import annotations

from typing import Any

from host.fleet.client import AgentClient
from protos import agent_pb2 as pb
from tests.faultlib import profile_request, upload

PARENT_MB = 400


def test_peak_rss_of_a_worker_started_by_a_big_agent_is_the_workers_own(agent_process: Any) -> None:
    # The agent here lives in the test process: make it big, as a long-running agent (or pytest) can be.
    ballast = bytearray(PARENT_MB * 1024**2)
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1
    with AgentClient(f"127.0.0.1:{agent_process.port}") as client:
        sha = upload(client)
        batches = list(client.profile(profile_request(sha, runs=5, min_duration_s=0.1), timeout_s=120))
    del ballast

    end = batches[-1].end
    assert end.status == pb.JobEnd.OK, end
    # SqueezeNet in ONNX Runtime stays near 100 MB; ru_maxrss would have said PARENT_MB or more.
    assert 20 * 1024**2 < end.peak_rss_bytes < (PARENT_MB - 150) * 1024**2, end.peak_rss_bytes / 1e6
