"""The phone's fuel gauge, sampled on the phone by one long-lived shell loop with phone-side timestamps.

One adb call per sample would cost a round trip each (milliseconds over USB, tens over Wi-Fi) and put the
host's clock on every sample; the loop reads /proc/uptime (the phone's own clock since boot) next to
current_now and voltage_now (power_now too where the gauge has it, and the thermal zones' temperatures),
and the bridge maps that clock onto its own once per job. Units (µA/µV as the kernel ABI says, or mA/mV
on some vendor kernels; power_now µW or mW) and the discharge sign are detected from the values unless
the profile pins them; a phone that charges or is on external power (USB, "Not charging") is refused for
energy, never its latency.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BATTERY = "/sys/class/power_supply/battery"
#: A phone draws 10 mA to 5 A: a magnitude this large can only be µA (20 A in mA would be absurd).
_MICRO_CURRENT_MIN = 20_000
#: A phone draws 30 mW to 20 W: a magnitude this large can only be µW (30 W in mW would be absurd).
_MICRO_POWER_MIN = 30_000
#: Battery voltage is 3-5 V: above this it is µV.
_MICRO_VOLTAGE_MIN = 100_000
#: Battery states that mean external power is present: charging, full on the charger, or "Not charging" (plugged
#: in with charging paused: a charge limit, a hot battery). The gauge then sees only what the battery gives or
#: takes, not what the phone draws.
EXTERNAL_POWER_STATES = ("Charging", "Full", "Not charging")
REFUSAL_HINT = "use adb over Wi-Fi, or a hub that cuts VBUS"


def loop_command(period_s: float, power_now: bool = False, zone_paths: Sequence[str] = ()) -> str:
    """Shell loop printing "@ uptime_s current voltage temp_decic power zone_temp_mc..." per sample.

    `read` is a builtin: a sample costs no fork. A value that does not read prints as "-" so that fields
    keep their places; power is "-" on a phone without power_now.
    """
    reads = [_read("c", "$B/current_now"), _read("v", "$B/voltage_now"), _read("T", "$B/temp")]
    reads.append(_read("P", "$B/power_now") if power_now else "P=-;")
    zones = [_read(f"z{i}", path) for i, path in enumerate(zone_paths)]
    fields = " ".join(["$t", "$c", "$v", "$T", "$P", *(f"$z{i}" for i in range(len(zone_paths)))])
    return (
        f"B={BATTERY}; while :; do read t _ < /proc/uptime; {' '.join(reads + zones)}"
        f' echo "@ {fields}"; sleep {period_s:.3f}; done'
    )


def _read(var: str, path: str) -> str:
    return f"read {var} 2>/dev/null < {path} || {var}=-;"


@dataclass(frozen=True)
class GaugeSample:
    uptime_ns: int
    current: float
    voltage: float
    temp_c: float | None
    #: power_now as read (µW or mW, sign as the gauge reports it); None on a phone without it.
    power: float | None = None
    #: The sampled thermal zones' temperatures, °C, in the loop's zone order (NaN where one did not read).
    zones_c: tuple[float, ...] = ()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_line(line: str) -> GaugeSample | None:
    parts = line.split()
    if len(parts) < 4 or parts[0] != "@":
        return None
    uptime_s, current, voltage = (_number(p) for p in parts[1:4])
    if uptime_s is None or current is None or voltage is None:
        return None
    temp = _number(parts[4]) if len(parts) > 4 else None
    power = _number(parts[5]) if len(parts) > 5 else None
    zones = tuple(v / 1000.0 if (v := _number(p)) is not None else math.nan for p in parts[6:])
    return GaugeSample(round(uptime_s * 1e9), current, voltage, None if temp is None else temp / 10.0, power, zones)


def refusal(status: str, powered_by: Sequence[str]) -> str | None:
    """The one line energy is refused with when the phone charges or runs from external power, else None."""
    if status not in EXTERNAL_POWER_STATES and not powered_by:
        return None
    supplies = f", {' and '.join(powered_by)} online" if powered_by else ""
    return (
        f"energy refused: the phone is charging or USB-powered (battery {status}{supplies}), so the fuel gauge does"
        f" not see what the phone draws: {REFUSAL_HINT}"
    )


def refusal_word(status: str, powered_by: Sequence[str]) -> str | None:
    """The refusal in one word for a table cell: "charging", or "plugged-in" (external power, not charging)."""
    if status not in EXTERNAL_POWER_STATES and not powered_by:
        return None
    return "charging" if status == "Charging" else "plugged-in"


#: `dumpsys battery`'s status codes (android.os.BatteryManager.BATTERY_STATUS_*) as the kernel names them.
DUMPSYS_STATUS = {"1": "Unknown", "2": "Charging", "3": "Discharging", "4": "Not charging", "5": "Full"}
_DUMPSYS_POWERED = re.compile(r"^\s*(AC|USB|Wireless|Dock) powered:\s*(true|false)\s*$")
_DUMPSYS_FIELD = re.compile(r"^\s*(status|voltage|current now):\s*(-?\d+)\s*$")
_UEVENT = re.compile(r"^(?:POWER_SUPPLY_)?([A-Z_]+)=(.*)$")


@dataclass(frozen=True)
class PowerState:
    """What a phone says about its power: battery status, external supplies, the gauge's raw current/voltage.

    Read from `dumpsys battery` ("USB powered: true", "status: 2") or a power_supply `uevent`
    ("POWER_SUPPLY_STATUS=Charging"; `acc -i` prints the same keys without the prefix). Values stay as the
    source gives them (uevent µA/µV, dumpsys voltage in mV), None where the source has none.
    """

    status: str | None = None
    powered_by: tuple[str, ...] = ()
    current_now: float | None = None
    voltage_now: float | None = None

    def refusal(self) -> str | None:
        return refusal(self.status or "unknown", self.powered_by)

    def refusal_word(self) -> str | None:
        return refusal_word(self.status or "unknown", self.powered_by)


def parse_power_state(text: str) -> PowerState:
    """The power state in `dumpsys battery` or power_supply uevent output (either, or both concatenated)."""
    status: str | None = None
    powered: list[str] = []
    current: float | None = None
    voltage: float | None = None
    uevent_name = ""
    for line in text.splitlines():
        if m := _DUMPSYS_POWERED.match(line):
            if m.group(2) == "true":
                powered.append(m.group(1).lower())
        elif m := _DUMPSYS_FIELD.match(line):
            key, value = m.group(1), m.group(2)
            if key == "status":
                status = status or DUMPSYS_STATUS.get(value, "Unknown")
            elif key == "voltage":
                voltage = voltage if voltage is not None else float(value)
            else:
                current = current if current is not None else float(value)
        elif m := _UEVENT.match(line.strip()):
            key, value = m.group(1), m.group(2).strip()
            if key == "NAME":
                uevent_name = value
            elif key == "STATUS":
                status = value
            elif key == "ONLINE" and value == "1" and uevent_name and uevent_name != "battery":
                powered.append(uevent_name)
            elif key == "CURRENT_NOW" and _number(value) is not None:
                current = _number(value)
            elif key == "VOLTAGE_NOW" and _number(value) is not None:
                voltage = _number(value)
    return PowerState(status, tuple(dict.fromkeys(powered)), current, voltage)


#: One shell call for the power state: the battery's status file, every supply whose `online` says 1, and
#: `dumpsys battery` (whose "USB powered: true" is there also where a vendor names its supplies otherwise or
#: SELinux hides their files from the shell).
POWER_COMMAND = (
    f'echo "@status $(cat {BATTERY}/status 2>/dev/null)"; for f in /sys/class/power_supply/*/online; do'
    ' [ "$(cat $f 2>/dev/null)" = 1 ] && echo "@online $f"; done; echo @dumpsys; dumpsys battery 2>/dev/null'
)


def power_state(output: str) -> PowerState:
    """POWER_COMMAND's output as one PowerState: the status file wins over dumpsys, supplies are the union."""
    head, _, dumpsys = output.partition("@dumpsys")
    reported = parse_power_state(dumpsys)
    status = next((ln[len("@status ") :].strip() for ln in head.splitlines() if ln.startswith("@status ")), "")
    online = [ln.rstrip("/").split("/")[-2] for ln in head.splitlines() if ln.startswith("@online ")]
    powered = tuple(sorted(set(online) | set(reported.powered_by)))
    return PowerState(status or reported.status or "unknown", powered, reported.current_now, reported.voltage_now)


