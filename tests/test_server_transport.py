"""The agent's gRPC transport settings (agent/service/server.py create_server), each seen acting on a real server.

A small servicer stands in for the agent's, so each test sees exactly what the transport does: a stream to
a host that vanished is ended by the agent's own pings; a host's frequent pings are tolerated while its
stream waits with no data; a message larger than gRPC's 4 MB default reaches the servicer; RPCs beyond the
server's concurrency bound are refused instead of queueing without end. Ping timings are scaled down from
the production defaults (agent.service.server.Keepalive) so each shows within a test's time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from faultlib import TcpProxy, wait_for

from agent.service.server import Keepalive, create_server
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc


class HeldServicer(agent_pb2_grpc.AgentServicer):
    """Attach streams and Describe calls that wait until the test releases them."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.attached = threading.Event()
        self.attach_ended = threading.Event()
        self.describing = 0
        self.npz_bytes: list[int] = []
        self._lock = threading.Lock()

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        context.add_callback(self.attach_ended.set)
        self.attached.set()
        while not self.release.wait(0.05):
            if not context.is_active():
                return
        yield pb.MeasurementBatch(job_id=request.job_id, seq=1)

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:
        with self._lock:
            self.describing += 1
        self.release.wait(30)
        return pb.DeviceInfo(hostname="held")

    def Profile(self, request: pb.ProfileRequest, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        self.npz_bytes.append(len(request.inputs_npz))
        yield pb.MeasurementBatch(job_id=request.job_id, seq=1)


@pytest.fixture
def served() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(**kwargs: Any) -> tuple[HeldServicer, int]:
        servicer = HeldServicer()  # type: ignore[abstract]  # the RPCs it does not serve answer UNIMPLEMENTED
        server, port, _health = create_server("127.0.0.1:0", servicer, **kwargs)
        servers.append(server)
        return servicer, port

    yield start
    for server in servers:
        server.stop(grace=0)


def test_a_stream_to_a_host_that_vanished_is_ended_by_the_agents_pings(served: Any) -> None:
    servicer, port = served(keepalive=Keepalive(ping_interval_ms=200, ping_timeout_ms=500))
    proxy = TcpProxy(port)
    # A client that never pings: only the agent's own pings can find the link dead.
    channel = grpc.insecure_channel(proxy.address)
    try:
        stub = agent_pb2_grpc.AgentStub(channel)
        stream = stub.Attach(pb.AttachRequest(job_id="a" * 32), timeout=120)  # the call starts at once
        assert servicer.attached.wait(30)
        proxy.freeze()  # the host's board lost power: nothing arrives, nothing is refused
        wait_for(servicer.attach_ended.is_set, 20, "the agent to end the stream of a host that stopped answering")
        stream.cancel()
    finally:
        servicer.release.set()
        channel.close()
        proxy.stop()


def test_a_hosts_frequent_pings_are_tolerated_while_its_stream_waits(served: Any) -> None:
    servicer, port = served(keepalive=Keepalive(min_host_ping_interval_ms=100))
    # The host's settings (host/fleet/client.py), pinging as often as grpc lets it (once a second) instead of every
    # 5 s, also while no data flows.
    options = [
        ("grpc.keepalive_time_ms", 150),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        stream = stub.Attach(pb.AttachRequest(job_id="b" * 32), timeout=60)
        assert servicer.attached.wait(30)
        # Five pings with no data: a server that counts them as abuse (its default allows one in 5 minutes)
        # sends GOAWAY "too_many_pings" after the third strike, which ends the stream with UNAVAILABLE. Before
        # the fix the option's key was misspelt, and a host waiting in the queue was cut off after 3 pings.
        time.sleep(5.5)
        assert not servicer.attach_ended.is_set()
        servicer.release.set()
        assert [b.seq for b in stream] == [1]


def test_an_inputs_npz_larger_than_grpcs_4_mb_default_reaches_the_agent(served: Any) -> None:
    servicer, port = served()
    npz = b"\0" * (12 * 1024**2)
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 80 * 1024**2)]) as ch:
        batches = list(agent_pb2_grpc.AgentStub(ch).Profile(pb.ProfileRequest(job_id="c" * 32, inputs_npz=npz)))
    assert [b.seq for b in batches] == [1] and servicer.npz_bytes == [len(npz)]


def test_calls_beyond_the_concurrency_bound_are_refused_not_queued(served: Any) -> None:
    # Two threads: at most 2 x 4 = 8 calls in the server at once, the rest refused at once.
    servicer, port = served(max_workers=2)
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def describe() -> None:
        try:
            stub.Describe(pb.DescribeRequest(), timeout=60)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        with lock:
            codes.append(code)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        callers = [threading.Thread(target=describe) for _ in range(12)]
        for caller in callers:
            caller.start()
        wait_for(lambda: len(codes) >= 4, 30, "the calls beyond the bound to be refused")
        assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4
        servicer.release.set()
        for caller in callers:
            caller.join(60)
    assert codes.count(grpc.StatusCode.OK) == 8 and len(codes) == 12
    assert servicer.describing == 8  # the refused ones never reached the servicer


def test_every_grpc_option_key_in_the_code_is_one_grpc_knows() -> None:
    # gRPC ignores an option it does not know, silently: a misspelt key is a setting that never applies (the
    # host-ping allowance was one). The keys gRPC reads are strings in its core library.
    import grpc._cython.cygrpc as cygrpc

    library = Path(cygrpc.__file__).read_bytes()
    root = Path(__file__).resolve().parent.parent
    keys = {
        key
        for folder in ("agent", "host")
        for source in (root / folder).rglob("*.py")
        for key in re.findall(r"\"(grpc\.[a-z0-9_.]+)\"", source.read_text())
    }
    assert {"grpc.keepalive_time_ms", "grpc.http2.min_ping_interval_without_data_ms"} <= keys
    assert sorted(k for k in keys if k.encode() not in library) == []


def test_a_pool_no_larger_than_the_control_reserve_still_serves_exactly_one_stream(served: Any) -> None:
    servicer, port = served(max_workers=2)  # 2 threads, 4 kept for control RPCs: one stream all the same
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        first = stub.Attach(pb.AttachRequest(job_id="d" * 32), timeout=60)
        assert servicer.attached.wait(30)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Attach(pb.AttachRequest(job_id="e" * 32), timeout=60))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        servicer.release.set()
        assert [b.seq for b in first] == [1]


class _Runner:
    """Stands in for the agent's JobRunner: the server registers for its death."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def on_death(self, listener: Any) -> None:
        self.listeners.append(listener)


def test_health_says_serving_for_the_agent_and_the_server_until_the_job_runner_dies(served: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from agent.service.server import SERVICE_NAME

    runner = _Runner()
    HeldServicer.runner = runner  # type: ignore[attr-defined]
    try:
        _servicer, port = served()
    finally:
        del HeldServicer.runner  # type: ignore[attr-defined]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def status() -> list[int]:
            return [
                health.Check(health_pb2.HealthCheckRequest(service=s), timeout=10).status for s in (SERVICE_NAME, "")
            ]

        assert status() == [health_pb2.HealthCheckResponse.SERVING] * 2
        (died,) = runner.listeners
        died()
        assert status() == [health_pb2.HealthCheckResponse.NOT_SERVING] * 2
