"""Android battery, Raspberry Pi 5 PMIC, thermal zones, cpufreq and worker memory, on faked hardware."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sensor_fakes import (
    PI5_PMIC_OUTPUT,
    PI5_PMIC_RAW_W,
    build_android_battery,
    build_cpufreq,
    build_thermal,
    write,
    write_fake_vcgencmd,
)

from agent.errors import SensorError
from agent.profiles import DeviceProfile, load_profile
from agent.sensors.android import AndroidBatterySensor
from agent.sensors.base import CPU_FREQ_KHZ, TEMP_C, THROTTLE
from agent.sensors.cpufreq import CpuFreqSensor
from agent.sensors.memory import ProcessMemorySensor
from agent.sensors.rpi_pmic import RpiPmicSensor, parse_pmic_adc
from agent.sensors.thermal import ThermalSensor, max_temperature_c


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tmp_path / "root"))
    return tmp_path / "root"


def _profile(**sensor_options: object) -> DeviceProfile:
    return DeviceProfile(name="test", sensor_options=sensor_options, rails={"battery": "total", "pmic": "total"})


# --- Android ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sign", "current_ua"),
    [("discharge_negative", -500_000), ("discharge_positive", 500_000)],
)
def test_android_discharge_reads_positive_power_under_either_sign_convention(
    root: Path, sign: str, current_ua: int
) -> None:
    build_android_battery(root, current=current_ua, voltage=3_900_000)

    sensor = AndroidBatterySensor.from_profile(_profile(android={"sign": sign}))

    # 0.5 A at 3.9 V.
    assert sensor.read() == [pytest.approx(1950.0)]
    assert sensor.channels()[0].role == "total"


def test_android_kernels_reporting_milli_units(root: Path) -> None:
    build_android_battery(root, current=-250, voltage=4000)

    sensor = AndroidBatterySensor.from_profile(
        _profile(android={"sign": "discharge_negative", "current_unit": "mA", "voltage_unit": "mV"})
    )

    assert sensor.read() == [pytest.approx(1000.0)]


@pytest.mark.parametrize("current_ua", [-1_000_000, 1_000_000])
def test_android_generic_profile_detects_the_discharge_sign_instead_of_assuming_it(root: Path, current_ua: int) -> None:
    build_android_battery(root, current=current_ua, voltage=4_000_000)

    assert AndroidBatterySensor.from_profile(load_profile("android-generic")).read() == [pytest.approx(4000.0)]


@pytest.mark.parametrize("status", ["Charging", "Not charging", "Full"])
def test_android_sign_cannot_be_detected_on_external_power_and_says_how_to_pin_it(root: Path, status: str) -> None:
    build_android_battery(root, current=-257_109, voltage=4_170_660, status=status)  # an Xperia, charging
    expected = f'battery {status}: unplug the phone once .* pin sign = "discharge_negative"'
    with pytest.raises(SensorError, match=expected):
        AndroidBatterySensor.from_profile(load_profile("android-generic"))


def test_android_bad_sign_option_is_refused(root: Path) -> None:
    build_android_battery(root, current=1, voltage=1)
    with pytest.raises(ValueError, match="sign"):
        AndroidBatterySensor.from_profile(_profile(android={"sign": "up"}))


# --- Raspberry Pi 5 PMIC ------------------------------------------------------------------------


def test_pmic_sums_v_times_i_over_paired_rails_with_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write_fake_vcgencmd(tmp_path / "bin", PI5_PMIC_OUTPUT)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")

    sensor = RpiPmicSensor.from_profile(load_profile("rpi5"))

    assert RpiPmicSensor.is_available()
    assert sensor.read() == [pytest.approx((1.1451 * PI5_PMIC_RAW_W + 0.5879) * 1000)]
    assert set(sensor.read_rails()) == {"3V7_WL_SW", "3V3_SYS", "VDD_CORE"}


def test_pmic_command_from_env_overrides_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = write_fake_vcgencmd(tmp_path / "elsewhere", PI5_PMIC_OUTPUT)
    monkeypatch.setenv("EDGEPROF_VCGENCMD", str(script))

    sensor = RpiPmicSensor.from_profile(_profile(rpi_pmic={"scale": 1.0, "offset_w": 0.0}))

    assert sensor.read() == [pytest.approx(PI5_PMIC_RAW_W * 1000)]


def test_older_firmware_format_parses() -> None:
    assert parse_pmic_adc("VDD_CORE_A=1.5A\nVDD_CORE_V=0.9000V\nEXT5V_V=5.1V\n") == {"VDD_CORE": (0.9, 1.5)}


def test_pi4_firmware_without_pmic_command_is_not_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = write_fake_vcgencmd(tmp_path / "bin", 'error=1 error_msg="Command not registered"\n', exit_code=1)
    monkeypatch.setenv("EDGEPROF_VCGENCMD", str(script))

    assert not RpiPmicSensor.is_available()
    with pytest.raises(SensorError, match="exited 1"):
        RpiPmicSensor(str(script)).read()


# --- thermal and cpufreq ------------------------------------------------------------------------


def test_thermal_reads_profile_zones_and_flags_throttling_at_the_passive_trip(root: Path) -> None:
    build_thermal(root, {"cpu-thermal": 48.5, "gpu-thermal": 51.0, "tj-thermal": 51.5, "wifi": 60.0}, 80.0)
    profile = DeviceProfile(name="t", thermal_zones=("cpu-thermal", "gpu-thermal", "tj-thermal"))

    sensor = ThermalSensor.from_profile(profile)
    cool = sensor.read()
    write(root, "/sys/class/thermal/thermal_zone1/temp", 80500)
    hot = sensor.read()

    assert [(ch.name, ch.kind) for ch in sensor.channels()] == [
        ("cpu-thermal", TEMP_C),
        ("gpu-thermal", TEMP_C),
        ("tj-thermal", TEMP_C),
        ("thermal_throttle", THROTTLE),
    ]
    assert cool == [48.5, 51.0, 51.5, 0.0]
    assert hot == [48.5, 80.5, 51.5, 1.0]


def test_max_temperature_for_settling(root: Path) -> None:
    build_thermal(root, {"cpu-thermal": 42.0, "gpu-thermal": 47.25, "acpitz": 70.0})

    assert max_temperature_c(("cpu-thermal", "gpu-thermal")) == 47.25
    assert max_temperature_c() == 70.0
    # A profile naming zones this kernel does not have still gets a reading from all zones.
    assert max_temperature_c(("CPU-therm",)) == 70.0


def test_no_thermal_zone_means_no_temperature(root: Path) -> None:
    root.mkdir(parents=True)
    assert max_temperature_c() is None
    assert not ThermalSensor.is_available()


def test_cpufreq_reads_khz_per_core_and_the_raspberry_pi_throttle_flag(root: Path) -> None:
    build_cpufreq(root, [1_500_000, 1_800_000], governor="ondemand")
    write(root, "/sys/devices/platform/soc/soc:firmware/get_throttled", "0")
    sensor = CpuFreqSensor.from_profile(load_profile("rpi4"))

    first = sensor.read()
    write(root, "/sys/devices/platform/soc/soc:firmware/get_throttled", "0x4")  # currently throttled
    second = sensor.read()

    assert [ch.kind for ch in sensor.channels()] == [CPU_FREQ_KHZ, CPU_FREQ_KHZ, THROTTLE]
    assert first == [1_500_000.0, 1_800_000.0, 0.0]
    assert second[-1] == 1.0
    assert sensor.governor == "ondemand"


def test_cpufreq_x86_throttle_counter_flags_new_events_only(root: Path) -> None:
    build_cpufreq(root, [3_000_000])
    counter = "/sys/devices/system/cpu/cpu0/thermal_throttle/package_throttle_count"
    write(root, counter, 17)  # events from before the agent started do not count
    sensor = CpuFreqSensor.from_profile(load_profile("x86-rapl"))

    before = sensor.read()[-1]
    write(root, counter, 18)

    assert (before, sensor.read()[-1]) == (0.0, 1.0)


# --- memory -------------------------------------------------------------------------------------


def test_process_memory_sees_a_child_grow_and_reports_when_it_is_gone() -> None:
    code = (
        "import sys\n"
        "sys.stdin.readline()\n"
        "b = bytearray(64 << 20)\n"
        "b[::4096] = b'x' * len(b[::4096])  # touch every page so it is resident\n"
        "print(1, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        sensor = ProcessMemorySensor(child.pid)
        (before,) = sensor.read()
        child.stdin.write("go\n")
        child.stdin.flush()
        child.stdout.readline()  # the child has touched its 64 MiB
        (after,) = sensor.read()
    finally:
        child.stdin.write("end\n")
        child.stdin.flush()
        child.wait(timeout=10)

    assert sensor.channels()[0].name == "worker"
    assert after - before > 60 * (1 << 20)
    with pytest.raises(SensorError, match=str(child.pid)):
        sensor.read()
