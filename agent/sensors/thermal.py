"""Thermal zones (`/sys/class/thermal/thermal_zone*`): temperatures, trip-point throttling, settle helper."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import SensorError
from agent.sensors.base import TEMP_C, THROTTLE, Channel, Sensor, read_sysfs_int, read_sysfs_text, under_root

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

THERMAL_DIR = "/sys/class/thermal"
THROTTLE_CHANNEL = "thermal_throttle"
_ZONE_DIR = re.compile(r"thermal_zone(\d+)")
# Trip types at which the kernel starts capping clocks ("active" only spins a fan).
_THROTTLING_TRIPS = ("passive", "hot", "critical")


@dataclass(frozen=True)
class ThermalZone:
    """One zone: its type (the channel name), temperature file and lowest throttling trip (°C)."""

    type: str
    temp_path: Path
    throttle_at_c: float | None


def _lowest_throttle_trip_c(directory: Path) -> float | None:
    trips: list[float] = []
    for type_path in directory.glob("trip_point_*_type"):
        try:
            if read_sysfs_text(type_path) not in _THROTTLING_TRIPS:
                continue
            temp_mc = read_sysfs_int(type_path.with_name(type_path.name.replace("_type", "_temp")))
        except SensorError:
            continue
        if temp_mc > 0:
            trips.append(temp_mc / 1000.0)
    return min(trips) if trips else None


def find_zones(types: Sequence[str] = ()) -> list[ThermalZone]:
    """Zones whose type is in ``types`` (all when empty) and whose temperature reads, by zone number."""
    found: list[tuple[int, ThermalZone]] = []
    for directory in under_root(THERMAL_DIR).glob("thermal_zone*"):
        match = _ZONE_DIR.fullmatch(directory.name)
        if not match:
            continue
        try:
            zone_type = read_sysfs_text(directory / "type")
            read_sysfs_int(directory / "temp")  # some zones (disabled sensors) fail to read: leave out
        except SensorError:
            continue
        if types and zone_type not in types:
            continue
        found.append(
            (
                int(match.group(1)),
                ThermalZone(zone_type, directory / "temp", _lowest_throttle_trip_c(directory)),
            )
        )
    found.sort(key=lambda item: item[0])
    zones: list[ThermalZone] = []
    seen: dict[str, int] = {}
    for _, zone in found:
        # Several zones can share a type ("acpitz"): number repeats so series names stay unique.
        seen[zone.type] = seen.get(zone.type, 0) + 1
        name = zone.type if seen[zone.type] == 1 else f"{zone.type}#{seen[zone.type]}"
        zones.append(ThermalZone(name, zone.temp_path, zone.throttle_at_c))
    return zones


class ThermalSensor(Sensor):
    """Each zone's temperature in °C, then one throttle channel: 1 while any zone is at a throttling trip."""

    backend = "thermal"
    # Most thermal drivers refresh every 100-1000 ms.
    max_rate_hz = 10.0

    def __init__(self, zones: Sequence[ThermalZone], max_temp_c: float | None = None) -> None:
        if not zones:
            raise SensorError("no readable thermal zone")
        self._zones = list(zones)
        trips = [z.throttle_at_c for z in self._zones if z.throttle_at_c is not None]
        #: The temperature at which the board throttles: its zones' lowest throttling trip point, else
        #: the profile's max_temp_c (a board whose zones declare none). The host judges throttling by it.
        self.trip_temp_c: float | None = min(trips) if trips else max_temp_c
        self._channels = [Channel(z.type, TEMP_C) for z in self._zones]
        self._has_trips = any(z.throttle_at_c is not None for z in self._zones)
        if self._has_trips:
            self._channels.append(Channel(THROTTLE_CHANNEL, THROTTLE))

    @classmethod
    def is_available(cls) -> bool:
        return any(under_root(THERMAL_DIR).glob("thermal_zone*/temp"))

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> ThermalSensor:
        zones = find_zones(profile.thermal_zones)
        if not zones and profile.thermal_zones:
            # The profile's names did not match this board's kernel: better all zones than none.
            zones = find_zones()
        return cls(zones, profile.max_temp_c)

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read(self) -> Sequence[float]:
        temps_c = [read_sysfs_int(z.temp_path) / 1000.0 for z in self._zones]
        if not self._has_trips:
            return temps_c
        throttled = any(
            z.throttle_at_c is not None and t >= z.throttle_at_c for z, t in zip(self._zones, temps_c, strict=True)
        )
        return [*temps_c, 1.0 if throttled else 0.0]


def max_temperature_c(types: Sequence[str] = ()) -> float | None:
    """The hottest zone now (of ``types``, all when empty), None where no zone reads. For settling."""
    temps_c: list[float] = []
    for zone in find_zones(types) or (find_zones() if types else []):
        try:
            temps_c.append(read_sysfs_int(zone.temp_path) / 1000.0)
        except SensorError:
            continue
    return max(temps_c) if temps_c else None
