"""The one interface every sensor backend implements (power, energy, temperature, memory, frequency)."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import SensorError

#: Series kinds, as named in protos/agent.proto SeriesKind (lower-case).
POWER_MW = "power_mw"
ENERGY_UJ = "energy_uj"
TEMP_C = "temp_c"
RSS_BYTES = "rss_bytes"
GPU_MEM_BYTES = "gpu_mem_bytes"
CPU_FREQ_KHZ = "cpu_freq_khz"
THROTTLE = "throttle"
VOLTAGE_MV = "voltage_mv"
CURRENT_MA = "current_ma"
CPU_OTHER_PCT = "cpu_other_pct"


@dataclass(frozen=True)
class Channel:
    """One value a sensor delivers at each read.

    ``kind`` is one of the constants above and fixes the unit. ``role`` says what the rail powers
    ("total", "cpu", "gpu", "soc", "dram") when the device profile knows it, else "". The host sums
    the "total" rail, else the rails that are a part of nothing measured (see host/analysis/rails.py).
    """

    name: str
    kind: str
    role: str = ""
    #: The rail this one is a part of (RAPL core in package-0 in psys), "" for a top-level rail.
    part_of: str = ""


#: How a channel's parent travels in the series' role string; host/analysis/rails.py reads it back.
PART_OF = ";part_of="


def wire_role(channel: Channel) -> str:
    """The role as streamed: "cpu", or "cpu;part_of=psys" for a rail that is a part of another."""
    return f"{channel.role}{PART_OF}{channel.part_of}" if channel.part_of else channel.role


class Sensor(abc.ABC):
    """A source of readings. ``read`` returns one float per channel, in the channel's unit.

    Energy counters (kind ENERGY_UJ) must return a cumulative, already unwrapped value: the backend
    tracks wrap-around itself, and the sampler polls it at least ``min_rate_hz`` so no wrap is missed.
    """

    #: Backend name, e.g. "ina3221", "rapl", "nvml".
    backend: str = ""
    #: The fastest rate at which a fresh value can be read.
    max_rate_hz: float = 1000.0
    #: The slowest safe polling rate (RAPL: often enough never to miss a counter wrap).
    min_rate_hz: float = 0.0
    #: False when the value comes at the sensor's own fixed rate (a streaming meter): reading it at
    #: dithered times would not spread the samples over a periodic load's phases.
    dither: bool = True

    @abc.abstractmethod
    def channels(self) -> Sequence[Channel]:
        """The channels, in the order ``read`` returns values."""

    @abc.abstractmethod
    def read(self) -> Sequence[float]:
        """Read every channel now. Raises SensorError when the hardware cannot be read."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files, ports or library handles."""


def sysfs_root() -> Path:
    """The root under which every sysfs/procfs path is read (tests point it at a fake tree)."""
    return Path(os.environ.get("EDGEPROF_SYSFS_ROOT", "/"))


def under_root(path: str) -> Path:
    """``/sys/class/...`` resolved under EDGEPROF_SYSFS_ROOT."""
    return sysfs_root() / path.lstrip("/")


def read_sysfs_text(path: Path) -> str:
    """A sysfs attribute's text, stripped; SensorError (naming the file) when it cannot be read."""
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except PermissionError as err:
        raise SensorError(f"permission denied reading {path}") from err
    except OSError as err:
        raise SensorError(f"cannot read {path}: {err.strerror or err}") from err


def read_sysfs_int(path: Path) -> int:
    """A sysfs attribute holding an integer (some append a unit, e.g. "32760 ma": the unit is dropped)."""
    text = read_sysfs_text(path)
    try:
        return int(text.split()[0])
    except (ValueError, IndexError) as err:
        raise SensorError(f"{path}: expected an integer, got {text!r}") from err
