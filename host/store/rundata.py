"""Raw measurements of one run as the host holds them: what the store saves and reports/compare read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Phase names as stored and shown (lower-case names of protos Phase).
PHASES = ("queued", "prepare", "settle", "idle", "warmup", "measure", "finish")


@dataclass
class Series:
    """One sampled channel: ``value[i]`` was read at ``t_ns[i]`` (CLOCK_MONOTONIC ns on the board).

    ``kind`` fixes the unit: "power_mw", "energy_uj" (cumulative, unwrapped), "temp_c", "rss_bytes",
    "gpu_mem_bytes", "cpu_freq_khz", "throttle", "voltage_mv", "current_ma".
    """

    name: str
    kind: str
    role: str = ""
    sensor: str = ""
    t_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    value: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))


@dataclass
class PhaseSpan:
    """A phase of the measurement protocol on the board's monotonic clock."""

    name: str
    start_ns: int
    end_ns: int
    detail: str = ""
    count: int = 0


@dataclass
class DeviceRaw:
    """Everything one device streamed for one job."""

    device: str
    #: Measured inference windows (MEASURE phase), start and end ns, same length.
    start_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    end_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Warmup inference windows.
    warmup_start_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    warmup_end_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    series: list[Series] = field(default_factory=list)
    phases: list[PhaseSpan] = field(default_factory=list)

    @property
    def latency_ns(self) -> np.ndarray:
        return self.end_ns - self.start_ns

    def phase(self, name: str) -> PhaseSpan | None:
        for span in self.phases:
            if span.name == name:
                return span
        return None


@dataclass
class RunData:
    """A stored run: the result document (DESIGN.md §4) plus each device's raw samples."""

    document: dict[str, Any]
    raw: dict[str, DeviceRaw] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.document["run_id"])
