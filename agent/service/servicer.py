"""The Agent gRPC servicer: thin, it translates domain errors into status codes and delegates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from agent.errors import AgentError, Busy, InvalidInput, ModelNotFound, ModelTooLarge, RuntimeMissing, UploadCorrupt
from agent.jobs.job import RunnerStopped
from agent.jobs.runner import JobRunner
from agent.service.membership import MembershipProver, ProveRefused
from agent.service.ownership import caller_owner, may_access
from agent.storage.journal import TERMINAL, JobAbandoned, JobRow, Journal, UnknownJob
from agent.storage.model_cache import ModelCache
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
    (RunnerStopped, grpc.StatusCode.FAILED_PRECONDITION),
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
        self,
        describe: Callable[[], pb.DeviceInfo],
        cache: ModelCache,
        journal: Journal,
        runner: JobRunner,
        prover: MembershipProver | None = None,
    ) -> None:
        self._describe = describe
        self.cache = cache
        self.journal = journal
        self.runner = runner
        self.prover = prover

    def _check_owner(self, job_id: str, context: grpc.ServicerContext) -> None:
        """PERMISSION_DENIED for another credential's job (why not NOT_FOUND: agent/service/ownership.py)."""
        try:
            owner = self.journal.job(job_id).owner
        except UnknownJob as err:
            _abort(context, err)
        if not may_access(owner, caller_owner(context)):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"job {job_id[:40]} was started by another host or credential: only its owner may read,"
                " cancel or acknowledge it",
            )

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:
        info = self._describe()
        info.cache_bytes = self.cache.total_bytes()
        info.cache_limit_bytes = self.cache.limit_bytes
        info.queued_jobs = self.runner.queued
        return info

    def HasModel(self, request: pb.HasModelRequest, context: grpc.ServicerContext) -> pb.HasModelReply:
        try:
            size = self.cache.has(request.sha256, lease=True)  # kept until the Profile that should follow
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
            # An existing job_id re-attaches from the start, so retries are safe: for its owner only.
            self.runner.submit(request, owner=caller_owner(context))
        except Exception as err:
            _abort(context, err)
        self._check_owner(request.job_id, context)
        yield from self._stream(request.job_id, 0, context)

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        self._check_owner(request.job_id, context)
        yield from self._stream(request.job_id, request.after_seq, context)

    def _stream(self, job_id: str, after_seq: int, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        try:
            for _seq, payload in self.journal.tail(job_id, after_seq, stopped=lambda: not context.is_active()):
                yield pb.MeasurementBatch.FromString(payload)
        except UnknownJob as err:
            _abort(context, err)
        except JobAbandoned as err:  # INTERNAL: the host re-attaches, and gets the batches once journaled
            context.abort(grpc.StatusCode.INTERNAL, str(err))
        except ValueError as err:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, str(err))

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelReply:
        self._check_owner(request.job_id, context)
        try:
            state = self.runner.cancel(request.job_id)
        except Exception as err:
            _abort(context, err)
        return pb.CancelReply(cancelled=state == "cancelling", state=state)

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsReply:
        rows = self.journal.jobs(include_acknowledged=request.include_acknowledged)
        return pb.ListJobsReply(jobs=job_summaries(rows, caller_owner(context)))

    def Acknowledge(self, request: pb.AcknowledgeRequest, context: grpc.ServicerContext) -> pb.AcknowledgeReply:
        self._check_owner(request.job_id, context)
        try:
            pruned = self.journal.acknowledge(request.job_id, request.seq)
        except Exception as err:
            _abort(context, err)
        return pb.AcknowledgeReply(pruned_batches=pruned)

    def Prove(self, request: pb.ProveRequest, context: grpc.ServicerContext) -> pb.ProveReply:
        prover = self.prover
        if prover is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this agent cannot prove fleet membership")
            raise AssertionError("unreachable: context.abort raises")
        try:
            return pb.ProveReply(mac=prover.answer(request.nonce, request.dialed_address, context.peer()))
        except ProveRefused as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        raise AssertionError("unreachable: context.abort raises")


def job_summaries(rows: list[JobRow], caller: str) -> list[pb.JobSummary]:
    """The caller's own jobs in full; others' unfinished ones as anonymous queue entries (state, position)."""
    waiting = sorted((r for r in rows if r.state not in TERMINAL), key=lambda r: (r.state != "running", r.created))
    position = {r.job_id: i for i, r in enumerate(waiting, start=1)}
    summaries = []
    for r in rows:
        if may_access(r.owner, caller):
            summaries.append(
                pb.JobSummary(
                    job_id=r.job_id,
                    state=r.state,
                    model_sha256=r.model_sha256,
                    last_seq=r.last_seq,
                    acked_seq=r.acked_seq,
                    created_unix_s=r.created,
                    finished_unix_s=r.finished or 0.0,
                    owned=True,
                    queue_position=position.get(r.job_id, 0),
                )
            )
        elif r.job_id in position:
            summaries.append(pb.JobSummary(state=r.state, queue_position=position[r.job_id]))
    return summaries


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
