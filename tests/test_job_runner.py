"""The job runner on its own (agent/jobs/): a real journal, model cache and worker subprocesses running
SqueezeNet in ONNX Runtime, driven without gRPC so each promise is checked where it is made and the tests
stay fast enough to run against every mutant of the module (bench/mutation.py).

Board sensors are small Sensor objects the test controls (a thermal zone at a chosen temperature, a power
rail at a fixed draw): the runner's settle, idle and notes logic is what is under test, not a backend.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import psutil
import pytest
from faultlib import SQUEEZENET, profile_request, sha256_bytes, wait_for

from agent.device.sampler import DEFAULT_RATE_HZ
from agent.errors import SensorError
from agent.jobs import execution as job_execution
from agent.jobs import job as job_data
from agent.jobs import runner as job_runner
from agent.sensors.base import POWER_MW, TEMP_C, Channel, Sensor
from agent.sensors.memory import ProcessMemorySensor
from agent.storage.journal import TERMINAL, JobAbandoned, Journal, JournalWriteError, UnknownJob
from agent.storage.model_cache import ModelCache
from protos import agent_pb2 as pb

MODEL = onnx.load(SQUEEZENET)
#: SqueezeNet's graph inputs that are not initializers (what the worker feeds), and its outputs.
INPUTS = [i for i in MODEL.graph.input if i.name not in {t.name for t in MODEL.graph.initializer}]
OUTPUTS = [o.name for o in MODEL.graph.output]


def _arrays(data: np.ndarray) -> dict[str, Any]:
    """The model's one input, by name, for np.savez."""
    return {INPUTS[0].name: data}


class Thermal(Sensor):
    """A thermal zone the test sets; `temp_c = None` makes every read fail (a flaky zone)."""

    backend = "test-thermal"

    def __init__(self, temp_c: float | None, trip_temp_c: float | None = None) -> None:
        self.temp_c = temp_c
        self.trip_temp_c = trip_temp_c

    def channels(self) -> Sequence[Channel]:
        return [Channel("zone0", TEMP_C)]

    def read(self) -> Sequence[float]:
        if self.temp_c is None:
            raise SensorError("zone0: read failed")
        return [self.temp_c]


class Rail(Sensor):
    """A power rail drawing a fixed 2 W."""

    backend = "test-rail"

    def channels(self) -> Sequence[Channel]:
        return [Channel("board", POWER_MW)]

    def read(self) -> Sequence[float]:
        return [2000.0]


