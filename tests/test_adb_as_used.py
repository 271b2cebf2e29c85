"""Phones as people use them, end to end through the emulated phone: on a USB cable, idling warm, with a runner
that starts slowly, and with gauges of either sign convention on the generic profile."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.adb_emulator import PhoneConfig
from tests.test_adb_bridge import adb_port, attach, bridge, detach, profile  # noqa: F401 - adb_port: fixture

#: A phone no SoC table knows (Samsung Exynos): the bridge gives it the android-generic profile (settle below
#: 40 °C within 180 s, throttling judged at 45 °C where no zone declares a trip point).
GENERIC_PROPS = {
    "ro.product.model": "Galaxy Emu",
    "ro.product.manufacturer": "samsung",
    "ro.soc.manufacturer": "Samsung",
    "ro.soc.model": "s5e9925",
    "ro.board.platform": "exynos2200",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "arm64-v8a",
}


def _run(
    port: str, tmp: Path, model: Path, config: PhoneConfig, *extra: str
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    phone = attach(port, tmp, config=config)
    (tmp / "agent").mkdir()
    agent = bridge(tmp, port, phone).start(timeout_s=60)
    try:
        run = profile(port, model, tmp / "r.json", agent.address, extra=extra)
    finally:
        agent.stop()
        detach(port, phone)
    (dev,) = run["result"]["devices"]
    return dev, run["proc"]


def _table_cell(stdout: str, column: str) -> str:
    """The one device row's cell under ``column`` in the final table `host profile` prints."""
    header = next(line for line in stdout.splitlines() if line.startswith("┃"))
    (row,) = [line for line in stdout.splitlines() if line.startswith("│")]
    names = [c.strip() for c in header.strip("┃").split("┃")]
    return [c.strip() for c in row.strip("│").split("│")][names.index(column)]


def _phase(dev: dict[str, Any], name: str) -> dict[str, Any]:
    (phase,) = [p for p in dev["phases"] if p["name"] == name and p["end_ns"]]
    return phase


def test_usb_connected_warm_idling_phone_gives_a_valid_latency_and_says_why_energy_is_absent(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    config = PhoneConfig(
        props=GENERIC_PROPS,
        status="Charging",
        usb_online=True,
        zones=[{"type": "cpu-0-0", "temp_c": 42.0}],  # idles warm: above the 40 °C settle limit, below 45 °C
    )
    dev, proc = _run(adb_port, tmp_path, tflite_model, config)

    assert proc.returncode == 0, proc.stderr
    assert dev["status"] == "ok" and dev["profile"] == "android-generic"
    assert dev["validity"] == {"valid": True, "reasons": [], "warnings": dev["validity"]["warnings"]}
    assert dev["latency_ms"]["p50"] > 0
    refused = dev["energy"]["refused"]
    assert refused.startswith("energy refused: the phone is charging or USB-powered (battery Charging, usb online)")
    assert f"energy not measured: {refused}" in dev["validity"]["warnings"]
    assert dev["energy"]["refused_short"] == "charging" and dev["energy"]["energy_mj_per_inference"] is None
    # The table says it in one word where the mJ/inference would be; no "result not valid" line.
    assert _table_cell(proc.stdout, "mJ/inf") == "charging"
    assert "not valid" not in proc.stdout and "error" not in proc.stdout
    # Settle ended when the zone stopped cooling (a 20 s window), not after 180 s, and says so.
    settle = _phase(dev, "settle")
    assert settle["detail"].startswith("settled at 42.0 C: no longer cooling (+0.0 C/min over 20 s, limit 40.0 C)")
    assert dev["notes"]["settle"] == "stable"
    assert 17.0 <= (settle["end_ns"] - settle["start_ns"]) / 1e9 < 40.0


def test_phone_on_usb_power_with_charging_paused_is_refused_for_energy_by_its_status_and_dumpsys(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    # A charge limit holds the battery: "Not charging", no supply file the shell can read says online, only
    # dumpsys says USB. The gauge's tiny current is not the phone's power.
    config = PhoneConfig(status="Not charging", usb_online=False, usb_powered=True)
    dev, proc = _run(adb_port, tmp_path, tflite_model, config)

    assert proc.returncode == 0, proc.stderr
    assert dev["validity"]["valid"] is True, dev["validity"]
    assert dev["energy"]["refused"].startswith(
        "energy refused: the phone is charging or USB-powered (battery Not charging, usb online)"
    )
    assert dev["energy"]["refused_short"] == "plugged-in"
    assert dev["energy"]["avg_power_w"] is None


def test_runner_that_starts_slowly_between_blocks_still_measures_the_requested_duration(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    # Each invocation spends 1.5 s before its first inference, longer than the whole 1 s asked for: a plan that
    # counted from before the first start-up would stop after one block of a tenth of a second.
    config = PhoneConfig(runner={"start_delay_s": 1.5})
    dev, proc = _run(adb_port, tmp_path, tflite_model, config, "--min-duration", "1")

    assert proc.returncode == 0, proc.stderr
    assert dev["duration_s"] >= 1.0
    assert dev["validity"]["valid"] is True, dev["validity"]["reasons"]
    # Six block means are too few for a labelled 95% (issue 24): the median still gets its interval, with its coverage.
    assert int(dev["notes"]["blocks"]) >= 6 and dev["latency_ms"]["p50_ci"] is not None
    # The measured span holds the start-ups of every block after the first: the gap fraction shows them.
    assert float(dev["notes"]["block_gap_fraction"]) > 0.5


@pytest.mark.parametrize("discharge_negative", [False, True])
def test_generic_profile_phone_gauge_sign_is_detected_either_way(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
    discharge_negative: bool,
) -> None:
    config = PhoneConfig(props=GENERIC_PROPS, discharge_negative=discharge_negative)
    dev, proc = _run(adb_port, tmp_path, tflite_model, config)

    assert proc.returncode == 0, proc.stderr
    assert dev["profile"] == "android-generic"
    direction = "negative" if discharge_negative else "positive"
    assert dev["notes"]["gauge"] == f"current_now in uA, voltage_now in uV, {direction} while discharging"
    energy = dev["energy"]
    if energy["idle_power_w"] is None:
        # A machine so busy that the gauge was not polled through the idle span (seen beside two busy loops): the
        # result says so rather than guess a baseline, and the runner's 900 mA at 3.9 V still reads positive.
        assert any("no idle baseline" in w for w in energy["warnings"]), energy
        assert energy["avg_power_w"] == pytest.approx(0.9 * 3.9, rel=0.1)
    else:
        # 300 mA idle at 3.9 V whatever the sign: 1.17 W.
        assert energy["idle_power_w"] == pytest.approx(1.17, rel=0.05)
