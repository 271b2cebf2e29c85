"""A fake agent on a real gRPC server (localhost:0): it answers Describe and HasModel like a board that has
every model, and its Profile and Attach streams replay scripted batches, so a test can feed a real host
streams no healthy agent sends (one that ends without a JobEnd, a gap or a repeat in the sequence).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc

from agent.service.server import create_server
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc

#: Builds the batches of one job from its job_id: what Profile replays, and Attach after `after_seq`.
#: A generator may block between batches to hold a stream open and silent.
Script = Callable[[str], Iterable[pb.MeasurementBatch]]

_T0_NS = 1_000_000_000_000


def measure_batch(job_id: str, seq: int, n: int = 10, first: int = 0) -> pb.MeasurementBatch:
    """A batch of `n` measured inferences of 2 ms each, the `first`-th onwards, and their memory samples."""
    batch = pb.MeasurementBatch(job_id=job_id, seq=seq)
    starts = [_T0_NS + (first + i) * 3_000_000 for i in range(n)]
    batch.latency.add(phase=pb.MEASURE, start_ns=starts, end_ns=[s + 2_000_000 for s in starts])
    batch.series.add(
        name="worker", kind=pb.RSS_BYTES, role="", sensor="psutil", t_ns=starts, value=[50e6 + i for i in range(n)]
    )
    return batch


def job_batches(job_id: str, seqs: Sequence[int], *, end: bool) -> list[pb.MeasurementBatch]:
    """Batches numbered `seqs`: the first starts the job (queued, prepare, info), each carries 10 inferences,
    and with `end` the last one closes it with JobEnd OK."""
    batches = []
    for i, seq in enumerate(seqs):
        batch = measure_batch(job_id, seq, first=10 * i)
        if i == 0:
            batch.phases.add(phase=pb.QUEUED, start_ns=_T0_NS - 3_000_000, end_ns=_T0_NS - 2_000_000)
            batch.phases.add(phase=pb.PREPARE, start_ns=_T0_NS - 2_000_000, end_ns=_T0_NS - 1_000_000)
            batch.phases.add(phase=pb.MEASURE, start_ns=_T0_NS)
            batch.info.CopyFrom(
                pb.JobInfo(runtime="onnxruntime", runtime_version="0", profile="generic-linux", threads=1)
            )
        batches.append(batch)
    if end:
        last = batches[-1]
        n = 10 * len(seqs)
        last.phases.add(phase=pb.MEASURE, start_ns=_T0_NS, end_ns=_T0_NS + n * 3_000_000, count=n)
        last.end.CopyFrom(pb.JobEnd(status=pb.JobEnd.OK, measured=n, peak_rss_bytes=60_000_000))
    return batches


@dataclass
class FakeAgent(agent_pb2_grpc.AgentServicer):
    """Replays `script` on Profile and Attach; records what the host asked for."""

    script: Script
    #: What ListJobs answers.
    jobs: list[pb.JobSummary] = field(default_factory=list)
    profiles: int = 0
    attaches: list[int] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DeviceInfo:
        return pb.DeviceInfo(hostname="fake", profile="generic-linux", agent_version="0.0.0", cpu_cores=1)

    def HasModel(self, request: pb.HasModelRequest, context: grpc.ServicerContext) -> pb.HasModelReply:
        return pb.HasModelReply(present=True, size_bytes=1)

    def Profile(self, request: pb.ProfileRequest, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        with self._lock:
            self.profiles += 1
        yield from self.script(request.job_id)

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        with self._lock:
            self.attaches.append(int(request.after_seq))
        for batch in self.script(request.job_id):
            if batch.seq > request.after_seq:
                yield batch

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsReply:
        return pb.ListJobsReply(jobs=self.jobs)

    def Acknowledge(self, request: pb.AcknowledgeRequest, context: grpc.ServicerContext) -> pb.AcknowledgeReply:
        with self._lock:
            self.acknowledged.append(request.job_id)
        return pb.AcknowledgeReply()


class FakeAgentServer:
    """A FakeAgent served on 127.0.0.1:<free port> by the agent's own server factory; `stop()` ends it.

    `health` is its grpc.health servicer: a test sets NOT_SERVING on "" to play an agent whose runner died.
    """

    def __init__(self, script: Script) -> None:
        self.servicer = FakeAgent(script)
        self.server, self.port, self.health = create_server("127.0.0.1:0", self.servicer)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None)
