"""Bounds long-lived calls (streams) per client and in total, so control RPCs always find a free thread.

Each Profile, Attach, UploadModel or Health.Watch holds one of the server's threads for as long as it
lasts. Without a bound, one client holding as many streams as there are threads made Describe, Cancel
and Health time out. The bound leaves a reserve of threads for the short control calls (Describe,
HasModel, Cancel, ListJobs, Acknowledge, Health.Check); a stream over it is refused at once with
RESOURCE_EXHAUSTED.

Health.Watch is callable without the token (like Health.Check), so on an agent with a token a Watch that
does not carry it takes a slot from a small bucket of its own (OPEN_WATCH_STREAMS, served by threads added
to the pool for it): before, 12 unauthenticated Watch streams from one machine (every local user counts as
one client address) used up the token holder's slots and its UploadModel and Profile failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

#: Threads kept free of streams for control RPCs.
CONTROL_RESERVE_THREADS = 4
#: Streams one client (one peer address) may hold at once; a host needs one per job it follows.
DEFAULT_STREAMS_PER_CLIENT = 8
#: Methods that hold a thread for as long as they last.
STREAM_METHOD_SUFFIXES = ("/Profile", "/Attach", "/UploadModel")
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
#: Health.Watch streams open to callers without the token, in all (their own threads, never the token holders').
OPEN_WATCH_STREAMS = 2


def client_of(peer: str) -> str:
    """The client part of a gRPC peer string: "ipv4:10.0.0.5:41234" -> "ipv4:10.0.0.5" (no port)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, _port = rest.rpartition(":")
        return f"{kind}:{host}"
    return peer


class StreamLimits:
    """Counts open streams per client and in total; thread-safe."""

    def __init__(self, max_streams: int, max_per_client: int) -> None:
        if max_streams < 1 or max_per_client < 1:
            raise ValueError("stream limits must be at least 1")
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._total = 0

    @property
    def open_streams(self) -> int:
        with self._lock:
            return self._total

    def acquire(self, client: str) -> str | None:
        """Take a slot for `client`; returns None, or the one-line reason it was refused."""
        with self._lock:
            mine = self._open.get(client, 0)
            if mine >= self.max_per_client:
                return (
                    f"this client already has {mine} open streams, the most one client may hold"
                    f" ({self.max_per_client}): close one or wait for a job to end"
                )
            if self._total >= self.max_streams:
                return (
                    f"the agent is serving its maximum of {self.max_streams} streams:"
                    " try again when a job or upload has ended"
                )
            self._open[client] = mine + 1
            self._total += 1
            return None

    def release(self, client: str) -> None:
        with self._lock:
            left = self._open.get(client, 0) - 1
            if left > 0:
                self._open[client] = left
            else:
                self._open.pop(client, None)
            self._total -= 1


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """Wraps the stream methods' handlers so each call takes a slot when it starts and frees it when it ends."""

    def __init__(
        self,
        limits: StreamLimits,
        *,
        authenticated: Callable[[Any], bool] | None = None,
        open_limits: StreamLimits | None = None,
    ) -> None:
        """`authenticated(metadata)` tells token holders apart (None: no token, every caller is one);
        Health.Watch calls that fail it take their slot from `open_limits` instead of `limits`."""
        self.limits = limits
        self._authenticated = authenticated
        self.open_limits = open_limits or StreamLimits(OPEN_WATCH_STREAMS, OPEN_WATCH_STREAMS)

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not (method.endswith(STREAM_METHOD_SUFFIXES) or method == HEALTH_WATCH):
            return handler
        limits = self.limits
        if (
            method == HEALTH_WATCH
            and self._authenticated is not None
            and not self._authenticated(handler_call_details.invocation_metadata)
        ):
            limits = self.open_limits
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._limited(handler.unary_stream, limits))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._limited(handler.stream_unary, limits))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._limited(handler.stream_stream, limits))
        return handler

    @staticmethod
    def _limited(behavior: Callable[[Any, grpc.ServicerContext], Any], limits: StreamLimits) -> Callable[..., Any]:

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            # Runs in a pool thread when the call starts; the callback runs when the call ends, however it
            # ends (done, cancelled, deadline, client gone), even if the response iterator never started.
            client = client_of(context.peer())
            refusal = limits.acquire(client)
            if refusal is not None:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            if not context.add_callback(lambda: limits.release(client)):
                limits.release(client)  # the call has already ended
            return behavior(request, context)

        return limited
