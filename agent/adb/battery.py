"""The phone's fuel gauge, sampled on the phone by one long-lived shell loop with phone-side timestamps.

One adb call per sample would cost a round trip each (milliseconds over USB, tens over Wi-Fi) and put the
host's clock on every sample; the loop reads /proc/uptime (the phone's own clock since boot) next to
current_now and voltage_now, and the bridge maps that clock onto its own once per job. Units (µA/µV as
the kernel ABI says, or mA/mV on some vendor kernels) and the discharge sign are detected from the
values unless the profile pins them; a phone that charges or is powered over USB is refused for energy.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BATTERY = "/sys/class/power_supply/battery"
#: A phone draws 10 mA to 5 A: a magnitude this large can only be µA (20 A in mA would be absurd).
_MICRO_CURRENT_MIN = 20_000
#: Battery voltage is 3-5 V: above this it is µV.
_MICRO_VOLTAGE_MIN = 100_000
CHARGING_STATES = ("Charging", "Full")
REFUSAL_HINT = "use adb over Wi-Fi, or a hub that cuts VBUS"


def loop_command(period_s: float) -> str:
    """Shell loop printing "uptime_s current voltage temp_decic" per sample; `read` is a builtin, no fork."""
    return (
        f"B={BATTERY}; while :; do read t _ < /proc/uptime; read c < $B/current_now; read v < $B/voltage_now;"
        f' read T < $B/temp; echo "@ $t $c $v $T"; sleep {period_s:.3f}; done'
    )


@dataclass(frozen=True)
class GaugeSample:
    uptime_ns: int
    current: float
    voltage: float
    temp_c: float | None


def parse_line(line: str) -> GaugeSample | None:
    parts = line.split()
    if len(parts) < 4 or parts[0] != "@":
        return None
    try:
        temp = float(parts[4]) / 10.0 if len(parts) > 4 else None
        return GaugeSample(round(float(parts[1]) * 1e9), float(parts[2]), float(parts[3]), temp)
    except ValueError:
        return None


def refusal(status: str, powered_by: Sequence[str]) -> str | None:
    """The one line energy is refused with when the phone charges or runs from USB power, else None."""
    if status not in CHARGING_STATES and not powered_by:
        return None
    supplies = f", {' and '.join(powered_by)} online" if powered_by else ""
    return (
        f"energy refused: the phone is charging or USB-powered (battery {status}{supplies}), so the fuel gauge does"
        f" not see what the phone draws: {REFUSAL_HINT}"
    )


@dataclass(frozen=True)
class GaugeScale:
    """How raw gauge values become mW: units per reading and the sign that makes discharge positive."""

    current_unit: str  # "uA" | "mA"
    voltage_unit: str  # "uV" | "mV"
    sign: float  # +1 when current_now is positive while discharging

    def power_mw(self, sample: GaugeSample) -> float:
        current_ma = sample.current / (1000.0 if self.current_unit == "uA" else 1.0)
        voltage_mv = sample.voltage / (1000.0 if self.voltage_unit == "uV" else 1.0)
        return self.sign * current_ma * voltage_mv / 1000.0

    def describe(self) -> str:
        direction = "positive" if self.sign > 0 else "negative"
        return f"current_now in {self.current_unit}, voltage_now in {self.voltage_unit}, {direction} while discharging"


def detect_scale(samples: Sequence[GaugeSample], options: Mapping[str, Any]) -> GaugeScale:
    """Units and sign from the profile where it pins them ("uA", "discharge_negative"), else from the values.

    Detection needs the phone to be discharging (energy is refused otherwise): the median current's sign is
    then the discharge sign, and the magnitudes tell µ from milli.
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
    sign_option = str(options.get("sign", "auto"))
    if sign_option == "discharge_positive":
        sign = 1.0
    elif sign_option == "discharge_negative":
        sign = -1.0
    else:
        sign = -1.0 if currents and statistics.median(currents) < 0 else 1.0
    return GaugeScale(current_unit, voltage_unit, sign)


def update_period_s(samples: Sequence[GaugeSample]) -> float | None:
    """How often the gauge really refreshes: the median time between changes of its reading (None below 3)."""
    changes = [b.uptime_ns for a, b in itertools.pairwise(samples) if (a.current, a.voltage) != (b.current, b.voltage)]
    if len(changes) < 3:
        return None
    return statistics.median(b - a for a, b in itertools.pairwise(changes)) / 1e9