class Board:
    """A runner on a fresh journal and cache, with SqueezeNet uploaded; stopped at the end of the test."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.journal = Journal(root / "journal.db")
        self.cache = ModelCache(root / "models")
        data = SQUEEZENET.read_bytes()
        self.sha = sha256_bytes(data)
        self.cache.store(self.sha, len(data), [data])
        self.memory_pids: list[int] = []
        settings.setdefault("profile", "test-board")
        settings.setdefault("describe", lambda: pb.DeviceInfo(hostname="bench-7", cpu_cores=2))
        settings.setdefault("memory_sensor", self._memory_sensor)
        self.settings = job_data.JobSettings(**settings)
        # Nested: the runner makes every missing folder of its work directory.
        self.work_dir = root / "data" / "jobs"
        self.runner = job_runner.JobRunner(self.journal, self.cache, self.settings, self.work_dir)

    def _memory_sensor(self, pid: int) -> Sensor:
        self.memory_pids.append(pid)
        return ProcessMemorySensor(pid)

    def submit(self, **fields: Any) -> pb.ProfileRequest:
        request = profile_request(self.sha, **fields)
        assert self.runner.submit(request)
        return request

    def batches(self, job_id: str) -> list[pb.MeasurementBatch]:
        return [pb.MeasurementBatch.FromString(p) for _, p in self.journal.read(job_id, 0, 1_000_000)]

    def wait_end(self, job_id: str, timeout_s: float = 60) -> pb.JobEnd:
        wait_for(lambda: self.journal.job(job_id).state in TERMINAL, timeout_s, f"job {job_id} to end")
        ends = [b.end for b in self.batches(job_id) if b.HasField("end")]
        assert len(ends) == 1, ends
        return ends[0]

    def phases(self, job_id: str, name: str) -> list[pb.PhaseEvent]:
        wanted = pb.Phase.Value(name.upper())
        return [p for b in self.batches(job_id) for p in b.phases if p.phase == wanted]

    def info(self, job_id: str) -> pb.JobInfo:
        infos = [b.info for b in self.batches(job_id) if b.HasField("info")]
        assert len(infos) == 1
        return infos[0]

    def measured(self, job_id: str) -> int:
        blocks = [block for b in self.batches(job_id) for block in b.latency if block.phase == pb.MEASURE]
        return sum(len(block.start_ns) for block in blocks)

    def started_measuring(self, job_id: str) -> bool:
        return self.measured(job_id) > 0

    def log_path(self, job_id: str) -> Path:
        return self.work_dir / f"{job_id}.log"


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Any]:
    boards: list[Board] = []

    def make(**settings: Any) -> Board:
        boards.append(Board(tmp_path / f"board{len(boards)}", **settings))
        return boards[-1]

    yield make
    for b in boards:
        b.runner.shutdown()
        b.journal.close()


def test_a_job_reports_what_the_worker_loaded_and_measured(board: Any) -> None:
    b = board(providers=("CPUExecutionProvider",))
    request = b.submit(runs=7, warmup=3, threads=1)
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.OK, end.error
    # Warmup runs at least the 3 asked for, then on until latency is stable.
    warmed = sum(len(k.start_ns) for x in b.batches(request.job_id) for k in x.latency if k.phase == pb.WARMUP)
    assert end.measured == 7 == b.measured(request.job_id) and end.warmup == warmed >= 3
    assert end.first_inference_ns > 0 and end.peak_rss_bytes > 10e6
    assert end.notes["warmup_stable"] in ("true", "false") and "trip_temp_c" not in end.notes
    info = b.info(request.job_id)
    assert (info.runtime, info.runtime_version) == ("onnxruntime", onnxruntime.__version__)
    assert list(info.execution_providers) == ["CPUExecutionProvider"]
    assert info.load_time_ns > 0 and info.threads == 1 and info.inputs_source == "random"
    assert (info.profile, info.sample_rate_hz) == ("test-board", DEFAULT_RATE_HZ)
    assert [(t.name, t.dtype) for t in info.inputs] == [(i.name, "float32") for i in INPUTS]
    assert list(info.inputs[0].shape) == [d.dim_value for d in INPUTS[0].type.tensor_type.shape.dim]
    assert [t.name for t in info.outputs] == OUTPUTS and all(t.dtype for t in info.outputs)
    assert (info.device.hostname, info.device.cpu_cores) == ("bench-7", 2)
    # The memory series follows the job's worker, not the agent.
    assert info.worker_pid > 0 and info.worker_pid != os.getpid() and b.memory_pids == [info.worker_pid]
    # Queued when submitted to an idle board: no position; and again, ended, when it left the queue.
    queued = b.phases(request.job_id, "queued")
    assert [p.detail for p in queued] == ["", ""] and all(0 < p.start_ns == queued[0].start_ns for p in queued)
    prepares = b.phases(request.job_id, "prepare")  # when it starts, and again when it ends
    assert len(prepares) == 2 and all(0 < p.start_ns == prepares[0].start_ns for p in prepares)
    assert prepares[-1].end_ns > prepares[-1].start_ns
    # Each phase's count is the worker's; warmup says whether latency settled, as the end's note does.
    (warmup,) = [p for p in b.phases(request.job_id, "warmup") if p.end_ns]
    assert warmup.count == warmed and warmup.end_ns > warmup.start_ns > 0
    stable = {"true": "stable", "false": "not stable: time cap reached"}[end.notes["warmup_stable"]]
    assert warmup.detail == stable
    assert [(p.count, p.detail) for p in b.phases(request.job_id, "measure") if p.end_ns] == [(7, "")]
    assert b.journal.job(request.job_id).state == "ok"
    assert not b.log_path(request.job_id).exists()  # a finished job's files are removed


def test_runs_zero_means_the_default_hundred_and_npz_inputs_are_used_then_removed(board: Any) -> None:
    b = board()
    npz = io.BytesIO()
    shape = [d.dim_value for d in INPUTS[0].type.tensor_type.shape.dim]
    np.savez(npz, **_arrays(np.zeros(shape, dtype=np.float32)))
    request = b.submit(runs=0, warmup=0, inputs_npz=npz.getvalue())
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.OK, end.error
    assert end.measured == 100 and b.measured(request.job_id) == 100
    assert b.info(request.job_id).inputs_source == "npz"
    assert not (b.work_dir / f"{request.job_id}.npz").exists()


@pytest.mark.parametrize(
    ("sig", "hint"), [(signal.SIGKILL, " (out of memory, or killed)"), (signal.SIGTERM, "")], ids=["KILL", "TERM"]
)
def test_a_worker_killed_mid_measure_is_a_crash_and_its_log_is_kept(board: Any, sig: int, hint: str) -> None:
    b = board()
    npz = io.BytesIO()
    shape = [d.dim_value for d in INPUTS[0].type.tensor_type.shape.dim]
    np.savez(npz, **_arrays(np.ones(shape, dtype=np.float32)))
    request = b.submit(runs=10, min_duration_s=60, inputs_npz=npz.getvalue())
    wait_for(lambda: b.started_measuring(request.job_id), 60, "the job to measure")
    os.kill(b.info(request.job_id).worker_pid, sig)
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.ERROR and end.error_kind == "crash" and end.phase == "measure"
    measured = b.measured(request.job_id)
    assert end.measured == measured > 0
    name = signal.Signals(sig).name
    assert end.error == f"the worker was killed by {name}{hint} during measure after {measured} measured inferences"
    assert b.journal.job(request.job_id).state == "error"
    assert b.log_path(request.job_id).exists()  # kept for diagnosis
    assert not (b.work_dir / f"{request.job_id}.npz").exists()


def test_a_worker_over_its_memory_limit_ends_as_out_of_memory_said_once(board: Any) -> None:
    # 1 MB of resident memory: the worker's interpreter alone is over it, so it ends while it prepares.
    b = board(worker_memory_mb=1)
    started = time.monotonic()
    request = b.submit()
    end = b.wait_end(request.job_id)
    assert time.monotonic() - started < 20  # seconds, not the job's timeout
    assert (end.status, end.error_kind, end.phase) == (pb.JobEnd.ERROR, "out_of_memory", "prepare")
    assert end.error.startswith("out of memory: the worker's resident memory reached ")
    assert end.error.endswith(" MB during prepare (limit 1 MB)") and "\n" not in end.error
    assert not end.error.startswith("out of memory: out of memory")


def test_the_requested_input_shape_reaches_the_worker(board: Any) -> None:
    b = board()
    request = b.submit(input_shapes={INPUTS[0].name: "2x3x224x224"})
    end = b.wait_end(request.job_id)
    assert (end.status, end.error_kind, end.phase) == (pb.JobEnd.ERROR, "invalid_input", "prepare")
    assert end.error == (
        f"--input-shape {INPUTS[0].name}=2x3x224x224 contradicts the model: axis 0 is fixed at 1 ([1, 3, 224, 224])"
    )


def test_a_warmup_cut_by_its_time_cap_says_so(board: Any) -> None:
    b = board()
    # One warmup inference, then a 1 ms cap: no time to see latency settle.
    request = b.submit(warmup=1, max_warmup_s=0.001)
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.OK and end.notes["warmup_stable"] == "false"
    assert [p.detail for p in b.phases(request.job_id, "warmup") if p.end_ns] == ["not stable: time cap reached"]


def test_a_journal_that_refuses_a_jobs_end_briefly_is_retried_not_given_up(board: Any) -> None:
    b = board()
    real_set_state, real_abandon = b.journal.set_state, b.journal.abandon
    refused: list[str] = []
    abandoned: list[str] = []

    def set_state(job_id: str, state: str) -> None:
        if state == "ok" and not refused:  # the first try at the end: a brief disk-full
            refused.append(job_id)
            raise JournalWriteError("database or disk is full")
        real_set_state(job_id, state)

    def abandon(job_id: str, reason: str) -> None:
        abandoned.append(reason)
        real_abandon(job_id, reason)

    b.journal.set_state = set_state  # type: ignore[method-assign]
    b.journal.abandon = abandon  # type: ignore[method-assign]
    request = b.submit()
    assert b.wait_end(request.job_id).status == pb.JobEnd.OK
    assert refused == [request.job_id] and abandoned == [] and b.journal.job(request.job_id).state == "ok"


def test_runtime_options_and_op_profiling_reach_the_worker(board: Any) -> None:
    # ONNX Runtime fuses Relu into Conv and drops Dropout when it optimises the graph; with optimisation off
    # the per-operator profile shows them.
    b = board()
    optimised = b.submit(op_profile=True)
    plain = b.submit(op_profile=True, options={"graph_optimization": "disable"})
    ops = {}
    for request in (optimised, plain):
        end = b.wait_end(request.job_id)
        assert end.status == pb.JobEnd.OK, end.error
        ops[request.job_id] = {o.op_type for o in end.op_by_type}
    assert "Conv" in ops[optimised.job_id] and not {"Relu", "Dropout"} & ops[optimised.job_id]
    assert {"Conv", "Relu", "Dropout"} <= ops[plain.job_id]


def test_a_jobs_end_the_journal_keeps_refusing_is_abandoned_then_written_when_it_accepts(board: Any) -> None:
    b = board(journal_retry_s=0.3)
    real_set_state = b.journal.set_state
    disk_full = threading.Event()
    disk_full.set()

    def set_state(job_id: str, state: str) -> None:
        if state in TERMINAL and disk_full.is_set():
            raise JournalWriteError("database or disk is full")
        real_set_state(job_id, state)

    b.journal.set_state = set_state  # type: ignore[method-assign]
    request = b.submit()
    # Given up after journal_retry_s: a reader is told why instead of waiting for an end that is not written.
    with pytest.raises(JobAbandoned) as err:
        list(b.journal.tail(request.job_id, 0, lambda: False, poll_s=0.05))
    assert str(err.value) == (
        f"the agent could not write job {request.job_id}'s last measurements to its journal (database or disk is"
        " full); they are kept in memory and written when the journal accepts them again"
    )
    disk_full.clear()  # the disk has room again: the idle runner writes what it kept
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.OK and b.journal.job(request.job_id).state == "ok"
    following = b.submit()
    assert b.wait_end(following.job_id).status == pb.JobEnd.OK and b.runner.alive


def test_a_generative_job_streams_each_generations_tokens(board: Any, tmp_path: Path) -> None:
    from host.prepare.genai_pack import pack
    from tests.genai_model import write_genai_dir

    b = board()
    tar = pack(write_genai_dir(tmp_path / "decoder"), tmp_path / "packed").read_bytes()
    sha = sha256_bytes(tar)
    b.cache.store(sha, len(tar), [tar])
    request = profile_request(sha, runs=2, warmup=1, max_warmup_s=0.5)
    request.model_format = "genai"
    request.generation.prompt_lens.extend([4, 8])
    request.generation.gen_len = 3
    assert b.runner.submit(request)
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.OK, end.error
    blocks = [t for x in b.batches(request.job_id) for t in x.tokens if t.phase == pb.MEASURE]
    assert len(blocks) == end.measured and {t.prompt_tokens for t in blocks} == {4, 8}
    assert all(len(t.token_end_ns) == 3 for t in blocks)


def test_a_timeout_while_the_model_loads_is_a_timeout_in_prepare(board: Any) -> None:
    # 50 ms: a worker cannot even import its runtime in that time.
    b = board()
    request = b.submit(timeout_s=0.05)
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.ERROR and end.error_kind == "timeout"
    assert end.error == "job timed out after 0.05 s during prepare after 0 measured inferences"
    assert end.phase == "prepare" and end.measured == 0


def test_a_job_longer_than_its_timeout_is_stopped_while_it_runs(board: Any) -> None:
    # 3 s: time to load the model and warm up (at most 0.2 s) on a quiet machine, far less than the 60 s asked.
    b = board()
    request = b.submit(runs=10, min_duration_s=60, timeout_s=3, max_warmup_s=0.2)
    end = b.wait_end(request.job_id)
    assert (end.status, end.error_kind, end.phase) == (pb.JobEnd.ERROR, "timeout", "measure")
    measured = b.measured(request.job_id)
    assert end.error == f"job timed out after 3 s during measure after {measured} measured inferences"
    assert end.measured == measured > 0 and not psutil.pid_exists(b.info(request.job_id).worker_pid)


def test_the_agents_default_timeout_applies_when_the_request_has_none(board: Any) -> None:
    b = board(default_timeout_s=0.05)
    request = b.submit()
    end = b.wait_end(request.job_id)
    assert end.error_kind == "timeout" and end.error.startswith("job timed out after 0.05 s during prepare")


def test_settle_at_the_limit_is_settled_and_the_trip_point_is_noted(board: Any) -> None:
    b = board(settle_temp_c=50.0, sensors=[Thermal(50.0, trip_temp_c=97.0)])
    request = b.submit()
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.OK, end.error
    assert [p.detail for p in b.phases(request.job_id, "settle")] == ["settled at 50.0 C: at or below the limit 50.0 C"]
    assert end.notes["trip_temp_c"] == "97.0" and end.notes["settle"] == "cool"


def test_a_board_that_stays_hot_beyond_its_trip_runs_anyway_and_says_it_did_not_settle(board: Any) -> None:
    b = board(settle_temp_c=50.0, sensors=[Thermal(61.0, trip_temp_c=60.0)])
    request = b.submit(settle_timeout_s=1.0)
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.OK, end.error
    (settle,) = b.phases(request.job_id, "settle")
    assert settle.detail == (
        "not settled: 61.0 C after 1 s, at or above the 60.0 C trip-related limit"
        " (+0.0 C/min over 0.333 s, limit 50.0 C)"
    )
    assert settle.end_ns - settle.start_ns >= 1e9 and end.notes["settle"] == "timeout"


def test_a_board_idling_warm_below_its_trip_settles_once_its_temperature_is_stable(board: Any) -> None:
    b = board(settle_temp_c=50.0, sensors=[Thermal(61.0, trip_temp_c=90.0)])
    request = b.submit(settle_timeout_s=3.0)
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.OK, end.error
    (settle,) = b.phases(request.job_id, "settle")
    assert settle.detail == "settled at 61.0 C: no longer cooling (+0.0 C/min over 1 s, limit 50.0 C)"
    assert 0.9e9 <= settle.end_ns - settle.start_ns < 3e9 and end.notes["settle"] == "stable"


def test_a_thermal_zone_that_cannot_be_read_does_not_hold_the_job(board: Any) -> None:
    b = board(settle_temp_c=50.0, sensors=[Thermal(None)])
    request = b.submit()
    assert b.wait_end(request.job_id).status == pb.JobEnd.OK
    assert [p.detail for p in b.phases(request.job_id, "settle")] == ["settled at unknown: no zone reads a temperature"]


def test_no_settle_phase_without_a_settle_temperature(board: Any) -> None:
    b = board(sensors=[Thermal(80.0)])
    request = b.submit()
    assert b.wait_end(request.job_id).status == pb.JobEnd.OK
    assert b.phases(request.job_id, "settle") == []


def test_idle_baseline_is_measured_only_with_a_power_sensor(board: Any) -> None:
    without = board()
    request = without.submit(idle_s=30.0)
    assert without.wait_end(request.job_id).status == pb.JobEnd.OK
    (idle,) = without.phases(request.job_id, "idle")
    assert idle.detail == "skipped: no power sensor" and idle.start_ns == idle.end_ns
    (prepare,) = [p for p in without.phases(request.job_id, "prepare") if p.end_ns]
    assert idle.start_ns >= prepare.end_ns  # stamped when it was skipped, after the model loaded

    powered = board(sensors=[Rail()])
    request = powered.submit(idle_s=0.3)
    assert powered.wait_end(request.job_id).status == pb.JobEnd.OK
    (idle,) = powered.phases(request.job_id, "idle")
    assert idle.detail == "" and idle.end_ns - idle.start_ns >= 0.3e9
    # The idle window lies before the measurement, which follows it.
    (measure,) = [p for p in powered.phases(request.job_id, "measure") if p.end_ns]
    assert measure.start_ns >= idle.end_ns


def _prepared(b: Board, job_id: str) -> bool:
    return any(p.end_ns for p in b.phases(job_id, "prepare"))


def test_cancel_during_idle_ends_the_job_at_once_as_cancelled(board: Any) -> None:
    b = board(sensors=[Rail()])
    request = b.submit(idle_s=600.0)
    wait_for(lambda: _prepared(b, request.job_id), 60, "the model to load")
    assert b.runner.cancel(request.job_id) == "cancelling"
    end = b.wait_end(request.job_id)
    assert end.status == pb.JobEnd.CANCELLED and end.phase == "idle"
    assert end.error == "cancelled during idle after 0 measured inferences"
    assert b.journal.job(request.job_id).state == "cancelled"


def test_cancel_while_the_board_cools_ends_the_job_in_settle(board: Any) -> None:
    b = board(settle_temp_c=50.0, sensors=[Thermal(80.0)])
    request = b.submit(settle_timeout_s=600.0)
    wait_for(lambda: _prepared(b, request.job_id), 60, "the model to load")
    b.runner.cancel(request.job_id)
    end = b.wait_end(request.job_id)
    assert (end.status, end.phase) == (pb.JobEnd.CANCELLED, "settle")
    assert end.error == "cancelled during settle after 0 measured inferences"


def test_cancel_during_measure_reports_how_many_inferences_were_measured(board: Any) -> None:
    b = board()
    request = b.submit(runs=10, min_duration_s=60)
    wait_for(lambda: b.started_measuring(request.job_id), 60, "the job to measure")
    b.runner.cancel(request.job_id)
    end = b.wait_end(request.job_id)
    measured = b.measured(request.job_id)
    assert end.status == pb.JobEnd.CANCELLED and end.phase == "measure" and end.measured == measured > 0
    assert end.error == f"cancelled during measure after {measured} measured inferences"


def test_a_cold_worker_loads_only_its_jobs_runtime_so_its_memory_is_that_models(board: Any) -> None:
    # Only the warm worker preloads every installed runtime; a job's own worker must not carry LiteRT's
    # libraries into an ONNX model's peak memory.
    b = board()
    request = b.submit(runs=10, min_duration_s=60)
    wait_for(lambda: b.started_measuring(request.job_id), 60, "the job to measure")
    maps = Path(f"/proc/{b.info(request.job_id).worker_pid}/maps").read_text()
    b.runner.cancel(request.job_id)
    b.wait_end(request.job_id)

    assert "onnxruntime" in maps
    assert "ai_edge_litert" not in maps and "tflite_runtime" not in maps


def test_a_queued_job_is_placed_and_cancelled_before_it_starts(board: Any) -> None:
    b = board()
    running = b.submit(runs=10, min_duration_s=60)
    wait_for(lambda: b.started_measuring(running.job_id), 60, "the first job to measure")
    waiting = b.submit()
    (queued,) = b.phases(waiting.job_id, "queued")
    assert queued.detail == "position 1 in queue" and b.runner.queued == 1
    assert b.runner.cancel(waiting.job_id) == "cancelling"
    end = b.wait_end(waiting.job_id, timeout_s=10)  # ended now, not when the first job is done
    assert (end.status, end.error, end.phase) == (pb.JobEnd.CANCELLED, "cancelled before it started", "queued")
    assert b.runner.queued == 0 and b.journal.job(running.job_id).state == "running"
    assert b.cache._pinned == {b.sha: 1}  # the cancelled job's pin is released, the running job's kept
    b.runner.cancel(running.job_id)
    assert b.wait_end(running.job_id).status == pb.JobEnd.CANCELLED
    # A job that has ended answers with its state; an unknown one is an error.
    assert b.runner.cancel(running.job_id) == "cancelled"
    with pytest.raises(UnknownJob):
        b.runner.cancel("0" * 32)


#: The real worker, with ONNX Runtime failing 0.3 s into measuring, after it has reported inferences (a GPU
#: lost mid-run, a driver reset): `python -c` this instead of `-m agent.inference.worker`.
_WORKER_FAILING_MID_MEASURE = """
import time
from agent.inference import worker
from agent.runtimes.onnx import OnnxSession

