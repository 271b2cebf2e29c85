"""A phone's power_now and thermal zones, sampled by the bridge's one shell loop, end to end and as parsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.adb import battery, thermal
from tests.adb_emulator import PhoneConfig
from tests.test_adb_bridge import adb_port, attach, bridge, detach, profile  # noqa: F401 - adb_port: fixture


def _run_one(port: str, tmp: Path, model: Path, config: PhoneConfig) -> dict:
    phone = attach(port, tmp, config=config)
    (tmp / "agent").mkdir()
    agent = bridge(tmp, port, phone).start(timeout_s=60)
    try:
        run = profile(port, model, tmp / "r.json", agent.address)
    finally:
        agent.stop()
        detach(port, phone)
    assert run["proc"].returncode == 0, run["proc"].stderr
    (dev,) = run["result"]["devices"]
    assert dev["status"] == "ok", dev["error"]
    return dev


def test_power_now_is_preferred_to_current_times_voltage(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    # The gauge's own power reading, in mW, is 10% above current x voltage (1.17 W idle): 1.287 W idle.
    config = PhoneConfig(power_now_unit="mW", power_now_factor=1.1)
    dev = _run_one(adb_port, tmp_path, tflite_model, config)
    assert dev["notes"]["gauge"].startswith("power_now in mW, positive while discharging (preferred to current_now")
    assert dev["energy"]["problem"] is None, dev["energy"]["problem"]
    assert dev["energy"]["idle_power_w"] == pytest.approx(1.287, rel=0.02)
    assert dev["energy"]["energy_mj_per_inference"] > 0


def test_hot_phone_reports_its_zone_temperature_and_is_not_valid_above_the_trip(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    config = PhoneConfig(
        zones=[
            # Starts below the settle limit (40 C), heats 3 C per second of inference: past its 44 C trip.
            {"type": "cpu-4-0-usr", "temp_c": 38.0, "heat_c_per_s": 3.0, "trips": [("passive", 44.0)]},
            # Qualcomm's battery-current "zone": 4.5 A reads as 4.5 C, its limit as a 6 C trip. Not a temperature.
            {"type": "pm8550b-ibat-lvl0", "raw_mc": 4500, "trips": [("passive", 6.0)]},
        ]
    )
    dev = _run_one(adb_port, tmp_path, tflite_model, config)
    notes = dev["notes"]
    assert notes["thermal_zones"] == "cpu-4-0-usr"
    assert notes["trip_temp_c"] == "44.0"
    assert dev["thermal"]["max_temp_c"] > 44.0  # the zone, not the 30.1 C battery
    assert dev["thermal"]["throttled"] is True
    assert "trip point 44.0 °C" in dev["thermal"]["throttle_reason"]
    assert dev["validity"]["valid"] is False
    assert any("throttl" in reason for reason in dev["validity"]["reasons"])


def test_cool_phone_is_judged_against_the_profiles_max_temp(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    dev = _run_one(adb_port, tmp_path, tflite_model, PhoneConfig())  # one zone, 36 C, no trip points
    assert dev["notes"]["trip_temp_c"] == "45.0"  # android-qualcomm's max_temp_c
    assert dev["thermal"]["max_temp_c"] == pytest.approx(36.0)
    assert dev["thermal"]["throttled"] is False


# -- the readers ----------------------------------------------------------------------------------------


def test_loop_line_with_power_and_zones() -> None:
    sample = battery.parse_line("@ 12.50 -300000 3900000 301 1170000 36000 - 41500")
    assert sample is not None
    assert (sample.uptime_ns, sample.power, sample.temp_c) == (12_500_000_000, 1_170_000.0, 30.1)
    assert sample.zones_c[0] == 36.0 and sample.zones_c[2] == 41.5
    assert sample.zones_c[1] != sample.zones_c[1]  # a zone that did not read: NaN, kept in its place
    no_power = battery.parse_line("@ 12.50 -300000 3900000 - -")
    assert no_power is not None and (no_power.power, no_power.temp_c, no_power.zones_c) == (None, None, ())


def test_loop_command_reads_power_and_zones_without_forks() -> None:
    command = battery.loop_command(0.1, True, ["/sys/class/thermal/thermal_zone3/temp"])
    assert "read P 2>/dev/null < $B/power_now || P=-;" in command
    assert "read z0 2>/dev/null < /sys/class/thermal/thermal_zone3/temp || z0=-;" in command
    assert 'echo "@ $t $c $v $T $P $z0"' in command
    assert "$(" not in command and "cat " not in command
    assert 'echo "@ $t $c $v $T $P"' in battery.loop_command(0.1)
    assert "power_now" not in battery.loop_command(0.1)


def _gauge(power: float | None, current: float = -300_000, n: int = 5) -> list[battery.GaugeSample]:
    return [battery.GaugeSample(i * 100_000_000, current, 3_900_000, 30.0, power) for i in range(n)]


@pytest.mark.parametrize(
    ("power", "unit", "sign"),
    [(1_170_000, "uW", 1.0), (-1_170_000, "uW", -1.0), (1170, "mW", 1.0), (-1170, "mW", -1.0)],
)
def test_power_now_units_and_sign_are_detected(power: float, unit: str, sign: float) -> None:
    samples = _gauge(power, current=-10_000)  # current x voltage would say 39 mW: power_now wins
    scale = battery.detect_scale(samples, {})
    assert (scale.power_unit, scale.power_sign) == (unit, sign)
    assert scale.power_mw(samples[0]) == pytest.approx(1170.0)


def test_power_now_that_reads_zero_or_is_turned_off_falls_back_to_current_times_voltage() -> None:
    assert battery.detect_scale(_gauge(0), {}).power_unit is None  # a gauge that exposes power_now but never fills it
    off = battery.detect_scale(_gauge(1_170_000), {"power_unit": "off"})
    assert off.power_unit is None and off.power_mw(_gauge(1_170_000)[0]) == pytest.approx(1170.0)
    scale = battery.detect_scale(_gauge(1_170_000), {})
    assert scale.power_mw(_gauge(None)[0]) == pytest.approx(1170.0)  # a sample whose power_now did not read


LISTING = """zone 0 36000 cpu-0-0-usr
trip 0 passive 95000
trip 0 critical 115000
zone 1 4500 pm8550b-ibat-lvl0
trip 1 passive 6000
zone 2 -273000 disabled-sensor
zone 3 41000 skin-msm-therm
trip 3 passive 39000
trip 3 active 35000
zone 4 37000 cpu-0-0-usr
zone 5 31000 battery
"""


def test_zone_list_skips_non_temperatures_and_finds_the_lowest_throttling_trip() -> None:
    zones = thermal.parse_zones(LISTING)
    assert [(z.name, z.number, z.throttle_at_c) for z in zones] == [
        ("cpu-0-0-usr", 0, 95.0),
        ("skin-msm-therm", 3, 39.0),  # the "active" 35 C trip only starts a fan
        ("cpu-0-0-usr#2", 4, None),
        ("battery#2", 5, None),  # "battery" is the power series' name
    ]
    assert zones[1].temp_path == "/sys/class/thermal/thermal_zone3/temp"
    assert thermal.trip_temp_c(zones, 45.0) == 39.0
    assert thermal.trip_temp_c(zones[2:], 45.0) == 45.0


def test_profile_zone_types_pick_zones_and_fall_back_to_all_when_none_match() -> None:
    assert [z.number for z in thermal.parse_zones(LISTING, ["skin-msm-therm"])] == [3]
    assert [z.number for z in thermal.parse_zones(LISTING, ["no-such-zone"])] == [0, 3, 4, 5]
