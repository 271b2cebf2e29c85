"""A host's connection to one agent: describe, upload only when missing, profile, re-attach, cancel."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.fleet.client_key import client_key
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from protos.auth import CLIENT_KEY_METADATA

CHUNK_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 80 * 1024**2
#: HTTP/2 keepalive: ping every KEEPALIVE_TIME_S and drop the connection when a ping is not answered within
#: KEEPALIVE_TIMEOUT_S, so a half-open link (a frozen proxy, a board that lost power) fails the call within
#: about 15 s instead of holding it open forever. The agent's server permits pings this frequent
#: (agent/service/server.py). The timeout leaves a slow link room to return an ACK queued behind a large batch.
KEEPALIVE_TIME_S = 5.0
KEEPALIVE_TIMEOUT_S = 10.0
#: An upload's deadline: a fixed allowance plus its size at the slowest link we still call working.
UPLOAD_BASE_S = 120.0
UPLOAD_MIN_BYTES_PER_S = 256 * 1024


@dataclass(frozen=True)
class Credentials:
    """How the host proves itself to agents: a bearer token and/or TLS material."""

    token: str | None = None
    root_ca_pem: bytes | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    #: Which host this is, for job ownership (host/fleet/client_key.py); None = the key this machine keeps.
    host_key: str | None = None

    @property
    def tls(self) -> bool:
        return self.root_ca_pem is not None


class BatchStream(Protocol):
    """A server stream of measurement batches as gRPC returns it: iterate it, or cancel it from any thread."""

    def __iter__(self) -> Iterator[pb.MeasurementBatch]: ...

    def __next__(self) -> pb.MeasurementBatch: ...

    def cancel(self) -> bool: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


class AgentClient:
    """Thin wrapper over the generated stub. Every unary call and the upload take a deadline; the job streams
    (Profile, Attach) run as long as the job, guarded by keepalive here and a stall watchdog in the caller."""

    def __init__(self, address: str, credentials: Credentials | None = None, timeout_s: float = 30.0) -> None:
        self.address = address
        self.credentials = credentials or Credentials()
        self.timeout_s = timeout_s
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_http_proxy", 0),
            ("grpc.keepalive_time_ms", int(KEEPALIVE_TIME_S * 1000)),
            ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # A server-streaming call sends no data after its request: without this the client stops
            # pinging after two pings, and a stream waiting in the agent's queue is unguarded again.
            ("grpc.http2.max_pings_without_data", 0),
            # grpc 1.85 times every ping out by this (default 60 s), keepalive pings included.
            ("grpc.http2.ping_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
        ]
        creds = self.credentials
        if creds.tls:
            ssl = grpc.ssl_channel_credentials(
                root_certificates=creds.root_ca_pem,
                private_key=creds.client_key_pem,
                certificate_chain=creds.client_cert_pem,
            )
            self._channel = grpc.secure_channel(address, ssl, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = agent_pb2_grpc.AgentStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        auth = (("authorization", f"Bearer {creds.token}"),) if creds.token else ()
        # Jobs belong to (credential, host key): see agent/service/ownership.py.
        self._metadata = (*auth, (CLIENT_KEY_METADATA, creds.host_key or client_key()))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self, timeout_s: float = 3.0) -> str:
        """ "SERVING", "NOT_SERVING", or the gRPC status name when the agent cannot be reached."""
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as err:
            return err.code().name  # type: ignore[no-any-return, attr-defined]
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def describe(self) -> pb.DeviceInfo:
        return self._stub.Describe(pb.DescribeRequest(), timeout=self.timeout_s, metadata=self._metadata)

    def has_model(self, sha256: str) -> bool:
        reply = self._stub.HasModel(pb.HasModelRequest(sha256=sha256), timeout=self.timeout_s, metadata=self._metadata)
        return bool(reply.present)

    def upload(self, path: Path, sha256: str, model_format: str, timeout_s: float | None = None) -> int:
        """Stream the model in chunks; returns the bytes sent. The deadline grows with the model's size."""
        size = path.stat().st_size
        if timeout_s is None:
            timeout_s = UPLOAD_BASE_S + size / UPLOAD_MIN_BYTES_PER_S

        def chunks() -> Iterator[pb.ModelChunk]:
            with open(path, "rb") as fh:
                first = True
                while True:
                    data = fh.read(CHUNK_BYTES)
                    if not data and not first:
                        return
                    if first:
                        yield pb.ModelChunk(sha256=sha256, size_bytes=size, format=model_format, data=data)
                        first = False
                    else:
                        yield pb.ModelChunk(data=data)
                    if not data:
                        return

        reply = self._stub.UploadModel(chunks(), timeout=timeout_s, metadata=self._metadata)
        return 0 if reply.already_present else int(reply.received_bytes)

    def profile(self, request: pb.ProfileRequest, timeout_s: float | None = None) -> BatchStream:
        return self._stub.Profile(request, timeout=timeout_s, metadata=self._metadata)  # type: ignore[no-any-return]

    def attach(self, job_id: str, after_seq: int, timeout_s: float | None = None) -> BatchStream:
        return self._stub.Attach(  # type: ignore[no-any-return]
            pb.AttachRequest(job_id=job_id, after_seq=after_seq), timeout=timeout_s, metadata=self._metadata
        )

    def cancel(self, job_id: str, timeout_s: float | None = None) -> pb.CancelReply:
        return self._stub.Cancel(  # type: ignore[no-any-return]
            pb.CancelRequest(job_id=job_id), timeout=timeout_s or self.timeout_s, metadata=self._metadata
        )

    def list_jobs(self, include_acknowledged: bool = False, timeout_s: float | None = None) -> list[pb.JobSummary]:
        reply = self._stub.ListJobs(
            pb.ListJobsRequest(include_acknowledged=include_acknowledged),
            timeout=timeout_s or self.timeout_s,
            metadata=self._metadata,
        )
        return list(reply.jobs)

    def job_state(self, job_id: str, timeout_s: float) -> str | None:
        """The agent's state for one job ("queued", "running", …), or None when it does not list it."""
        for job in self.list_jobs(timeout_s=timeout_s):
            if job.job_id == job_id:
                return str(job.state)
        return None

    def acknowledge(self, job_id: str, seq: int) -> int:
        reply = self._stub.Acknowledge(
            pb.AcknowledgeRequest(job_id=job_id, seq=seq), timeout=self.timeout_s, metadata=self._metadata
        )
        return int(reply.pruned_batches)