measuring_since = []
real_measure, real_run = worker.Worker.measure, OnnxSession.run

def measure(self, session):
    measuring_since.append(time.monotonic())
    return real_measure(self, session)

def run(self):
    if measuring_since and time.monotonic() - measuring_since[0] > 0.3:
        raise RuntimeError("device lost")
    real_run(self)

worker.Worker.measure, OnnxSession.run = measure, run
raise SystemExit(worker.main())
"""


def test_a_worker_error_mid_measure_keeps_the_count_of_inferences_it_reported(board: Any, monkeypatch: Any) -> None:
    def spawn_failing(log_path: Path, *, preload: bool) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as stderr:
            return subprocess.Popen(
                [sys.executable, "-c", _WORKER_FAILING_MID_MEASURE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )

    monkeypatch.setattr(job_runner, "spawn_worker", spawn_failing)
    b = board()
    request = b.submit(runs=10, min_duration_s=60)
    end = b.wait_end(request.job_id)

    assert (end.status, end.error_kind, end.phase, end.error) == (
        pb.JobEnd.ERROR,
        "internal",
        "measure",
        "RuntimeError: device lost",
    )
    assert end.measured == b.measured(request.job_id) > 0
    assert "RuntimeError: device lost" in b.log_path(request.job_id).read_text()  # kept for the user


@pytest.mark.parametrize(
    ("raised", "kind"), [(RuntimeError("boom"), "internal"), (JournalWriteError("disk full"), "journal")]
)
def test_a_failure_inside_the_runner_ends_that_job_as_an_error_and_the_next_runs(
    board: Any, monkeypatch: Any, raised: Exception, kind: str
) -> None:
    b = board()
    original = job_execution.JobExecution._start_worker
    calls = []

    def fail_once(self: Any) -> Any:
        calls.append(self.req.job_id)
        if len(calls) == 1:
            raise raised
        return original(self)

    monkeypatch.setattr(job_execution.JobExecution, "_start_worker", fail_once)
    failed = b.submit()
    end = b.wait_end(failed.job_id)
    assert (end.status, end.error_kind, end.phase) == (pb.JobEnd.ERROR, kind, "prepare")
    assert end.error == f"the agent failed while running this job: {type(raised).__name__}: {raised}"
    assert b.journal.job(failed.job_id).state == "error"
    following = b.submit()
    assert b.wait_end(following.job_id).status == pb.JobEnd.OK
    assert b.runner.alive and b.cache._pinned == {}


@pytest.mark.parametrize("where", ["execution", "running state"])
def test_a_failure_before_the_job_gets_going_ends_it_in_prepare(board: Any, monkeypatch: Any, where: str) -> None:
    b = board()
    if where == "execution":  # the job's execution cannot even be set up
        monkeypatch.setattr(
            job_execution.JobExecution, "__init__", lambda self, runner, job: (_ for _ in ()).throw(OSError("boom"))
        )
    else:  # the journal fails in a way it does not translate
        real_set_state = b.journal.set_state

        def set_state(job_id: str, state: str) -> None:
            if state == "running":
                raise OSError("boom")
            real_set_state(job_id, state)

        monkeypatch.setattr(b.journal, "set_state", set_state)
    failed = b.submit()
    end = b.wait_end(failed.job_id)
    assert (end.status, end.error_kind, end.phase) == (pb.JobEnd.ERROR, "internal", "prepare")
    assert end.error == "the agent failed while running this job: OSError: boom"
    monkeypatch.undo()
    assert b.runner.alive and b.wait_end(b.submit().job_id).status == pb.JobEnd.OK


def test_a_generative_model_that_does_not_unpack_fails_in_prepare_saying_why(board: Any) -> None:
    b = board()
    tar = b"not a tar archive" * 100
    sha = sha256_bytes(tar)
    b.cache.store(sha, len(tar), [tar])
    request = profile_request(sha)
    request.model_format = "genai"
    request.generation.prompt_lens.append(4)
    request.generation.gen_len = 2
    assert b.runner.submit(request)
    end = b.wait_end(request.job_id)
    assert (end.status, end.phase, end.measured) == (pb.JobEnd.ERROR, "prepare", 0)
    assert end.error_kind and end.error_kind != "internal" and "tar" in end.error


def test_a_backend_runs_each_part_with_the_jobs_deadline(board: Any) -> None:
    class Recording:
        def __init__(self) -> None:
            self.deadlines: list[float] = []

        def run_part(self, execution: Any, deadline: float) -> pb.JobEnd:
            self.deadlines.append(deadline - time.monotonic())
            return pb.JobEnd(status=pb.JobEnd.OK)

    backend = Recording()
    b = board(backend=backend)
    request = b.submit(timeout_s=120)
    assert b.wait_end(request.job_id).status == pb.JobEnd.OK
    (left_s,) = backend.deadlines
    assert 100 < left_s <= 120


def test_the_requested_sample_rate_is_the_one_the_sensors_run_at(board: Any) -> None:
    # 5 Hz asked for over a 1 s measurement, against the default's 100 Hz and more.
    b = board(sensors=[Rail()])
    request = b.submit(runs=1, min_duration_s=1.0, sample_rate_hz=5.0)
    assert b.wait_end(request.job_id).status == pb.JobEnd.OK
    samples = [len(x.t_ns) for y in b.batches(request.job_id) for x in y.series if x.name == "board"]
    assert b.info(request.job_id).sample_rate_hz == 5.0 and 2 <= sum(samples) <= 25


def test_a_job_left_running_by_a_dead_agent_ends_as_a_crash_at_restart(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.create_job("1" * 32, "ab" * 32)
    journal.set_state("1" * 32, "running")
    journal.create_job("2" * 32, "ab" * 32)
    journal.set_state("2" * 32, "ok")
    runner = job_runner.JobRunner(journal, ModelCache(tmp_path / "models"), job_data.JobSettings(), tmp_path / "jobs")
    try:
        (payload,) = [p for _, p in journal.read("1" * 32, 0)]
        end = pb.MeasurementBatch.FromString(payload).end
        assert (end.status, end.error_kind) == (pb.JobEnd.ERROR, "crash")
        assert end.error == "the agent restarted while this job was running"
        assert journal.job("1" * 32).state == "error" and journal.job("2" * 32).state == "ok"
        assert journal.read("2" * 32, 0) == []
    finally:
        runner.shutdown()
        journal.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_runner_refuses_jobs_and_tells_its_listeners(board: Any, monkeypatch: Any) -> None:
    class RunnerKilled(BaseException):
        """What no per-job handler catches, as a bug in the loop itself would be."""

    def die(self: Any, job: Any) -> None:
        raise RunnerKilled()

    b = board()
    told: list[str] = []
    b.runner.on_death(lambda: told.append("first"))
    monkeypatch.setattr(job_runner.JobRunner, "_run_one", die)
    stranded = b.submit()
    wait_for(lambda: not b.runner.alive, 30, "the runner to die")
    assert told == ["first"]
    b.runner.on_death(lambda: told.append("late"))  # registered after the death: told at once
    assert told == ["first", "late"]
    with pytest.raises(job_data.RunnerStopped) as err:
        b.runner.submit(profile_request(b.sha))
    assert str(err.value) == "the agent's job runner has stopped after an internal error: restart the agent"
    with pytest.raises(JobAbandoned, match="restart the agent"):
        list(b.journal.tail(stranded.job_id, 0, lambda: False, poll_s=0.05))


def test_a_shutdown_is_not_a_death(board: Any) -> None:
    b = board()
    told: list[str] = []
    b.runner.on_death(lambda: told.append("died"))
    b.runner.shutdown()
    assert told == [] and b.runner.alive


def test_shutdown_does_not_wait_forever_for_a_stuck_job(board: Any, monkeypatch: Any) -> None:
    class StuckBackend:
        """A part that ignores cancellation (a phone whose adb hangs)."""

        def __init__(self) -> None:
            self.entered = threading.Event()
            self.release = threading.Event()

        def run_part(self, execution: Any, deadline: float) -> pb.JobEnd:
            self.entered.set()
            self.release.wait()
            return pb.JobEnd(status=pb.JobEnd.ERROR)

    backend = StuckBackend()
    monkeypatch.setattr(job_runner, "SHUTDOWN_WAIT_S", 0.2)
    b = board(backend=backend)
    b.submit()
    assert backend.entered.wait(30)
    done = threading.Event()

    def shut_down() -> None:
        b.runner.shutdown()
        done.set()

    threading.Thread(target=shut_down, daemon=True).start()
    try:
        assert done.wait(30), "shutdown waited for a job that does not end"
    finally:
        backend.release.set()


def test_a_dead_warm_worker_is_replaced_by_a_cold_one_and_logged(board: Any, caplog: Any) -> None:
    b = board(warm_worker=True)
    spare = wait_for(lambda: b.runner._spare, 30, "the warm worker to start")
    os.kill(spare.pid, signal.SIGKILL)
    spare.wait(30)
    caplog.set_level(logging.WARNING, logger="agent.jobs")
    cold = b.submit()
    assert b.wait_end(cold.job_id).status == pb.JobEnd.OK
    assert "the warm worker had exited (the worker was killed by SIGKILL (out of memory, or killed));" in caplog.text
    assert [p.detail for p in b.phases(cold.job_id, "prepare") if p.end_ns] == [""]
    # Idle again: a new warm worker starts, and the next job takes it.
    wait_for(lambda: b.runner._spare is not None and b.runner._spare.poll() is None, 30, "a new warm worker")
    warm = b.submit()
    assert b.wait_end(warm.job_id).status == pb.JobEnd.OK
    assert [p.detail for p in b.phases(warm.job_id, "prepare") if p.end_ns] == ["warm worker"]
