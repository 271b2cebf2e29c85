"""Phones over adb, end to end: emulated phone <- real adb server <- bridge agent (adbutils) <- `host profile`.

The phone is tests/adb_emulator.py on loopback; its benchmark_model runs the model with LiteRT for real.
Each test module starts its own adb server on a private port (ANDROID_ADB_SERVER_PORT) and kills it at
the end, so a user's adb server is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adb_emulator import AdbEmulator, PhoneConfig, write_runner
from tests.conftest import console_script
from tests.faultlib import AgentProc, wait_for

FAST = ["--runs", "40", "--min-duration", "4", "--idle", "1", "--warmup", "3", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def adb_port() -> Iterator[str]:
    """A private adb server (Debian's `adb`), killed after the module's tests."""
    adb = shutil.which("adb")
    if adb is None:
        pytest.skip("no adb server can be had: the `adb` command is not installed (apt-get install adb)")
    port = str(_free_port())
    env = {**os.environ, "ANDROID_ADB_SERVER_PORT": port}
    started = subprocess.run([adb, "start-server"], env=env, capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        pytest.skip(f"no adb server can be had: `adb start-server` failed: {started.stderr.strip()[:200]}")
    yield port
    subprocess.run([adb, "kill-server"], env=env, capture_output=True, timeout=30)


def adb_env(port: str) -> dict[str, str]:
    return {**os.environ, "ANDROID_ADB_SERVER_PORT": port}


def attach(port: str, tmp: Path, name: str = "phone", config: PhoneConfig | None = None) -> AdbEmulator:
    """An emulated phone, `adb connect`ed, with benchmark_model installed through `agent adb install-runner`."""
    phone = AdbEmulator(tmp / name, config)
    env = adb_env(port)
    subprocess.run(["adb", "connect", phone.serial], env=env, capture_output=True, timeout=30, check=True)

    def ready() -> bool:
        out = subprocess.run(["adb", "devices"], env=env, capture_output=True, text=True, timeout=30).stdout
        return f"{phone.serial}\tdevice" in out

    wait_for(ready, 30, f"adb to list {phone.serial} as a device", poll_s=0.1)
    (tmp / f"{name}-bin").mkdir()
    runner = write_runner(tmp / f"{name}-bin" / "benchmark_model")
    agent_cli(port, "adb", "install-runner", str(runner), "--serial", phone.serial, check=True)
    return phone


def detach(port: str, phone: AdbEmulator) -> None:
    subprocess.run(["adb", "disconnect", phone.serial], env=adb_env(port), capture_output=True, timeout=30)
    phone.stop()


def agent_cli(port: str, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *args], env=adb_env(port), capture_output=True, text=True, timeout=120
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def host(port: str, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = adb_env(port) | ({"EDGEPROF_CONFIG": str(config)} if config else {})
    return subprocess.run([console_script("host"), *args], capture_output=True, text=True, timeout=300, env=env)


def bridge(tmp: Path, port: str, phone: AdbEmulator, name: str = "agent", *extra: str) -> AgentProc:
    return AgentProc(
        tmp / name, "--adb", phone.serial, *extra, env={"ANDROID_ADB_SERVER_PORT": port}, data_dir=tmp / name / "data"
    )


def profile(
    port: str, model: Path, out: Path, *devices: str, extra: tuple[str, ...] = (), config: Path | None = None
) -> dict[str, Any]:
    args = [a for d in devices for a in ("--device", d)]
    proc = host(port, "profile", str(model), *args, *FAST, *extra, "--json", str(out), config=config)
    result = json.loads(out.read_text()) if out.exists() else {}
    return {"proc": proc, "result": result}


@pytest.fixture
def phone(adb_port: str, tmp_path: Path) -> Iterator[AdbEmulator]:
    emulated = attach(adb_port, tmp_path)
    yield emulated
    detach(adb_port, emulated)


def test_profile_on_emulated_phone_gives_latency_memory_power_and_energy(
    adb_port: str, phone: AdbEmulator, tflite_model: Path, tmp_path: Path
) -> None:
    (tmp_path / "agent").mkdir()
    agent = bridge(tmp_path, adb_port, phone).start(timeout_s=60)
    try:
        run = profile(adb_port, tflite_model, tmp_path / "r.json", agent.address)
    finally:
        agent.stop()
    assert run["proc"].returncode == 0, run["proc"].stderr
    (dev,) = run["result"]["devices"]
    assert dev["status"] == "ok", dev["error"]
    assert dev["profile"] == "android-qualcomm"  # picked from ro.soc.manufacturer
    assert dev["latency_source"] == "block_means"
    assert dev["n_inferences"] >= 40
    assert 0 < dev["latency_ms"]["p50"] < 1000
    assert dev["peak_rss_mb"] > 1
    energy = dev["energy"]
    # 300 mA idle, 900 mA while the runner's interpreter runs, at 3.9 V: 1.17 W idle, up to 3.51 W busy.
    assert energy["problem"] is None, energy["problem"]
    assert energy["idle_power_w"] == pytest.approx(1.17, rel=0.05)
    assert 1.17 < energy["avg_power_w"] <= 3.6
    assert energy["energy_mj_per_inference"] > 0
    notes = dev["notes"]
    assert notes["cpu_mask"] == "f0"  # the big cluster: cpus 4-7
    assert (phone.root / "log/taskset").read_text().split()[0] == "f0"
    assert float(notes["gauge_update_period_s"]) == pytest.approx(0.2, abs=0.1)  # the emulated gauge: 5 Hz
    assert "uA" in notes["gauge"] and "negative while discharging" in notes["gauge"]
    # Block means are the samples: the distribution is over blocks, the counts over every run.
    assert dev["latency_ms"]["n"] == int(notes["blocks"]) >= 2
    assert dev["n_inferences"] == int(notes["blocks"]) * int(notes["block_runs"])
    assert 0 <= float(notes["block_gap_fraction"]) < 1
    # The screen was put out for the run and brought back after.
    assert (phone.root / "run/screen").read_text().strip() == "on"
    assert (phone.root / "etc/settings/screen_brightness").read_text().strip() == "128"
    assert notes["screen"] == "screen off (was on), brightness 0 (was 128)"


def test_agent_adb_devices_lists_model_soc_battery_and_runner(adb_port: str, phone: AdbEmulator) -> None:
    proc = agent_cli(adb_port, "adb", "devices", "--json", check=True)
    (row,) = [r for r in json.loads(proc.stdout) if r["serial"] == phone.serial]
    assert row["model"] == "Pixel Emu"
    assert row["soc"] == "Qualcomm SM8550 (kalama)"
    assert row["android"] == "Android 14 (SDK 34)"
    assert row["abi"] == "arm64-v8a"
    assert row["big_cores"] == [4, 5, 6, 7]
    assert row["battery"] == "Discharging"
    assert row["runners"]["benchmark_model"].startswith("sha256:")
