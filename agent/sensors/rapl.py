"""RAPL powercap energy counters (Intel/AMD package and DRAM zones), unwrapped in the backend."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import SensorError
from agent.sensors.base import ENERGY_UJ, Channel, Sensor, read_sysfs_int, read_sysfs_text, under_root

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

POWERCAP_DIR = "/sys/class/powercap"
#: A generous upper bound on one zone's power, used to derive how often a counter must be read.
DEFAULT_MAX_POWER_W = 500.0

_ZONE = re.compile(r"intel-rapl:(\d+)(?::(\d+))?")
GRANT_ACCESS_HINT = (
    "RAPL energy counters are readable by root only (since the 2020 PLATYPUS fix): run the agent as root "
    "or grant read access, e.g. `sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj` "
    '(persist with a udev rule: SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod a+r %S%p/energy_uj")'
)


@dataclass(frozen=True)
class Zone:
    """One powercap zone: its channel name, role, the zone it is a part of, counter file and wrap range."""

    name: str
    role: str
    energy_path: Path
    max_range_uj: int
    part_of: str = ""


def _zone_role(zone_name: str) -> str:
    if zone_name == "psys":
        return "total"  # the platform: package, DRAM and the rest of the SoC's supply
    if zone_name.startswith("package") or zone_name in ("core", "uncore"):
        return "cpu"
    if zone_name == "dram":
        return "dram"
    return ""


def find_zones(roles: Mapping[str, str] | None = None) -> list[Zone]:
    """Every zone with a counter, each with the zone it is a part of: psys ⊃ package-N ⊃ core/uncore,
    and DRAM (outside the package domain) within psys. The host sums psys where there is one, else the
    packages and DRAM, and reports the parts beside them without counting them twice.

    Raises SensorError when a counter exists but cannot be read (root-only), with how to grant access.
    """
    roles = roles or {}
    base = under_root(POWERCAP_DIR)
    found: list[tuple[str, str, str, Path]] = []  # (channel, zone name, parent package channel, directory)
    packages: dict[str, str] = {}
    for directory in sorted(base.glob("intel-rapl:*")):
        match = _ZONE.fullmatch(directory.name)
        if not match or not (directory / "energy_uj").exists():
            continue
        zone_name = read_sysfs_text(directory / "name")
        package = match.group(1)
        if match.group(2) is None:
            packages[package] = zone_name
            found.append((zone_name, zone_name, "", directory))
        else:
            found.append((f"{zone_name}-{package}", zone_name, package, directory))
    platform = "psys" if "psys" in packages.values() else ""
    zones: list[Zone] = []
    for channel, zone_name, package, directory in found:
        if zone_name == "psys":
            parent = ""
        elif zone_name == "dram" or not package:
            parent = platform  # DRAM is outside the package domain, a sibling of it within psys
        else:
            parent = packages.get(package, "")
        energy_path = directory / "energy_uj"
        try:
            with open(energy_path, "rb") as handle:
                handle.read()
        except PermissionError as err:
            raise SensorError(f"{energy_path}: permission denied. {GRANT_ACCESS_HINT}") from err
        except OSError as err:
            raise SensorError(f"cannot read {energy_path}: {err.strerror or err}") from err
        max_range_uj = read_sysfs_int(directory / "max_energy_range_uj")
        role = roles.get(channel, _zone_role(zone_name))
        zones.append(Zone(channel, role, energy_path, max_range_uj, parent))
    return zones


class RaplSensor(Sensor):
    """Cumulative energy per zone in µJ, unwrapped: each read adds the counter's advance since the last.

    A counter that wraps twice between two reads loses a whole range, so besides the sampler (which
    polls at least ``min_rate_hz``), a small guard thread reads at that rate whenever the sensor is
    open, keeping the running totals right between jobs and when a sampler falls behind.
    """

    backend = "rapl"
    # The hardware updates the counters about every millisecond.
    max_rate_hz = 1000.0

    def __init__(self, zones: Sequence[Zone], max_power_w: float = DEFAULT_MAX_POWER_W, guard: bool = True) -> None:
        if not zones:
            raise SensorError("no RAPL powercap zones found")
        if max_power_w <= 0:
            raise ValueError("max_power_w must be positive")
        self._zones = list(zones)
        self._channels = [Channel(z.name, ENERGY_UJ, z.role, z.part_of) for z in self._zones]
        # Read at least twice per wrap at max_power: range_uj / (max_power_w * 1e6) seconds per wrap.
        shortest_wrap_s = min(z.max_range_uj for z in self._zones) / (max_power_w * 1e6)
        self.min_rate_hz = 2.0 / shortest_wrap_s
        self._lock = threading.Lock()
        self._last_raw = [read_sysfs_int(z.energy_path) for z in self._zones]
        self._total_uj = [0 for _ in self._zones]
        self._stop = threading.Event()
        self._guard: threading.Thread | None = None
        if guard:
            self._guard = threading.Thread(target=self._guard_loop, name="rapl-wrap-guard", daemon=True)
            self._guard.start()

    @classmethod
    def is_available(cls) -> bool:
        return any(under_root(POWERCAP_DIR).glob("intel-rapl:*/energy_uj"))

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> RaplSensor:
        options = profile.options_for(cls.backend)
        return cls(find_zones(profile.rails), float(options.get("max_power_w", DEFAULT_MAX_POWER_W)))

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read(self) -> Sequence[float]:
        # Read under the lock: the guard and the sampler must apply their readings in the order taken,
        # or an older reading applied after a newer one would look like a wrap.
        with self._lock:
            raws = [read_sysfs_int(z.energy_path) for z in self._zones]
            for i, (zone, raw) in enumerate(zip(self._zones, raws, strict=True)):
                delta = raw - self._last_raw[i]
                if delta < 0:
                    # The counter wrapped past max_energy_range_uj back to zero.
                    delta += zone.max_range_uj
                self._total_uj[i] += delta
                self._last_raw[i] = raw
            return [float(t) for t in self._total_uj]

    def _guard_loop(self) -> None:
        period_s = 1.0 / self.min_rate_hz
        while not self._stop.wait(period_s):
            try:
                self.read()
            except SensorError:
                # The sampler reports read errors; the guard only keeps wraps from being missed.
                continue

    def close(self) -> None:
        self._stop.set()
        if self._guard is not None and self._guard.is_alive():
            self._guard.join(timeout=2.0)
