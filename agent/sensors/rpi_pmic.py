"""Raspberry Pi 5 board power from the PMIC's rail telemetry (`vcgencmd pmic_read_adc`), calibrated."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from agent.errors import SensorError
from agent.sensors.base import POWER_MW, Channel, Sensor

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

CHANNEL = "pmic"
DEFAULT_COMMAND = "vcgencmd"
#: Overrides the profile's command (a full path, or a name looked up on PATH).
COMMAND_ENV = "EDGEPROF_VCGENCMD"

# Firmware prints "  VDD_CORE_A current(7)=2.63A"; older builds "VDD_CORE_A=2.63A".
_LINE = re.compile(r"^\s*(?P<rail>\S+?)_(?P<what>[AV])(?:\s+\w+\(\d+\))?=(?P<value>[-+0-9.eE]+)[AV]?\s*$")


def parse_pmic_adc(text: str) -> dict[str, tuple[float, float]]:
    """Rails that report both volts and amps: {rail: (volts, amps)}. Lines that do not parse are ignored."""
    volts: dict[str, float] = {}
    amps: dict[str, float] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        (amps if match["what"] == "A" else volts)[match["rail"]] = value
    # EXT5V and BATT report only a voltage: they carry no current of their own to add.
    return {rail: (volts[rail], amps[rail]) for rail in sorted(volts.keys() & amps.keys())}


def resolve_command(configured: str | None = None) -> str | None:
    """The vcgencmd to run: $EDGEPROF_VCGENCMD, else the profile's, else "vcgencmd" on PATH."""
    command = os.environ.get(COMMAND_ENV) or configured or DEFAULT_COMMAND
    return shutil.which(command)


def run_pmic_read_adc(command: str, timeout_s: float = 2.0) -> str:
    try:
        done = subprocess.run(
            [command, "pmic_read_adc"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SensorError(f"{command} pmic_read_adc: {err}") from err
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise SensorError(f"{command} pmic_read_adc exited {done.returncode}: {detail[0] if detail else ''}")
    return done.stdout


class RpiPmicSensor(Sensor):
    """One channel: calibrated board power in mW, ``scale * sum(V x I) + offset_w``.

    The PMIC measures its own output rails only; conversion losses and the 5 V peripherals are missing,
    so the profile carries a linear fit against a meter on the 5 V input.
    """

    backend = "rpi_pmic"
    # Each read forks vcgencmd (about 10-30 ms on a Pi 5).
    max_rate_hz = 10.0

    def __init__(
        self, command: str, scale: float = 1.0, offset_w: float = 0.0, roles: Mapping[str, str] | None = None
    ) -> None:
        self._command = command
        self._scale = scale
        self._offset_w = offset_w
        self._channels = [Channel(CHANNEL, POWER_MW, (roles or {}).get(CHANNEL, "total"))]

    @classmethod
    def is_available(cls, configured: str | None = None) -> bool:
        """True where vcgencmd exists and its PMIC reports rails (a Pi 4's firmware has no such command)."""
        command = resolve_command(configured)
        if command is None:
            return False
        try:
            return bool(parse_pmic_adc(run_pmic_read_adc(command)))
        except SensorError:
            return False

    @classmethod
    def from_profile(cls, profile: DeviceProfile) -> RpiPmicSensor:
        options = profile.options_for(cls.backend)
        configured = options.get("vcgencmd")
        command = resolve_command(str(configured) if configured else None)
        if command is None:
            raise SensorError(f"vcgencmd not found (set {COMMAND_ENV} or the profile's rpi_pmic.vcgencmd)")
        return cls(
            command,
            float(options.get("scale", 1.0)),
            float(options.get("offset_w", 0.0)),
            profile.rails,
        )

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read_rails(self) -> dict[str, tuple[float, float]]:
        rails = parse_pmic_adc(run_pmic_read_adc(self._command))
        if not rails:
            raise SensorError(f"{self._command} pmic_read_adc printed no rail with both volts and amps")
        return rails

    def read(self) -> Sequence[float]:
        raw_w = sum(volts * amps for volts, amps in self.read_rails().values())
        return [(self._scale * raw_w + self._offset_w) * 1000.0]
