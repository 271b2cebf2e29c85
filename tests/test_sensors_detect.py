"""Sensor detection order, absent vs broken backends, live descriptions, and `agent sensors` output."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from sensor_fakes import (
    ORIN_NANO_RAILS,
    build_cpufreq,
    build_orin_nano,
    build_rapl_zone,
    build_thermal,
    start_um_simulator,
    um_frame,
)

import agent.sensors.detect as detect_module
from agent.device.profiles import DeviceProfile, load_profile
from agent.errors import SensorError
from agent.sensors.base import POWER_MW, Channel, Sensor
from agent.sensors.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, run_sensors_command
from agent.sensors.detect import DEFAULT_POWER_ORDER, Backend, describe_sensors, detect_sensors


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(root))
    monkeypatch.delenv("EDGEPROF_VCGENCMD", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no real vcgencmd on this box
    return root


class _Fixed(Sensor):
    def __init__(self, backend: str, power_mw: float = 1000.0) -> None:
        self.backend = backend
        self._power_mw = power_mw

    def channels(self) -> Sequence[Channel]:
        return [Channel(self.backend, POWER_MW, "total")]

    def read(self) -> Sequence[float]:
        return [self._power_mw]


def _recording_backends(present: set[str], broken: set[str], tried: list[str]) -> dict[str, Backend]:
    def make(name: str) -> Backend:
        def available(_: DeviceProfile) -> bool:
            tried.append(name)
            return name in present or name in broken

        def create(_: DeviceProfile) -> Sensor:
            if name in broken:
                raise SensorError(f"{name} is present but broken")
            return _Fixed(name)

        return Backend(name, available, create)

    names = [*DEFAULT_POWER_ORDER, "thermal", "cpufreq"]
    return {name: make(name) for name in names if name != "usbmeter" or name in present}


def test_default_order_then_thermal_and_cpufreq() -> None:
    tried: list[str] = []
    backends = _recording_backends({"rapl", "nvml", "thermal"}, set(), tried)

    detection = detect_sensors(DeviceProfile(name="p"), None, backends)

    assert tried == ["ina3221", "rpi_pmic", "android", "rapl", "nvml", "thermal", "cpufreq"]
    assert [s.backend for s in detection.sensors] == ["rapl", "nvml", "thermal"]
    assert detection.problems == []


def test_profile_order_wins_and_a_broken_backend_is_reported_not_swallowed() -> None:
    tried: list[str] = []
    backends = _recording_backends({"nvml"}, {"rapl"}, tried)

    detection = detect_sensors(DeviceProfile(name="p", power_sensors=("nvml", "rapl")), None, backends)

    assert tried[:2] == ["nvml", "rapl"]
    assert [s.backend for s in detection.sensors] == ["nvml"]
    assert detection.problems == ["rapl: rapl is present but broken"]


def test_a_power_meter_on_the_command_line_comes_first(root: Path) -> None:
    device = start_um_simulator(um_frame(0x09C9, 5100, 8000, 4080))
    tried: list[str] = []
    backends = _recording_backends({"rapl"}, set(), tried)
    try:
        detection = detect_sensors(load_profile("x86-rapl"), f"um25c:{device.port}", backends)
        try:
            backends_found = [s.backend for s in detection.sensors]
            first_reading = detection.sensors[0].read()[0]
        finally:
            detection.close()
    finally:
        device.close()

    assert backends_found == ["usbmeter", "rapl"]
    assert first_reading == pytest.approx(4080.0)


def test_only_the_first_board_total_keeps_the_total_role(root: Path) -> None:
    # A Pi 5 with a USB meter: the meter and the PMIC both measure the board; the host sums every
    # "total" channel, so the PMIC's must step back or the board would be counted twice.
    tried: list[str] = []
    backends = _recording_backends({"usbmeter", "rpi_pmic"}, set(), tried)

    detection = detect_sensors(load_profile("rpi5"), "um25c:/dev/ttyUSB0", backends)

    roles = [(s.backend, [ch.role for ch in s.channels()]) for s in detection.sensors]
    assert roles == [("usbmeter", ["total"]), ("rpi_pmic", [""])]
    assert detection.sensors[1].read() == [1000.0]


class _Rails(Sensor):
    """A board rail and a part of it, under names another backend may also use."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def channels(self) -> Sequence[Channel]:
        return [Channel("board", POWER_MW, "total"), Channel("cpu", POWER_MW, "cpu", part_of="board")]

    def read(self) -> Sequence[float]:
        return [5000.0, 2000.0]


