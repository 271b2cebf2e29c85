"""CPU frequency per core (cpufreq `scaling_cur_freq`), the governor, and a throttle flag where exposed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import SensorError
from agent.sensors.base import (
    CPU_FREQ_KHZ,
    THROTTLE,
    Channel,
    Sensor,
    read_sysfs_int,
    read_sysfs_text,
    under_root,
)

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

CPU_DIR = "/sys/devices/system/cpu"
THROTTLE_CHANNEL = "cpu_throttle"
#: Raspberry Pi firmware flags (same bits as `vcgencmd get_throttled`).
RPI_THROTTLED = "/sys/devices/platform/soc/soc:firmware/get_throttled"
# Bits 1-3: ARM frequency capped, currently throttled, soft temperature limit active.
_RPI_ACTIVE_MASK = 0b1110
#: x86: the package's thermal-throttle event counter (it only grows).
X86_THROTTLE_COUNT = "/sys/devices/system/cpu/cpu0/thermal_throttle/package_throttle_count"
_CPU_DIR = re.compile(r"cpu(\d+)")


def find_cores() -> list[tuple[int, Path]]:
    """(cpu index, scaling_cur_freq path) for every online core with cpufreq, by index."""
    cores: list[tuple[int, Path]] = []
    for directory in under_root(CPU_DIR).glob("cpu*"):
        match = _CPU_DIR.fullmatch(directory.name)
        freq = directory / "cpufreq" / "scaling_cur_freq"
        if match and freq.is_file():
            cores.append((int(match.group(1)), freq))
    return sorted(cores)


def governor() -> str:
    """cpu0's scaling governor ("performance", "schedutil", ...), "" where there is none."""
    try:
        return read_sysfs_text(under_root(f"{CPU_DIR}/cpu0/cpufreq/scaling_governor"))
    except SensorError:
        return ""


class CpuFreqSensor(Sensor):
    """Each core's current frequency in kHz, then a throttle channel where the board exposes one."""

    backend = "cpufreq"
    max_rate_hz = 50.0

    def __init__(self, cores: Sequence[tuple[int, Path]]) -> None:
        if not cores:
            raise SensorError("no cpufreq scaling_cur_freq found")
        self._cores = list(cores)
        self._channels = [Channel(f"cpu{i}_freq", CPU_FREQ_KHZ) for i, _ in self._cores]
        self._rpi_flags = under_root(RPI_THROTTLED)
        self._x86_count = under_root(X86_THROTTLE_COUNT)
        self._x86_baseline: int | None = None
        if self._rpi_flags.is_file():
            self._throttle_source = "rpi"
        elif self._x86_count.is_file():
            self._throttle_source = "x86"
            self._x86_baseline = read_sysfs_int(self._x86_count)
        else:
            self._throttle_source = ""
        if self._throttle_source:
            self._channels.append(Channel(THROTTLE_CHANNEL, THROTTLE))
        self.governor = governor()

    @classmethod
    def is_available(cls) -> bool:
        return bool(find_cores())

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> CpuFreqSensor:
        return cls(find_cores())

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def _throttled(self) -> float:
        if self._throttle_source == "rpi":
            flags = int(read_sysfs_text(self._rpi_flags), 16)
            return 1.0 if flags & _RPI_ACTIVE_MASK else 0.0
        count = read_sysfs_int(self._x86_count)
        # Counted events since this sensor opened: any new one means the package throttled.
        throttled = self._x86_baseline is not None and count > self._x86_baseline
        return 1.0 if throttled else 0.0

    def read(self) -> Sequence[float]:
        values = [float(read_sysfs_int(path)) for _, path in self._cores]
        if self._throttle_source:
            try:
                values.append(self._throttled())
            except ValueError as err:
                raise SensorError(f"unreadable throttle flags: {err}") from err
        return values
