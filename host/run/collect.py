"""Assembles a job's stream of MeasurementBatch into raw arrays, checking sequence numbers strictly."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from host.analysis.generation import TokenBlockError, TokenSeries, check_block
from host.run import validate
from host.store.rundata import DeviceRaw, PhaseSpan, Series
from protos import agent_pb2 as pb

PHASE_NAMES = {int(v): k.lower() for k, v in pb.Phase.items() if v}
SERIES_KINDS = {int(v): k.lower() for k, v in pb.SeriesKind.items() if v}


class SequenceError(Exception):
    """A batch arrived out of order: a gap (lost samples) or a repeat (duplicated samples)."""


class InvalidBatch(SequenceError):
    """A batch holds numbers the host refuses (host/run/validate.py), or more samples than the job may hold.

    A SequenceError, so every caller that refuses an out-of-order stream refuses this one the same way:
    that device's job fails with this one-line message, nothing of the batch is kept.
    """


@dataclass
class JobCollector:
    """Feed it every batch of one job, in order; it keeps raw arrays and the job's info and end."""

    device: str
    job_id: str = ""
    last_seq: int = 0
    info: pb.JobInfo | None = None
    end: pb.JobEnd | None = None
    _lat: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)
    _series: dict[str, tuple[Series, list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)
    _phases: dict[str, PhaseSpan] = field(default_factory=dict)
    measured: int = 0
    #: Running latency of the last measured block, for live displays.
    recent_latency_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    current_phase: str = "queued"
    #: The part (repetition) the newest phase event belongs to, and inferences measured per part: live displays.
    current_part: int = 0
    part_measured: dict[int, int] = field(default_factory=dict)
    #: Agent-clock end of the newest measured inference (the measure phase's elapsed time, for time left).
    last_measured_end_ns: int = 0
    #: The phase the job was in when Ctrl-C (or SIGTERM) stopped it, "" while it was not stopped.
    phase_at_stop: str = ""
    #: Samples (inference windows + sensor samples) this job may hold; more ends the job (bounded memory).
    max_samples: int = field(default_factory=validate.max_samples_per_job)
    samples: int = 0
    #: Per part of a multi-part job (agent/jobs/parts.py): measure/warmup windows, phases and the worker's JobInfo.
    _part_lat: dict[tuple[int, int], tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)
    _part_phases: dict[int, dict[str, PhaseSpan]] = field(default_factory=dict)
    infos: dict[int, pb.JobInfo] = field(default_factory=dict)
    #: A generative model's token timestamps (host/analysis/generation.py), kept as series with the raw samples.
    _tokens: TokenSeries = field(default_factory=TokenSeries.empty)

    def add(self, batch: pb.MeasurementBatch) -> None:
        if batch.seq != self.last_seq + 1:
            kind = "duplicate" if batch.seq <= self.last_seq else "gap"
            raise SequenceError(
                f"{kind} in the measurement stream of job {batch.job_id[:8]}:"
                f" expected batch {self.last_seq + 1}, got {batch.seq}"
            )
        self._check(batch)
        self.last_seq = batch.seq
        self.job_id = batch.job_id
        for event in batch.phases:
            name = PHASE_NAMES.get(int(event.phase), "unknown")
            span = self._phases.get(name)
            if span is None:
                span = self._phases[name] = PhaseSpan(name, int(event.start_ns), int(event.end_ns))
            span.start_ns = int(event.start_ns) or span.start_ns
            span.end_ns = int(event.end_ns) or span.end_ns
            span.detail = event.detail or span.detail
            span.count = int(event.count) or span.count
            self.current_phase = name
            self.current_part = int(event.part)
            part_phases = self._part_phases.setdefault(int(event.part), {})
            part_span = part_phases.setdefault(name, PhaseSpan(name, int(event.start_ns), int(event.end_ns)))
            part_span.start_ns = int(event.start_ns) or part_span.start_ns
            part_span.end_ns = int(event.end_ns) or part_span.end_ns
            part_span.detail = event.detail or part_span.detail
            part_span.count = int(event.count) or part_span.count
        for block in batch.latency:
            starts = np.asarray(block.start_ns, dtype=np.int64)
            ends = np.asarray(block.end_ns, dtype=np.int64)
            lists = self._lat.setdefault(int(block.phase), ([], []))
            lists[0].append(starts)
            lists[1].append(ends)
            part_lists = self._part_lat.setdefault((int(block.part), int(block.phase)), ([], []))
            part_lists[0].append(starts)
            part_lists[1].append(ends)
            if block.phase == pb.MEASURE:
                self.measured += len(starts)
                self.part_measured[int(block.part)] = self.part_measured.get(int(block.part), 0) + len(starts)
                self.recent_latency_ns = ends - starts
                if ends.size:
                    self.last_measured_end_ns = max(self.last_measured_end_ns, int(ends[-1]))
        for tblock in batch.tokens:
            self._tokens.add(tblock)
        for sblock in batch.series:
            entry = self._series.get(sblock.name)
            if entry is None:
                series = Series(sblock.name, SERIES_KINDS.get(int(sblock.kind), "unknown"), sblock.role, sblock.sensor)
                entry = self._series[sblock.name] = (series, [], [])
            entry[1].append(np.asarray(sblock.t_ns, dtype=np.int64))
            entry[2].append(np.asarray(sblock.value, dtype=np.float64))
        if batch.HasField("info"):
            if self.info is None:  # a multi-part job sends one per part: the first describes the job
                self.info = batch.info
            self.infos[int(batch.info.part)] = batch.info
        if batch.HasField("end"):
            self.end = batch.end

    def _check(self, batch: pb.MeasurementBatch) -> None:
        """InvalidBatch unless every number in the batch passes host/run/validate.py and the job stays under its cap.

        Checked whole before anything of it is kept, so a refused batch leaves the collector as it was.
        """
        where = f"job {batch.job_id[:8]}, batch {batch.seq}"
        added = validate.samples_in(batch)
        try:
            added += sum(check_block(t) for t in batch.tokens)
        except TokenBlockError as err:
            raise InvalidBatch(f"refused {where} from the agent: {err}") from err
        if self.samples + added > self.max_samples:
            raise InvalidBatch(
                f"the agent sent more than {self.max_samples} samples for {where} (the host's cap per job, "
                f"which keeps its memory bounded; set {validate.MAX_SAMPLES_ENV} to allow more)"
            )
        new_names = {s.name for s in batch.series} - self._series.keys()
        if len(self._series) + len(new_names) > validate.MAX_SERIES_PER_JOB:
            raise InvalidBatch(f"the agent sent more than {validate.MAX_SERIES_PER_JOB} sensor series for {where}")
        try:
            for event in batch.phases:
                validate.check_phase(event, PHASE_NAMES.get(int(event.phase), "unknown"))
            for block in batch.latency:
                validate.check_latency(
                    np.asarray(block.start_ns, dtype=np.int64),
                    np.asarray(block.end_ns, dtype=np.int64),
                    PHASE_NAMES.get(int(block.phase), "unknown"),
                )
            for sblock in batch.series:
                validate.check_series(
                    sblock.name,
                    SERIES_KINDS.get(int(sblock.kind), "unknown"),
                    np.asarray(sblock.t_ns, dtype=np.int64),
                    np.asarray(sblock.value, dtype=np.float64),
                )
            if batch.HasField("info"):
                validate.check_info(batch.info)
            if batch.HasField("end"):
                validate.check_end(batch.end)
        except validate.BatchError as err:
            raise InvalidBatch(f"refused {where} from the agent: {err}") from err
        self.samples += added

    def recent_power_w(self, window_ns: int = 1_000_000_000) -> float | None:
        """Mean board power over the last ``window_ns`` of samples, for live displays; None without a sensor.

        Reads only the newest chunks of each power/energy series, so its cost does not grow with the job.
        """
        from host.analysis.energy import ENERGY_KINDS, power_over_time_w

        recent = []
        for s, ts, vs in self._series.values():
            if s.kind not in ENERGY_KINDS or not ts:
                continue
            newest = max((int(t[-1]) for t in ts[-2:] if t.size), default=None)
            if newest is None:
                continue
            first = len(ts) - 1
            while first > 0 and (not ts[first].size or newest - int(ts[first][0]) < window_ns):
                first -= 1
            t_ns = np.concatenate(ts[first:])
            recent.append(Series(s.name, s.kind, s.role, s.sensor, t_ns, np.concatenate(vs[first:])))
        t_ns, watts = power_over_time_w(recent)
        if not watts.size:
            return None
        keep = t_ns >= t_ns.max() - window_ns
        return float(np.mean(watts[keep]))

    @property
    def finished(self) -> bool:
        return self.end is not None

    def latency_ns(self, phase: int = pb.MEASURE) -> np.ndarray:
        starts, ends = self._lat.get(phase, ([], []))
        if not starts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(ends) - np.concatenate(starts)

    def measure_elapsed_s(self) -> float | None:
        """Seconds the current part has measured for (agent clock), None before its measure phase."""
        span = self._part_phases.get(self.current_part, {}).get("measure")
        if span is None or not self.last_measured_end_ns:
            return None
        return max(0.0, (self.last_measured_end_ns - span.start_ns) / 1e9)

    def part_p50_ms(self, part: int) -> float | None:
        """The median of one part's measured inferences, ms (None when it measured none)."""
        starts, ends = self._part_lat.get((part, pb.MEASURE), ([], []))
        if not starts:
            return None
        return float(np.median(np.concatenate(ends) - np.concatenate(starts))) / 1e6

    @property
    def parts(self) -> list[int]:
        """Indices of the parts that reached a phase, in order."""
        return sorted(self._part_phases)

    def part_raw(self, part: int) -> DeviceRaw:
        """One part's measurements; series are cut to the part's span (its first phase start to its last end)."""
        phases = sorted(self._part_phases.get(part, {}).values(), key=lambda p: (p.start_ns, p.name))
        whole = self.raw()
        if not phases:
            return DeviceRaw(device=self.device)
        first_ns = min(p.start_ns for p in phases if p.start_ns) if any(p.start_ns for p in phases) else 0
        last_ns = max(max(p.end_ns, p.start_ns) for p in phases)
        series = []
        for s in whole.series:
            keep = (s.t_ns >= first_ns) & (s.t_ns <= last_ns)
            series.append(Series(s.name, s.kind, s.role, s.sensor, s.t_ns[keep], s.value[keep]))

        def cat(phase: int) -> tuple[np.ndarray, np.ndarray]:
            starts, ends = self._part_lat.get((part, phase), ([], []))
            if not starts:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            return np.concatenate(starts).astype(np.int64), np.concatenate(ends).astype(np.int64)

        m_start, m_end = cat(pb.MEASURE)
        w_start, w_end = cat(pb.WARMUP)
        return DeviceRaw(self.device, m_start, m_end, w_start, w_end, series, phases)

    def raw(self) -> DeviceRaw:
        def cat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype=dtype)

        m_start, m_end = self._lat.get(pb.MEASURE, ([], []))
        w_start, w_end = self._lat.get(pb.WARMUP, ([], []))
        series = []
        for s, ts, vs in self._series.values():
            t_ns = cat(ts, np.int64)
            order = np.argsort(t_ns, kind="stable")
            series.append(Series(s.name, s.kind, s.role, s.sensor, t_ns[order], cat(vs, np.float64)[order]))
        series += self._tokens.series()
        phases = sorted(self._phases.values(), key=lambda p: (p.start_ns, p.name))
        return DeviceRaw(
            device=self.device,
            start_ns=cat(m_start, np.int64),
            end_ns=cat(m_end, np.int64),
            warmup_start_ns=cat(w_start, np.int64),
            warmup_end_ns=cat(w_end, np.int64),
            series=series,
            phases=phases,
        )