def test_a_channel_name_another_sensor_already_uses_is_renamed_and_said() -> None:
    # The host keeps a job's series by name: two sensors' "board" would be merged into one series.
    def backend(name: str, present: bool) -> Backend:
        return Backend(name, lambda _: present, lambda _: _Rails(name))

    backends = {name: backend(name, name in ("rapl", "nvml")) for name in ("rapl", "nvml", "thermal", "cpufreq")}

    detection = detect_sensors(DeviceProfile(name="p", power_sensors=("rapl", "nvml")), None, backends)

    channels = [(s.backend, [(c.name, c.role, c.part_of) for c in s.channels()]) for s in detection.sensors]
    assert channels == [
        ("rapl", [("board", "total", ""), ("cpu", "cpu", "board")]),
        ("nvml", [("board@nvml", "", ""), ("cpu@nvml", "cpu", "board@nvml")]),  # its total steps back as well
    ]
    assert detection.sensors[1].read() == [5000.0, 2000.0]
    assert detection.problems == [
        "nvml: channel 'board' has the name of another sensor's; reported as 'board@nvml'",
        "nvml: channel 'cpu' has the name of another sensor's; reported as 'cpu@nvml'",
    ]


def test_a_malformed_power_meter_spec_is_a_value_error(root: Path) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        detect_sensors(load_profile("rpi4"), "um99:/dev/ttyUSB0")


def test_orin_nano_tree_detects_ina3221_thermal_cpufreq(root: Path) -> None:
    build_orin_nano(root)
    build_thermal(root, {"cpu-thermal": 40.0, "gpu-thermal": 41.0})
    build_cpufreq(root, [729_600] * 6)

    detection = detect_sensors(load_profile("jetson-orin-nano"))

    assert [s.backend for s in detection.sensors] == ["ina3221", "thermal", "cpufreq"]
    assert detection.problems == []


def test_generic_box_with_rapl_uses_the_default_order_and_finds_it(root: Path) -> None:
    build_rapl_zone(root, "intel-rapl:0", "package-0", 5)
    build_thermal(root, {"x86_pkg_temp": 45.0})

    detection = detect_sensors(load_profile("generic-linux"))
    detection.close()

    assert [s.backend for s in detection.sensors] == ["rapl", "thermal"]


def test_describe_turns_energy_counters_into_watts(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock:
        """describe_sensors' clock: its sleep advances time exactly, so the window is exactly known."""

        now_s = 1000.0

        def monotonic(self) -> float:
            return self.now_s

        def sleep(self, seconds: float) -> None:
            self.now_s += seconds

    clock = Clock()
    monkeypatch.setattr(detect_module, "time", clock)

    class Counter(Sensor):
        """A 4 W source: its energy counter (µJ) is 4 W times the clock."""

        backend = "counter"

        def channels(self) -> Sequence[Channel]:
            return [Channel("package-0", "energy_uj", "total")]

        def read(self) -> Sequence[float]:
            return [4.0 * clock.now_s * 1e6]

    (row,) = describe_sensors([Counter()], energy_window_s=0.05)

    assert row["unit"] == "W"
    assert row["value"] == pytest.approx(4.0, rel=1e-9)  # 0.2 J over exactly 0.05 s


def test_sensors_command_json_on_an_orin_nano(root: Path) -> None:
    build_orin_nano(root)
    build_thermal(root, {"cpu-thermal": 40.5})
    build_cpufreq(root, [1_510_400])
    out = io.StringIO()

    status = run_sensors_command(None, None, as_json=True, out=out)

    doc = json.loads(out.getvalue())
    assert status == EXIT_OK
    assert doc["profile"] == "jetson-orin-nano" and doc["profile_detected"] is True
    rows = {row["channel"]: row for row in doc["sensors"]}
    assert rows["VDD_IN"]["value"] == pytest.approx(ORIN_NANO_RAILS[0].power_mw / 1000)
    assert (rows["VDD_IN"]["unit"], rows["VDD_IN"]["role"], rows["VDD_IN"]["backend"]) == (
        "W",
        "total",
        "ina3221",
    )
    assert rows["cpu-thermal"]["value"] == 40.5 and rows["cpu-thermal"]["unit"] == "C"
    assert rows["cpu0_freq"]["value"] == pytest.approx(1510.4) and rows["cpu0_freq"]["unit"] == "MHz"
    assert doc["problems"] == []


def test_sensors_command_text_lists_rails_and_problems(root: Path) -> None:
    build_orin_nano(root)
    build_rapl_zone(root, "intel-rapl:0", "package-0").rename(root / "sys/class/powercap/intel-rapl:0/x")
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").mkdir()  # present but unreadable
    out = io.StringIO()

    status = run_sensors_command("generic-linux", None, as_json=False, out=out)

    text = out.getvalue()
    assert status == EXIT_PROBLEMS
    assert "VDD_IN" in text and "5.194 W" in text
    problem_lines = [line for line in text.splitlines() if line.startswith("problem: ")]
    assert len(problem_lines) == 1 and "rapl" in problem_lines[0]


def test_sensors_command_unknown_profile(root: Path) -> None:
    out = io.StringIO()

    assert run_sensors_command("jetson-tx9", None, as_json=False, out=out) == EXIT_USAGE
    assert "unknown device profile 'jetson-tx9'" in out.getvalue()
