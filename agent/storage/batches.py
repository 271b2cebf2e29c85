"""Collects a job's measurements as they arrive and writes them to the journal as numbered batches."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agent.storage.journal import Journal, JournalWriteError
from protos import agent_pb2 as pb

if TYPE_CHECKING:
    import numpy as np

    from agent.device.sampler import SeriesChunk

PHASE_BY_NAME = {
    "queued": pb.QUEUED,
    "prepare": pb.PREPARE,
    "settle": pb.SETTLE,
    "idle": pb.IDLE,
    "warmup": pb.WARMUP,
    "measure": pb.MEASURE,
    "finish": pb.FINISH,
}


def series_kind(kind: str) -> int:
    """ "power_mw" -> pb.POWER_MW."""
    return int(pb.SeriesKind.Value(kind.upper()))


class BatchEmitter:
    """Thread-safe accumulator; `flush` journals whatever is pending as the next batch."""

    def __init__(self, journal: Journal, job_id: str) -> None:
        self.journal = journal
        self.job_id = job_id
        self._lock = threading.Lock()
        self._pending = pb.MeasurementBatch(job_id=job_id)
        self._empty = True
        self.latency_counts: dict[int, int] = {}
        #: The part of a multi-part job (agent/jobs/parts.py) that phase events, latency blocks and info belong to.
        self.part = 0

    def phase(self, name: str, start_ns: int, end_ns: int = 0, detail: str = "", count: int = 0) -> None:
        with self._lock:
            self._pending.phases.add(
                phase=PHASE_BY_NAME[name], start_ns=start_ns, end_ns=end_ns, detail=detail, count=count, part=self.part
            )
            self._empty = False

    def latency(self, phase: int, start_ns: np.ndarray, end_ns: np.ndarray) -> None:
        with self._lock:
            block = self._pending.latency.add(phase=phase, part=self.part)
            block.start_ns.extend(start_ns.tolist())
            block.end_ns.extend(end_ns.tolist())
            self.latency_counts[phase] = self.latency_counts.get(phase, 0) + len(start_ns)
            self._empty = False

    def series(self, chunks: Iterable[SeriesChunk]) -> None:
        with self._lock:
            for chunk in chunks:
                block = self._pending.series.add(
                    name=chunk.name, kind=series_kind(chunk.kind), role=chunk.role, sensor=chunk.sensor
                )
                block.t_ns.extend(chunk.t_ns.tolist())
                block.value.extend(chunk.value.tolist())
                self._empty = False

    def tokens(self, event: dict[str, Any]) -> None:
        """One generation's token timestamps (a "tokens" event of agent/inference/generation.py) as a TokenBlock."""
        with self._lock:
            block = self._pending.tokens.add(
                phase=int(event["phase"]),
                part=self.part,
                prompt_tokens=int(event["prompt_tokens"]),
                start_ns=int(event["start_ns"]),
                prefill_end_ns=int(event["prefill_end_ns"]),
            )
            block.token_end_ns.extend(int(t) for t in event["token_end_ns"])
            self._empty = False

    def info(self, info: pb.JobInfo) -> None:
        with self._lock:
            self._pending.info.CopyFrom(info)
            self._pending.info.part = self.part
            self._empty = False

    def end(self, end: pb.JobEnd) -> None:
        with self._lock:
            self._pending.end.CopyFrom(end)
            self._empty = False

    def flush(self) -> int | None:
        """Journal the pending batch (if any); returns its sequence number."""
        with self._lock:
            if self._empty:
                return None
            batch = self._pending
            self._pending = pb.MeasurementBatch(job_id=self.job_id)
            self._empty = True

            def build(seq: int) -> bytes:
                batch.seq = seq
                return batch.SerializeToString()

            # Under the lock: batches reach the journal in the order they were assembled.
            try:
                return self.journal.append(self.job_id, build)
            except JournalWriteError:
                # Nothing was written (the journal rolled back): keep the batch for the next flush, so a
                # brief disk-full delays measurements instead of losing them under contiguous seqs.
                batch.seq = 0
                self._pending = batch
                self._empty = False
                raise


def job_end(status: int, *, error: str = "", kind: str = "", phase: str = "", **fields: Any) -> pb.JobEnd:
    end = pb.JobEnd(status=status, error=error, error_kind=kind, phase=phase)  # type: ignore[arg-type]
    for key, value in fields.items():
        if key in ("op_by_type", "op_top_nodes"):
            getattr(end, key).extend(pb.OpStat(**row) for row in value)
        elif key == "notes":
            end.notes.update(value)
        else:
            setattr(end, key, value)
    return end
