"""The Agent gRPC servicer: thin, it translates domain errors into status codes and delegates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from agent.errors import AgentError, Busy, InvalidInput, ModelNotFound, ModelTooLarge, RuntimeMissing, UploadCorrupt
from agent.jobs import JobRunner
from agent.journal import Journal, UnknownJob
from agent.model_cache import ModelCache
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc

log = logging.getLogger(__name__)

#: Upload chunks larger than this are refused (the host sends 1 MiB).
MAX_CHUNK_BYTES = 4 * 1024**2

_CODES: list[tuple[type[AgentError], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (UploadCorrupt, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (ModelTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Busy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RuntimeMissing, grpc.StatusCode.FAILED_PRECONDITION),
]


def _abort(context: grpc.ServicerContext, err: Exception) -> NoReturn:
    if isinstance(err, UnknownJob):
        context.abort(grpc.StatusCode.NOT_FOUND, f"no job {str(err.args[0])[:40]} on this agent")
    for cls, code in _CODES:
        if isinstance(err, cls):
            context.abort(code, str(err))
    log.error("internal error", exc_info=err)
    context.abort(grpc.StatusCode.INTERNAL, f"agent internal error: {type(err).__name__}: {err}")
    raise AssertionError("unreachable: context.abort raises")


class AgentServicer(agent_pb2_grpc.AgentServicer):
    def __init__(
        self, describe: Callable[[], pb.DeviceInfo], cache: ModelCache, journal: Journal, runner: JobRunner
    ) -> None:
        self._describe = describe
        self.cache = cache
        self.journal = journal
        self.runner = runner

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:
        info = self._describe()
        info.cache_bytes = self.cache.total_bytes()
        info.cache_limit_bytes = self.cache.limit_bytes
        info.queued_jobs = self.runner.queued
        return info

    def HasModel(self, request: pb.HasModelRequest, context: grpc.ServicerContext) -> pb.HasModelReply:
        try:
            size = self.cache.has(request.sha256)
        except AgentError as err:
            _abort(context, err)
        return pb.HasModelReply(present=size is not None, size_bytes=size or 0)

    def UploadModel(self, request_iterator: Iterator[pb.ModelChunk], context: grpc.ServicerContext) -> pb.UploadReply:
        try:
            first = next(request_iterator)
        except StopIteration:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "empty upload: the first chunk must carry sha256 and size_bytes"
            )

        def chunks() -> Iterator[bytes]:
            for chunk in _chain(first, request_iterator):
                if len(chunk.data) > MAX_CHUNK_BYTES:
                    raise InvalidInput(f"upload chunk of {len(chunk.data)} bytes exceeds {MAX_CHUNK_BYTES}")
                yield chunk.data

        try:
            result = self.cache.store(first.sha256, first.size_bytes, chunks())
        except Exception as err:
            _abort(context, err)
        return pb.UploadReply(
            sha256=result.sha256, received_bytes=result.received_bytes, already_present=result.already_present
        )

    def Profile(self, request: pb.ProfileRequest, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        try:
            self.runner.submit(request)  # an existing job_id re-attaches from the start: retries are safe
        except Exception as err:
            _abort(context, err)
        yield from self._stream(request.job_id, 0, context)

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        yield from self._stream(request.job_id, request.after_seq, context)

    def _stream(self, job_id: str, after_seq: int, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        try:
            for _seq, payload in self.journal.tail(job_id, after_seq, stopped=lambda: not context.is_active()):
                yield pb.MeasurementBatch.FromString(payload)
        except UnknownJob as err:
            _abort(context, err)
        except ValueError as err:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, str(err))

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelReply:
        try:
            state = self.runner.cancel(request.job_id)
        except Exception as err:
            _abort(context, err)
        return pb.CancelReply(cancelled=state == "cancelling", state=state)

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsReply:
        rows = self.journal.jobs(include_acknowledged=request.include_acknowledged)
        return pb.ListJobsReply(
            jobs=[
                pb.JobSummary(
                    job_id=r.job_id,
                    state=r.state,
                    model_sha256=r.model_sha256,
                    last_seq=r.last_seq,
                    acked_seq=r.acked_seq,
                    created_unix_s=r.created,
                    finished_unix_s=r.finished or 0.0,
                )
                for r in rows
            ]
        )

    def Acknowledge(self, request: pb.AcknowledgeRequest, context: grpc.ServicerContext) -> pb.AcknowledgeReply:
        try:
            pruned = self.journal.acknowledge(request.job_id, request.seq)
        except Exception as err:
            _abort(context, err)
        return pb.AcknowledgeReply(pruned_batches=pruned)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
