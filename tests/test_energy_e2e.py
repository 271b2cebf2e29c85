"""Energy end to end: a RAPL counter advancing at a known 4.00 W, wrapping every 0.25 s, through
a real agent (sysfs under EDGEPROF_SYSFS_ROOT) and `host profile`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import console_script
from tests.faultlib import AgentProc
from tests.sensor_fakes import RaplCounterWriter, build_rapl_zone

POWER_W = 4.00
RANGE_UJ = 1_000_000  # 1 J: at 4 W the counter wraps every 0.25 s


@pytest.fixture
def rapl_agent(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "sys"
    counter = build_rapl_zone(root, "intel-rapl:0", "package-0", 0, max_range_uj=RANGE_UJ)
    writer = RaplCounterWriter(counter, POWER_W, RANGE_UJ, wraps_wanted=1_000_000)
    writer.start()
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    # A user profile (EDGEPROF_PROFILES_DIR) like x86-rapl, but with a realistic ceiling for this fake
    # package, so the wrap-safe poll rate stays modest on a 2-core test machine.
    (profiles / "test-rapl.toml").write_text(
        'name = "test-rapl"\nruntime = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\n'
        'power_sensors = ["rapl"]\n[sensor_options.rapl]\nmax_power_w = 20.0\n'
    )
    agent = AgentProc(
        tmp_path,
        "--profile",
        "test-rapl",
        env={"EDGEPROF_SYSFS_ROOT": str(root), "EDGEPROF_PROFILES_DIR": str(profiles)},
    ).start()
    yield agent.address
    agent.stop()
    writer.stop.set()
    writer.join(timeout=5)


def test_rapl_counter_at_4w_gives_4w_and_energy_per_inference(
    rapl_agent: str, shufflenet: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            console_script("host"),
            "profile",
            str(shufflenet),
            "--device",
            rapl_agent,
            "--runs",
            "100",
            "--min-duration",
            "1.5",
            "--idle",
            "1.0",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    (dev,) = json.loads(out.read_text())["devices"]
    energy = dev["energy"]
    assert energy["method"] == "counter" and "package-0" in energy["sensor"]
    assert energy["avg_power_w"] == pytest.approx(POWER_W, rel=0.02)
    assert energy["idle_power_w"] == pytest.approx(POWER_W, rel=0.02)
    seconds_per_inference = dev["duration_s"] / dev["n_inferences"]
    assert energy["energy_mj_per_inference"] == pytest.approx(POWER_W * seconds_per_inference * 1e3, rel=0.03)
    assert abs(energy["dynamic_energy_mj_per_inference"]) < 0.03 * energy["energy_mj_per_inference"]
    lo, hi = energy["energy_mj_per_inference_ci95"]
    assert lo <= energy["energy_mj_per_inference"] <= hi
    assert "no power sensor" not in proc.stdout
    # The live progress (plain lines on a pipe) shows the running board power while it measures.
    live = re.findall(r"^\S+: measure .* (\d+\.\d+) W$", proc.stderr, flags=re.MULTILINE)
    assert live, proc.stderr
    assert float(live[0]) == pytest.approx(POWER_W, rel=0.05)
