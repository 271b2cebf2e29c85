"""One job as the runner holds it, and what the board contributes to every job (JobSettings)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.device.sampler import DEFAULT_RATE_HZ
from agent.errors import AgentError
from agent.sensors.base import Sensor
from agent.storage.batches import BatchEmitter
from agent.storage.journal import Journal
from agent.storage.model_cache import ModelCache
from protos import agent_pb2 as pb


class RunnerStopped(AgentError):
    """The job runner's thread has died: no job can run until the agent is restarted."""

    kind = "internal"


@dataclass
class JobSettings:
    """What the board contributes to every job (from the device profile and `agent serve` flags)."""

    profile: str = "generic-linux"
    providers: Sequence[str] = ()
    settle_temp_c: float | None = None
    #: The settle wait when a request leaves it at 0 (the profile's settle_timeout_s).
    settle_timeout_s: float = 60.0
    default_timeout_s: float = 3600.0
    max_queued: int = 8
    sample_rate_hz: float = DEFAULT_RATE_HZ
    #: Sensors read during every job (power, temperature, frequency); the worker's memory is added.
    sensors: Sequence[Sensor] = ()
    #: Builds the sensor that follows the worker's memory, given its pid.
    memory_sensor: Callable[[int], Sensor] | None = None
    #: Builds the sensor of CPU used by other processes than the agent and that worker, given its pid.
    contention_sensor: Callable[[int], Sensor] | None = None
    #: Snapshot of the board for JobInfo.device.
    describe: Callable[[], pb.DeviceInfo] = field(default=lambda: pb.DeviceInfo())
    #: Keep one worker started, runtimes imported, for the next job (costs its memory while idle).
    warm_worker: bool = False
    #: Memory a job's worker may add once its runtime is imported, MB (0 = no limit; agent/jobs/memory_limit.py).
    worker_memory_mb: int = 0
    #: How long a job's end is retried against a journal that refuses writes (a brief disk-full) before
    #: the job is reported as lost; its batches stay in memory and are written before each later job.
    journal_retry_s: float = 10.0
    #: Runs each job part instead of a local worker (agent/adb/backend.py drives a phone); None = the worker.
    backend: Any = None
    #: Runtime options every job gets unless it gives its own (the profile's runtime = "tensorrt" and [tensorrt]).
    runtime_options: Mapping[str, str] = field(default_factory=dict)
    #: Records (and with `agent serve --power-mode` sets) the board's state around each job: begin() before
    #: its first part, end() -> notes after its last (agent/device/jetson_state.py); None = nothing to record.
    board_state: Any = None
    #: The board's llama-bench binary: GGUF models are measured with it instead of llama-cpp-python ("" = none).
    llama_bench: str = ""


@dataclass
class Job:
    request: pb.ProfileRequest
    submitted_ns: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    worker: subprocess.Popen[bytes] | None = None
    #: Taken off the queue by the runner (under JobRunner._lock): a cancel no longer ends it at once.
    started: bool = False


class RunnerContext(Protocol):
    """What one job's execution uses of the runner that runs it (JobRunner in agent/jobs/runner.py)."""

    journal: Journal
    cache: ModelCache
    settings: JobSettings
    work_dir: Path

    def take_worker(self, job_id: str, spec_line: str) -> tuple[subprocess.Popen[bytes], bool]: ...

    def journal_end(self, job_id: str, emitter: BatchEmitter, end: pb.JobEnd, state: str) -> None: ...
