"""Android battery fuel gauge (power_supply/battery) as board power: units per profile, sign per profile or detected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import SensorError
from agent.sensors.base import POWER_MW, Channel, Sensor, read_sysfs_int, read_sysfs_text, under_root

if TYPE_CHECKING:
    from agent.profiles import DeviceProfile

BATTERY_DIR = "/sys/class/power_supply/battery"
CHANNEL = "battery"

#: Multipliers to milli-units: the kernel ABI says µA/µV, a few vendor kernels report mA/mV.
_TO_MILLI = {"uA": 1e-3, "mA": 1.0, "uV": 1e-3, "mV": 1.0}
SIGNS = ("discharge_positive", "discharge_negative")


def _unit(options: Mapping[str, Any], key: str, default: str, allowed: tuple[str, str]) -> str:
    unit = str(options.get(key, default))
    if unit not in allowed:
        raise ValueError(f"android sensor option {key} must be one of {', '.join(allowed)}, not {unit!r}")
    return unit


class AndroidBatterySensor(Sensor):
    """Power drawn from the battery in mW, positive while discharging whatever the kernel's sign.

    Plugged in and charging, the value goes negative: measure on battery for meaningful energy.
    """

    backend = "android"
    # Fuel gauges refresh between 1 Hz and 10 Hz; reading faster only repeats values.
    max_rate_hz = 10.0

    def __init__(
        self,
        battery_dir: Path,
        sign: str = "discharge_positive",
        current_unit: str = "uA",
        voltage_unit: str = "uV",
        roles: Mapping[str, str] | None = None,
    ) -> None:
        if sign not in SIGNS:
            raise ValueError(f"android sensor option sign must be one of {', '.join(SIGNS)}, not {sign!r}")
        self._current = battery_dir / "current_now"
        self._voltage = battery_dir / "voltage_now"
        self._sign = 1.0 if sign == "discharge_positive" else -1.0
        self._current_to_ma = _TO_MILLI[current_unit]
        self._voltage_to_mv = _TO_MILLI[voltage_unit]
        self._channels = [Channel(CHANNEL, POWER_MW, (roles or {}).get(CHANNEL, "total"))]

    @classmethod
    def is_available(cls) -> bool:
        directory = under_root(BATTERY_DIR)
        return (directory / "current_now").is_file() and (directory / "voltage_now").is_file()

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> AndroidBatterySensor:
        options = profile.options_for(cls.backend)
        directory = under_root(BATTERY_DIR)
        sign = str(options.get("sign", "auto"))
        return cls(
            directory,
            detect_sign(directory) if sign == "auto" else sign,
            _unit(options, "current_unit", "uA", ("uA", "mA")),
            _unit(options, "voltage_unit", "uV", ("uV", "mV")),
            profile.rails,
        )

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read(self) -> Sequence[float]:
        current_ma = read_sysfs_int(self._current) * self._current_to_ma
        voltage_mv = read_sysfs_int(self._voltage) * self._voltage_to_mv
        return [self._sign * current_ma * voltage_mv / 1000.0]


def detect_sign(battery_dir: Path) -> str:
    """The discharge sign of this gauge's current_now, read while the battery says it discharges.

    Kernels disagree (the ABI says negative while discharging; many phones report positive, some negative while
    charging): the sign is the profile's pin or what the gauge shows now, never assumed. Charging, full or on
    external power the reading cannot tell, and the sensor is refused with the way out.
    """
    try:
        status = read_sysfs_text(battery_dir / "status")
    except SensorError:
        status = "unknown"
    current = read_sysfs_int(battery_dir / "current_now")
    if status != "Discharging" or current == 0:
        raise SensorError(
            f"cannot tell the battery gauge's current sign while it reads {current} with the battery {status}:"
            ' unplug the phone once when the agent starts, or pin sign = "discharge_negative" or'
            ' "discharge_positive" under [sensor_options.android] in the profile'
        )
    return "discharge_negative" if current < 0 else "discharge_positive"
