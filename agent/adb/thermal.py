"""The phone's thermal zones: which ones the battery loop samples, and the temperature at which the phone throttles.

One shell call lists every zone (its number, type, temperature now and throttling trip points); the battery
loop (agent/adb/battery.py) then reads the chosen zones' `temp` files with the shell's `read` builtin next
to the gauge, so a temperature costs no fork and no adb round trip. Qualcomm kernels also expose battery
current, voltage and state of charge as "thermal" zones (pm8550b-ibat-lvl0, vbat, soc, bcl): their
readings and trip points are not temperatures and would fake throttling, so they are left out unless the
profile names them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

THERMAL_DIR = "/sys/class/thermal"
#: Trip types at which the kernel caps clocks ("active" only spins a fan), as agent/sensors/thermal.py.
THROTTLING_TRIPS = ("passive", "hot", "critical")
#: Zones that measure the battery's current, voltage or charge, not a temperature.
_NOT_TEMPERATURE = re.compile(r"ibat|vbat|lvl|bcl|^soc$|socd", re.I)
#: A temperature sensor that reads outside this range (°C) is disabled or not a temperature.
PLAUSIBLE_C = (5.0, 150.0)
#: Trip points below this (°C) are limits on something else (battery current in mA reads as °C / 1000).
MIN_TRIP_C = 30.0
#: Series names the bridge already uses for the battery.
_RESERVED = ("battery", "battery-temp")

#: Prints "zone N TEMP_mC TYPE" per readable zone, then "trip N TYPE TEMP_mC" per trip point.
LIST_COMMAND = (
    f"for z in {THERMAL_DIR}/thermal_zone*; do n=${{z##*thermal_zone}}; read t 2>/dev/null < $z/temp || continue;"
    ' read y 2>/dev/null < $z/type; echo "zone $n $t $y"; for f in $z/trip_point_*_type; do'
    ' [ -r $f ] || continue; read k < $f; read v 2>/dev/null < ${f%_type}_temp && echo "trip $n $k $v"; done; done'
)


@dataclass(frozen=True)
class PhoneZone:
    """One zone the loop reads: its series name, number (thermal_zoneN) and lowest throttling trip (°C)."""

    name: str
    number: int
    throttle_at_c: float | None

    @property
    def temp_path(self) -> str:
        return f"{THERMAL_DIR}/thermal_zone{self.number}/temp"


def parse_zones(output: str, types: Sequence[str] = ()) -> list[PhoneZone]:
    """The zones to sample from LIST_COMMAND's output: those of ``types`` (all temperature zones when empty,
    or when none of ``types`` is on this phone), by zone number, names made unique."""
    readings: dict[int, tuple[str, float]] = {}
    trips: dict[int, list[float]] = {}
    for line in output.splitlines():
        parts = line.split()
        try:
            if len(parts) >= 4 and parts[0] == "zone":
                readings[int(parts[1])] = (" ".join(parts[3:]), int(parts[2]) / 1000.0)
            elif len(parts) == 4 and parts[0] == "trip" and parts[2] in THROTTLING_TRIPS:
                trips.setdefault(int(parts[1]), []).append(int(parts[3]) / 1000.0)
        except ValueError:
            continue
    wanted = [n for n, (kind, _) in readings.items() if kind in types]
    if not wanted:
        low, high = PLAUSIBLE_C
        wanted = [
            n for n, (kind, temp_c) in readings.items() if not _NOT_TEMPERATURE.search(kind) and low <= temp_c <= high
        ]
    zones: list[PhoneZone] = []
    seen: dict[str, int] = {name: 1 for name in _RESERVED}
    for number in sorted(wanted):
        kind = readings[number][0] or f"thermal_zone{number}"
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}#{seen[kind]}"
        usable = [t for t in trips.get(number, []) if t >= MIN_TRIP_C]
        zones.append(PhoneZone(name, number, min(usable) if usable else None))
    return zones


def trip_temp_c(zones: Sequence[PhoneZone], max_temp_c: float | None) -> float | None:
    """The temperature the host judges throttling by: the zones' lowest trip point, else the profile's max_temp_c."""
    trips = [z.throttle_at_c for z in zones if z.throttle_at_c is not None]
    return min(trips) if trips else max_temp_c
