"""The agent's gRPC server: a bounded thread pool, bearer-token auth, optional (mutual) TLS, health."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.jobs.validation import MAX_NPZ_BYTES
from agent.service.servicer import MAX_CHUNK_BYTES
from agent.service.stream_limits import (
    CONTROL_RESERVE_THREADS,
    DEFAULT_STREAMS_PER_CLIENT,
    OPEN_WATCH_STREAMS,
    StreamLimitInterceptor,
    StreamLimits,
)
from protos import agent_pb2_grpc

#: The largest message the agent sends (a measurement batch stays far below it).
MAX_MESSAGE_BYTES = 80 * 1024**2
#: What a client may send in one message: the largest the servicer accepts (an inputs .npz in a
#: ProfileRequest, an upload chunk) plus room for the other fields. gRPC refuses a longer message
#: with RESOURCE_EXHAUSTED from its length prefix, before the servicer buffers any of it.
MAX_RECEIVE_MESSAGE_BYTES = max(MAX_CHUNK_BYTES, MAX_NPZ_BYTES) + 1024**2
SERVICE_NAME = "edgeprof.v1.Agent"
#: Methods callable without the token: Prove is how a stranger-to-the-host shows it holds the token.
OPEN_METHODS = frozenset({f"/{SERVICE_NAME}/Prove"})


@dataclass(frozen=True)
class Keepalive:
    """HTTP/2 pings, both ways (tests scale them down to see them act within a test's time)."""

    #: The agent pings each host this often, so a stream to a host that vanished frees its thread ...
    ping_interval_ms: int = 30_000
    #: ... when a ping is not answered within this (grpc 1.85 waits 60 s for any ping's ACK otherwise).
    ping_timeout_ms: int = 10_000
    #: Hosts ping every 5 s (host/fleet/client.py) to notice half-open links, also while a stream waits in the
    #: queue with no data: allow pings this close rather than answer GOAWAY "too_many_pings".
    min_host_ping_interval_ms: int = 4_000


@dataclass(frozen=True)
class TlsFiles:
    cert_pem: bytes
    key_pem: bytes
    #: CA bundle that client certificates must chain to (mutual TLS), or None for server-only TLS.
    client_ca_pem: bytes | None = None


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Rejects calls without `authorization: Bearer <token>`; the health service stays open."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "this agent requires a bearer token: give the host --token-file,"
                " EDGEPROF_TOKEN or the fleet's token_file",
            )

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream_in = grpc.stream_unary_rpc_method_handler(deny)
        self._deny_stream_out = grpc.unary_stream_rpc_method_handler(deny)

    def authenticated(self, metadata: Any) -> bool:
        """Whether the call's metadata carries the token."""
        given = b""
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
        # Constant-time: the comparison must not leak how much of a guessed token was right.
        return hmac.compare_digest(given, self._expected)

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        method = handler_call_details.method
        if method.startswith("/grpc.health.v1.Health/") or method in OPEN_METHODS:
            return continuation(handler_call_details)
        if self.authenticated(handler_call_details.invocation_metadata):
            return continuation(handler_call_details)
        method = handler_call_details.method
        if method.endswith("/UploadModel"):
            return self._deny_stream_in
        if method.endswith(("/Profile", "/Attach")):
            return self._deny_stream_out
        return self._deny_unary


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen '{address}' must be HOST:PORT, e.g. 127.0.0.1:50051 or 0.0.0.0:50051")
    return host or "0.0.0.0", int(port)


def create_server(
    address: str,
    servicer: agent_pb2_grpc.AgentServicer,
    *,
    token: str | None = None,
    tls: TlsFiles | None = None,
    max_workers: int = 16,
    max_streams: int | None = None,
    max_streams_per_client: int = DEFAULT_STREAMS_PER_CLIENT,
    keepalive: Keepalive = Keepalive(),
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Build and start a server on `address` ("127.0.0.1:0" picks a free port). Returns it and the port.

    Streams are bounded (agent/service/stream_limits.py): by default all but CONTROL_RESERVE_THREADS threads. With a
    token, Health.Watch streams without it get OPEN_WATCH_STREAMS threads of their own, added to the pool.
    """
    limits = StreamLimits(
        max_streams if max_streams is not None else max(1, max_workers - CONTROL_RESERVE_THREADS),
        max_streams_per_client,
    )
    # Auth first: a call without the token is refused before it can take a stream slot.
    auth = TokenAuthInterceptor(token) if token else None
    interceptors: list[grpc.ServerInterceptor] = [auth] if auth else []
    interceptors.append(StreamLimitInterceptor(limits, authenticated=auth.authenticated if auth else None))
    threads = max_workers + (OPEN_WATCH_STREAMS if auth else 0)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            # The C-core name is GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, its string this (an
            # unknown key is ignored, and the 5-minute default sent a waiting host GOAWAY "too_many_pings").
            ("grpc.http2.min_ping_interval_without_data_ms", keepalive.min_host_ping_interval_ms),
            ("grpc.keepalive_time_ms", keepalive.ping_interval_ms),
            ("grpc.keepalive_timeout_ms", keepalive.ping_timeout_ms),
            ("grpc.http2.ping_timeout_ms", keepalive.ping_timeout_ms),
        ],
        maximum_concurrent_rpcs=threads * 4,
    )
    agent_pb2_grpc.add_AgentServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key_pem, tls.cert_pem)],
                root_certificates=tls.client_ca_pem,
                require_client_auth=tls.client_ca_pem is not None,
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio >= 1.60 raises "Failed to bind to address" instead of returning 0
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {address}: the address is in use (another agent?) or not on this machine;"
            " pick another --listen HOST:PORT"
        )
    server.start()
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    runner = getattr(servicer, "runner", None)  # the agent's JobRunner; absent in a servicer without jobs
    if runner is not None:

        def runner_died() -> None:  # jobs can no longer run: say so to health checks and load balancers
            for service in (SERVICE_NAME, ""):
                health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

        runner.on_death(runner_died)
    return server, port, health_servicer
