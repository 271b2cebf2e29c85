"""Which sensors this board has: power backends tried in a fixed order, then temperature and frequency."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import SensorError
from agent.sensors.android import AndroidBatterySensor
from agent.sensors.base import (
    CPU_FREQ_KHZ,
    CURRENT_MA,
    ENERGY_UJ,
    GPU_MEM_BYTES,
    POWER_MW,
    RSS_BYTES,
    TEMP_C,
    VOLTAGE_MV,
    Channel,
    Sensor,
)
from agent.sensors.cpufreq import CpuFreqSensor
from agent.sensors.ina3221 import Ina3221Sensor
from agent.sensors.nvml import NvmlSensor
from agent.sensors.rapl import RaplSensor
from agent.sensors.rpi_pmic import RpiPmicSensor
from agent.sensors.thermal import ThermalSensor
from agent.sensors.usbmeter import open_power_meter, parse_meter_spec
from device_profiles import DeviceProfile

log = logging.getLogger(__name__)

#: Power backends in the order tried when the profile names none. An external meter, when the user
#: plugged one in, measures the whole board at its input: it comes first.
DEFAULT_POWER_ORDER = ("usbmeter", "ina3221", "rpi_pmic", "android", "rapl", "nvml")


@dataclass(frozen=True)
class Backend:
    """How to find one backend: a cheap presence probe, then a constructor that may fail loudly."""

    name: str
    is_available: Callable[[DeviceProfile], bool]
    create: Callable[[DeviceProfile], Sensor]


@dataclass
class Detection:
    """The sensors found, power first in order of preference, and one line per broken one."""

    sensors: list[Sensor] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def close(self) -> None:
        for sensor in self.sensors:
            sensor.close()


def _pmic_available(profile: DeviceProfile) -> bool:
    configured = profile.options_for("rpi_pmic").get("vcgencmd")
    return RpiPmicSensor.is_available(str(configured) if configured else None)


DEFAULT_BACKENDS: Mapping[str, Backend] = {
    "ina3221": Backend("ina3221", lambda p: Ina3221Sensor.is_available(), Ina3221Sensor.from_profile),
    "rpi_pmic": Backend("rpi_pmic", _pmic_available, RpiPmicSensor.from_profile),
    "android": Backend("android", lambda p: AndroidBatterySensor.is_available(), AndroidBatterySensor.from_profile),
    "rapl": Backend("rapl", lambda p: RaplSensor.is_available(), RaplSensor.from_profile),
    "nvml": Backend("nvml", lambda p: NvmlSensor.is_available(), NvmlSensor.from_profile),
    "thermal": Backend("thermal", lambda p: ThermalSensor.is_available(), ThermalSensor.from_profile),
    "cpufreq": Backend("cpufreq", lambda p: CpuFreqSensor.is_available(), CpuFreqSensor.from_profile),
}
AUXILIARY = ("thermal", "cpufreq")


class Relabelled(Sensor):
    """A sensor whose channels' roles and parents are changed, readings untouched.

    Two uses: another backend's view of a board whose total is already measured loses the role "total"
    (the host would otherwise take it as the whole board too), and the profile's ``[rail_parents]``
    table says which measured rail each channel is a part of (the host never sums a part with it).
    """

    def __init__(
        self,
        inner: Sensor,
        demote_total: bool = False,
        part_of: Mapping[str, str] | None = None,
        renames: Mapping[str, str] | None = None,
    ) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.max_rate_hz = inner.max_rate_hz
        self.min_rate_hz = inner.min_rate_hz
        self.dither = inner.dither
        parents = part_of or {}
        new_name = renames or {}
        self._channels = [
            Channel(
                new_name.get(ch.name, ch.name),
                ch.kind,
                "" if demote_total and ch.role == "total" else ch.role,
                new_name.get(parent, parent) if (parent := parents.get(ch.name, ch.part_of)) else "",
            )
            for ch in inner.channels()
        ]

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read(self) -> Sequence[float]:
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def _has_total(sensor: Sensor) -> bool:
    return any(ch.role == "total" for ch in sensor.channels())


def power_order(profile: DeviceProfile, power_meter: str | None) -> list[str]:
    """Power backend names in the order they are tried for this profile and meter."""
    order = list(profile.power_sensors or DEFAULT_POWER_ORDER)
    if power_meter and "usbmeter" not in order:
        order.insert(0, "usbmeter")  # asked for on the command line: always tried, and first
    if not power_meter and "usbmeter" in order:
        order.remove("usbmeter")  # nothing to open without a --power-meter spec
    return order


def detect_sensors(
    profile: DeviceProfile,
    power_meter: str | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> Detection:
    """Every sensor this board has, for this profile. ValueError for a malformed ``power_meter`` spec.

    A backend whose hardware is absent is skipped quietly; one that is present but cannot be used
    (RAPL root-only, NVML without pynvml, a meter that does not answer) becomes a line in ``problems``.
    Power sensors come first, in the order tried. Only the first backend that measures the whole board
    keeps the role "total" (a USB meter on a Pi 5 beats its PMIC); later ones keep their readings.
    """
    table = dict(DEFAULT_BACKENDS if backends is None else backends)
    if power_meter:
        spec = parse_meter_spec(power_meter)
        table.setdefault("usbmeter", Backend("usbmeter", lambda p: True, lambda p: open_power_meter(spec, p.rails)))
    detection = Detection()
    for name in [*power_order(profile, power_meter), *AUXILIARY]:
        backend = table.get(name)
        if backend is None:
            detection.problems.append(f"{name}: unknown sensor backend in profile {profile.name}")
            continue
        try:
            if not backend.is_available(profile):
                log.debug("sensor backend %s: hardware absent", name)
                continue
            sensor = backend.create(profile)
        except (SensorError, ValueError) as err:
            detection.problems.append(f"{name}: {err}")
            continue
        demote = _has_total(sensor) and any(_has_total(s) for s in detection.sensors)
        if demote:
            log.info("sensor backend %s: the board total is already measured; its total is informational", name)
        renames = _renames_for_unique_names(sensor, detection.sensors)
        for old, new in renames.items():
            detection.problems.append(f"{name}: channel {old!r} has the name of another sensor's; reported as {new!r}")
        if demote or renames or any(ch.name in profile.rail_parents for ch in sensor.channels()):
            sensor = Relabelled(sensor, demote, profile.rail_parents, renames)
        detection.sensors.append(sensor)
    return detection


def _renames_for_unique_names(sensor: Sensor, earlier: Sequence[Sensor]) -> dict[str, str]:
    """New names for this sensor's channels that an earlier sensor already uses ("<name>@<backend>").

    The host keeps a job's series by channel name: two sensors' samples under one name would be merged.
    """
    taken = {ch.name for s in earlier for ch in s.channels()}
    own = {ch.name for ch in sensor.channels()}
    renames: dict[str, str] = {}
    for ch in sensor.channels():
        if ch.name in taken:
            new, n = f"{ch.name}@{sensor.backend}", 2
            while new in taken or new in own:
                new, n = f"{ch.name}@{sensor.backend}{n}", n + 1
            renames[ch.name] = new
            taken.add(new)
    return renames


_DISPLAY: Mapping[str, tuple[str, float]] = {
    POWER_MW: ("W", 1e-3),
    TEMP_C: ("C", 1.0),
    CPU_FREQ_KHZ: ("MHz", 1e-3),
    RSS_BYTES: ("MB", 1e-6),
    GPU_MEM_BYTES: ("MB", 1e-6),
    VOLTAGE_MV: ("V", 1e-3),
    CURRENT_MA: ("A", 1e-3),
}


def describe_sensors(sensors: Sequence[Sensor], energy_window_s: float = 0.25) -> list[dict[str, Any]]:
    """One dict per channel with a live value for people: W for power (energy counters: the mean
    power over ``energy_window_s``), °C, MHz, MB, V, A; ``value`` None and ``error`` set when unreadable.
    """
    rows: list[dict[str, Any]] = []
    for sensor in sensors:
        error = ""
        values: Sequence[float] = []
        later: Sequence[float] = []
        elapsed_s = 0.0
        try:
            t0 = time.monotonic()
            values = sensor.read()
            if any(ch.kind == ENERGY_UJ for ch in sensor.channels()):
                # A counter says nothing on its own: two reads a moment apart give the power now.
                time.sleep(energy_window_s)
                later = sensor.read()
                elapsed_s = time.monotonic() - t0
        except SensorError as err:
            error = str(err)
        for i, channel in enumerate(sensor.channels()):
            row: dict[str, Any] = {
                "backend": sensor.backend,
                "channel": channel.name,
                "kind": channel.kind,
                "role": channel.role,
                "max_rate_hz": sensor.max_rate_hz,
                "value": None,
                "unit": "",
            }
            if error:
                row["error"] = error
            elif channel.kind == ENERGY_UJ:
                row["unit"] = "W"
                row["value"] = (later[i] - values[i]) / 1e6 / elapsed_s if elapsed_s > 0 else None
            else:
                unit, factor = _DISPLAY.get(channel.kind, ("", 1.0))
                row["unit"] = unit
                row["value"] = values[i] * factor
            rows.append(row)
    return rows