@dataclass(frozen=True)
class GaugeScale:
    """How raw gauge values become mW: units per reading and the sign that makes discharge positive.

    With `power_unit` set the gauge's own power_now is used; current_now × voltage_now only for a sample
    whose power_now did not read.
    """

    current_unit: str  # "uA" | "mA"
    voltage_unit: str  # "uV" | "mV"
    sign: float  # +1 when current_now is positive while discharging
    power_unit: str | None = None  # "uW" | "mW" when power_now is used
    power_sign: float = 1.0  # +1 when power_now is positive while discharging

    def power_mw(self, sample: GaugeSample) -> float:
        if self.power_unit is not None and sample.power is not None:
            return self.power_sign * sample.power / (1000.0 if self.power_unit == "uW" else 1.0)
        current_ma = sample.current / (1000.0 if self.current_unit == "uA" else 1.0)
        voltage_mv = sample.voltage / (1000.0 if self.voltage_unit == "uV" else 1.0)
        return self.sign * current_ma * voltage_mv / 1000.0

    def describe(self) -> str:
        direction = "positive" if self.sign > 0 else "negative"
        units = f"current_now in {self.current_unit}, voltage_now in {self.voltage_unit}"
        product = f"{units}, {direction} while discharging"
        if self.power_unit is None:
            return product
        power_direction = "positive" if self.power_sign > 0 else "negative"
        return f"power_now in {self.power_unit}, {power_direction} while discharging (preferred to {product})"


