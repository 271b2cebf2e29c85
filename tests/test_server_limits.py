"""Streams are bounded per client and in total: control RPCs still answer while a client holds every
stream it may, and one stream more is refused at once with RESOURCE_EXHAUSTED."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from faultlib import profile_request, upload, wait_for
from test_faults_runner import _Stream

from host.fleet.client import AgentClient
from protos import agent_pb2 as pb

CONTROL_DEADLINE_S = 5.0


def _client(agent: Any) -> AgentClient:
    return AgentClient(f"127.0.0.1:{agent.port}", timeout_s=CONTROL_DEADLINE_S)


def _hold_streams(client: AgentClient, sha: str, attaches: int) -> tuple[pb.ProfileRequest, _Stream, list[_Stream]]:
    """One long Profile plus `attaches` Attach streams to it, as the red-team run did (1 + 15)."""
    request = profile_request(sha, runs=10, min_duration_s=60)
    profile = _Stream(client.profile(request, timeout_s=120))
    wait_for(lambda: profile.batches, 30, "the job to be queued")
    streams = [_Stream(client.attach(request.job_id, 0, timeout_s=120)) for _ in range(attaches)]
    # Each Attach has either sent its first batch (open, holding a thread) or been refused.
    wait_for(lambda: all(s.batches or s.done.is_set() for s in streams), 30, "every Attach to open or be refused")
    return request, profile, streams


def _refused(streams: list[_Stream]) -> list[_Stream]:
    return [s for s in streams if s.error is not None]


def test_control_rpcs_answer_while_one_client_opens_sixteen_streams(agent_process: Any) -> None:
    with _client(agent_process) as client:
        sha = upload(client)
        request, profile, streams = _hold_streams(client, sha, attaches=15)
        # Without the bound these time out: 16 streams held all 16 threads.
        assert client.describe().profile == "generic-linux"  # deadline: CONTROL_DEADLINE_S
        assert client.health(timeout_s=CONTROL_DEADLINE_S) == "SERVING"
        refused = _refused(streams)
        # One client may hold 8 streams: the Profile and 7 Attaches; the other 8 were refused at once.
        assert len(refused) == 8 and profile.error is None
        assert all(s.error is not None and s.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for s in refused)
        assert "the most one client may hold (8)" in refused[0].error.details()  # type: ignore[union-attr]
        assert any(j.job_id == request.job_id for j in client.list_jobs())
        assert client.cancel(request.job_id).cancelled
        assert profile.done.wait(60) and all(s.done.wait(60) for s in streams)
        # The slots are given back when streams end: a new stream is accepted again.
        again = list(client.attach(request.job_id, 0, timeout_s=30))
        assert again and again[-1].HasField("end")


def test_the_total_bound_keeps_threads_for_control_rpcs(agent_process: Any) -> None:
    from agent.service.server import create_server

    # Many clients (one per address) together: the total bound, not the per-client one, must hold.
    server, port, _health = create_server(
        "127.0.0.1:0", agent_process.servicer, max_workers=8, max_streams=5, max_streams_per_client=100
    )
    try:
        with AgentClient(f"127.0.0.1:{port}", timeout_s=CONTROL_DEADLINE_S) as client:
            sha = upload(client)
            request, profile, streams = _hold_streams(client, sha, attaches=6)
            refused = _refused(streams)
            assert len(refused) == 2, [s.error for s in refused]
            assert "maximum of 5 streams" in refused[0].error.details()  # type: ignore[union-attr]
            assert refused[0].error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[union-attr]
            assert client.has_model(sha) is True
            assert client.health(timeout_s=CONTROL_DEADLINE_S) == "SERVING"
            assert client.cancel(request.job_id).cancelled
            assert profile.done.wait(60) and all(s.done.wait(60) for s in streams)
    finally:
        server.stop(0).wait()


@pytest.mark.parametrize("limits", [(0, 8), (4, 0)])
def test_stream_limits_must_be_positive(limits: tuple[int, int]) -> None:
    from agent.service.stream_limits import StreamLimits

    with pytest.raises(ValueError, match="at least 1"):
        StreamLimits(*limits)


class _Watch:
    """A Health.Watch stream read in a thread: open once its first answer came, or refused."""

    def __init__(self, channel: grpc.Channel) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self.call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        self.answered = threading.Event()
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for _ in self.call:
                self.answered.set()
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.done.set()


def test_unauthenticated_health_watches_cannot_take_the_token_holders_stream_slots(tmp_path: Any) -> None:
    from agent.service.serve import AgentProcess, ServeOptions
    from host.fleet.client import Credentials

    token = "t" * 32
    (tmp_path / "token").write_text(token)
    (tmp_path / "token").chmod(0o600)
    agent = AgentProcess(
        ServeOptions(listen="127.0.0.1:0", advertise=False, data_dir=tmp_path / "agent", token_file=tmp_path / "token")
    )
    agent.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{agent.port}")  # no token: Health is open to it
    try:
        watches = [_Watch(channel) for _ in range(12)]  # what the red team opened
        wait_for(lambda: all(w.answered.is_set() or w.done.is_set() for w in watches), 30, "every Watch to settle")
        refused = [w for w in watches if w.error is not None]
        # Two open Watch streams for everyone without the token; the other ten refused at once.
        assert len(refused) == 10
        assert all(w.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for w in refused)  # type: ignore[union-attr]
        with AgentClient(f"127.0.0.1:{agent.port}", Credentials(token=token), timeout_s=CONTROL_DEADLINE_S) as client:
            sha = upload(client)  # a stream (UploadModel): refused before the fix
            batches = list(client.profile(profile_request(sha), timeout_s=120))  # and Profile
            assert batches[-1].end.status == pb.JobEnd.OK
            assert client.health(timeout_s=CONTROL_DEADLINE_S) == "SERVING"
    finally:
        channel.close()
        agent.stop()
