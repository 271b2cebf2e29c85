"""Jetson INA3221 rails read from fake sysfs trees of each board and JetPack layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from sensor_fakes import (
    AGX_ORIN_RAILS_A,
    AGX_ORIN_RAILS_B,
    NANO_RAILS,
    ORIN_NANO_RAILS,
    XAVIER_NX_RAILS,
    build_agx_orin,
    build_jetson_nano,
    build_orin_nano,
    build_xavier_nx,
    write,
)

from agent.device.profiles import load_profile
from agent.errors import SensorError
from agent.sensors.base import POWER_MW
from agent.sensors.ina3221 import SUM_CHANNEL, Ina3221Sensor


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tmp_path))
    return tmp_path


def _readings(sensor: Ina3221Sensor) -> dict[str, tuple[str, float]]:
    return {ch.name: (ch.role, value) for ch, value in zip(sensor.channels(), sensor.read(), strict=True)}


def test_orin_nano_tree_reads_vdd_in_as_total(root: Path) -> None:
    build_orin_nano(root)

    sensor = Ina3221Sensor.from_profile(load_profile("jetson-orin-nano"))

    readings = _readings(sensor)
    assert readings["VDD_IN"] == ("total", pytest.approx(5072 * 1024 / 1000))
    assert readings["VDD_CPU_GPU_CV"][0] == "cpu_gpu_cv"
    assert readings["VDD_SOC"] == ("soc", pytest.approx(ORIN_NANO_RAILS[2].power_mw))
    assert all(ch.kind == POWER_MW for ch in sensor.channels())


def test_hwmon_sum_of_shunts_channel_is_not_a_rail(root: Path) -> None:
    build_orin_nano(root)

    sensor = Ina3221Sensor.from_profile(load_profile("jetson-orin-nano"))

    assert [ch.name for ch in sensor.channels()] == [r.label for r in ORIN_NANO_RAILS]


def test_xavier_nx_jetpack5_hwmon_rails_and_roles(root: Path) -> None:
    build_xavier_nx(root)

    readings = _readings(Ina3221Sensor.from_profile(load_profile("jetson-xavier-nx")))

    assert readings == {
        r.label: (role, pytest.approx(r.power_mw))
        for r, role in zip(XAVIER_NX_RAILS, ("total", "cpu_gpu_cv", "soc"), strict=True)
    }


def test_nano_jetpack4_iio_reads_the_drivers_power_files(root: Path) -> None:
    build_jetson_nano(root)
    # The driver's own power file wins over V x I (it is what tegrastats shows).
    write(root, "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input", 3333)

    readings = _readings(Ina3221Sensor.from_profile(load_profile("jetson-nano")))

    assert readings["POM_5V_IN"] == ("total", 3333.0)
    assert readings["POM_5V_GPU"] == ("gpu", pytest.approx(int(NANO_RAILS[1].power_mw)))
    assert readings["POM_5V_CPU"][0] == "cpu"


def test_agx_orin_skips_nc_channels_and_sums_rails_into_total(root: Path) -> None:
    build_agx_orin(root)

    sensor = Ina3221Sensor.from_profile(load_profile("jetson-agx-orin"))
    readings = _readings(sensor)

    rails = [r for r in AGX_ORIN_RAILS_A + AGX_ORIN_RAILS_B if r.label != "NC"]
    assert "NC" not in readings
    assert readings["VDDQ_VDD2_1V8AO"][0] == "dram"
    assert readings["VDD_GPU_SOC"][0] == "gpu_soc"
    assert readings[SUM_CHANNEL] == ("total", pytest.approx(sum(r.power_mw for r in rails)))
    assert [ch.name for ch in sensor.channels() if ch.role == "total"] == [SUM_CHANNEL]


def test_rails_the_profile_does_not_know_keep_an_empty_role(root: Path) -> None:
    build_orin_nano(root)

    readings = _readings(Ina3221Sensor.from_profile(load_profile("generic-linux")))

    # No substring guessing: "VDD_IN" is not taken for the total without the board's table.
    assert {role for role, _ in readings.values()} == {""}


def test_reading_follows_the_hardware(root: Path) -> None:
    build_orin_nano(root)
    sensor = Ina3221Sensor.from_profile(load_profile("jetson-orin-nano"))
    base = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"

    write(root, f"{base}/curr1_input", 2000)
    write(root, f"{base}/in1_input", 5000)

    assert _readings(sensor)["VDD_IN"][1] == pytest.approx(10_000.0)


def test_vanished_rail_file_raises_sensor_error_naming_it(root: Path) -> None:
    build_orin_nano(root)
    sensor = Ina3221Sensor.from_profile(load_profile("jetson-orin-nano"))
    (root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/curr1_input").unlink()

    with pytest.raises(SensorError, match="curr1_input"):
        sensor.read()


def test_absent_hardware_is_not_available(root: Path) -> None:
    assert not Ina3221Sensor.is_available()
    with pytest.raises(SensorError):
        Ina3221Sensor.from_profile(load_profile("jetson-orin-nano"))
