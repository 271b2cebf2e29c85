"""Jetson INA3221 power monitors: JetPack 5+ hwmon and JetPack 4 IIO layouts, one power channel per rail."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import SensorError
from agent.sensors.base import POWER_MW, Channel, Sensor, read_sysfs_int, read_sysfs_text, under_root

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

HWMON_GLOB = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
IIO_GLOB = "sys/bus/i2c/drivers/ina3221x/*/iio:device*"
SUM_CHANNEL = "rails_sum"

_HWMON_LABEL = re.compile(r"in(\d+)_label")
_IIO_LABEL = re.compile(r"rail_name_(\d+)")


@dataclass(frozen=True)
class Rail:
    """One monitored rail and the files that give its power."""

    label: str
    #: JetPack 4 IIO: power in mW straight from the driver (None on hwmon).
    power_mw_path: Path | None
    #: Bus voltage (mV) and current (mA): power is V x I where the driver has no power file.
    voltage_mv_path: Path
    current_ma_path: Path

    def read_power_mw(self) -> float:
        if self.power_mw_path is not None:
            return float(read_sysfs_int(self.power_mw_path))
        return read_sysfs_int(self.voltage_mv_path) * read_sysfs_int(self.current_ma_path) / 1000.0


def _skipped(label: str) -> bool:
    # "NC" marks an unconnected channel (AGX Orin); the hwmon driver adds a "sum of shunt voltages"
    # channel that is not a rail of its own and would double-count.
    return label.upper() == "NC" or "sum" in label.lower() or not label


def _hwmon_rails(root: Path) -> list[Rail]:
    rails: list[Rail] = []
    for directory in sorted(root.glob(HWMON_GLOB)):
        for label_path in sorted(directory.glob("in*_label")):
            match = _HWMON_LABEL.fullmatch(label_path.name)
            if not match:
                continue
            label = read_sysfs_text(label_path)
            n = match.group(1)
            current = directory / f"curr{n}_input"
            if _skipped(label) or not current.exists():
                continue
            rails.append(Rail(label, None, directory / f"in{n}_input", current))
    return rails


def _iio_rails(root: Path) -> list[Rail]:
    rails: list[Rail] = []
    for directory in sorted(root.glob(IIO_GLOB)):
        for label_path in sorted(directory.glob("rail_name_*")):
            match = _IIO_LABEL.fullmatch(label_path.name)
            if not match:
                continue
            label = read_sysfs_text(label_path)
            if _skipped(label):
                continue
            n = match.group(1)
            power = directory / f"in_power{n}_input"
            rails.append(
                Rail(
                    label,
                    power if power.exists() else None,
                    directory / f"in_voltage{n}_input",
                    directory / f"in_current{n}_input",
                )
            )
    return rails


def find_rails() -> list[Rail]:
    """Every connected rail on the board, hwmon (JetPack 5+) preferred over IIO (JetPack 4)."""
    root = under_root("/")
    return _hwmon_rails(root) or _iio_rails(root)


class Ina3221Sensor(Sensor):
    """Power of each INA3221 rail in mW; roles come from the device profile's [rails] table only."""

    backend = "ina3221"
    # The driver's conversion (1.1 ms x averaging) refreshes faster than this; sysfs reads cost ~50 us.
    max_rate_hz = 500.0

    def __init__(
        self,
        rails: Sequence[Rail],
        roles: Mapping[str, str] | None = None,
        total_from_sum: bool = False,
    ) -> None:
        if not rails:
            raise SensorError("no INA3221 rails found")
        roles = roles or {}
        self._rails = list(rails)
        self._total_from_sum = total_from_sum
        names: list[str] = []
        for rail in self._rails:
            # Two monitors with the same label would collide as series names: number the later ones.
            name = rail.label if rail.label not in names else f"{rail.label}#{names.count(rail.label) + 1}"
            names.append(name)
        self._channels = [
            Channel(name, POWER_MW, roles.get(r.label, "")) for name, r in zip(names, self._rails, strict=True)
        ]
        if total_from_sum:
            self._channels.append(Channel(SUM_CHANNEL, POWER_MW, "total"))

    @classmethod
    def is_available(cls) -> bool:
        root = under_root("/")
        return any(root.glob(HWMON_GLOB)) or any(root.glob(IIO_GLOB))

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> Ina3221Sensor:
        options = profile.options_for(cls.backend)
        return cls(find_rails(), profile.rails, bool(options.get("total_from_sum", False)))

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read(self) -> Sequence[float]:
        values = [rail.read_power_mw() for rail in self._rails]
        if self._total_from_sum:
            values.append(sum(values))
        return values