def _sign(option: str, values: Sequence[float]) -> float:
    if option == "discharge_positive":
        return 1.0
    if option == "discharge_negative":
        return -1.0
    return -1.0 if values and statistics.median(values) < 0 else 1.0


def detect_scale(samples: Sequence[GaugeSample], options: Mapping[str, Any]) -> GaugeScale:
    """Units and sign from the profile where it pins them ("uA", "discharge_negative"), else from the values.

    Detection needs the phone to be discharging (energy is refused otherwise): the median current's sign is
    then the discharge sign, and the magnitudes tell µ from milli. power_now (µW by the kernel ABI, mW on
    some vendor kernels) is preferred where the phone has it and it reads non-zero; `power_unit = "off"`
    in the profile falls back to current × voltage.
    """
    currents = [s.current for s in samples if s.current != 0]
    voltages = [abs(s.voltage) for s in samples]
    voltage_unit = str(options.get("voltage_unit", "auto"))
    if voltage_unit not in ("uV", "mV"):
        voltage_unit = "uV" if voltages and statistics.median(voltages) >= _MICRO_VOLTAGE_MIN else "mV"
    current_unit = str(options.get("current_unit", "auto"))
    if current_unit not in ("uA", "mA"):
        big = bool(currents) and statistics.median(abs(c) for c in currents) >= _MICRO_CURRENT_MIN
        current_unit = "uA" if big or voltage_unit == "uV" else "mA"
    sign = _sign(str(options.get("sign", "auto")), currents)
    powers = [s.power for s in samples if s.power]
    power_option = str(options.get("power_unit", "auto"))
    power_unit: str | None = None
    if powers and power_option != "off":
        big = statistics.median(abs(p) for p in powers) >= _MICRO_POWER_MIN
        power_unit = power_option if power_option in ("uW", "mW") else ("uW" if big else "mW")
    power_sign = _sign(str(options.get("power_sign", "auto")), powers)
    return GaugeScale(current_unit, voltage_unit, sign, power_unit, power_sign)


def update_period_s(samples: Sequence[GaugeSample]) -> float | None:
    """How often the gauge really refreshes: the median time between changes of its reading (None below 3)."""
    changes = [b.uptime_ns for a, b in itertools.pairwise(samples) if (a.current, a.voltage) != (b.current, b.voltage)]
    if len(changes) < 3:
        return None
    return statistics.median(b - a for a, b in itertools.pairwise(changes)) / 1e9
