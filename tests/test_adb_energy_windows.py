"""A phone's energy per inference counts only its runner blocks' own windows, never the runner's start-ups.

The emulated phone (tests/adb_emulator.py) through a real adb server and the bridge agent, as in
tests/test_adb_bridge.py, with a benchmark_model that spends half a second busy before every invocation
(loading libraries and the model, as on a phone). The battery draws 900 mA at 3.9 V while the runner is busy,
so the true energy of an inference is 3.51 W times its latency; the start-ups between blocks, each as hungry,
would add over 100% if they were counted.
"""

from __future__ import annotations

from pathlib import Path

from tests.adb_emulator import PhoneConfig
from tests.test_adb_bridge import adb_port, attach, bridge, detach, profile

__all__ = ["adb_port"]  # the module-scoped adb server fixture, shared with tests/test_adb_bridge.py

BUSY_W = 0.9 * 3.9
STARTUP_S = 0.5


def test_slow_starting_runner_is_not_charged_to_the_inferences(
    adb_port: str, tflite_model: Path, tmp_path: Path
) -> None:
    phone = attach(adb_port, tmp_path, config=PhoneConfig(runner={"startup_s": STARTUP_S}))
    (tmp_path / "agent").mkdir()
    agent = bridge(tmp_path, adb_port, phone).start(timeout_s=60)
    try:
        # Eight seconds: four or five blocks of 0.8 s, each after a start-up of more than half a second.
        run = profile(adb_port, tflite_model, tmp_path / "r.json", agent.address, extra=("--min-duration", "8"))
    finally:
        agent.stop()
        detach(adb_port, phone)

    assert run["proc"].returncode in (0, 1), run["proc"].stderr
    (dev,) = run["result"]["devices"]
    assert dev["status"] == "ok", dev["error"]
    energy = dev["energy"]
    assert energy["energy_mj_per_inference"] is not None, energy
    blocks = int(dev["notes"]["blocks"])
    # The windows are every block's runs; their mean is the mean latency per inference.
    mean_ms = dev["latency_ms"]["mean"]
    truth_mj = BUSY_W * mean_ms
    assert abs(energy["energy_mj_per_inference"] / truth_mj - 1) < 0.03, (energy["energy_mj_per_inference"], truth_mj)
    assert energy["blocks"] == blocks >= 2
    # Each gap holds at least the half-second start-up: all of it was left out.
    assert energy["gaps_excluded_s"] >= (blocks - 1) * STARTUP_S
    assert abs(energy["avg_power_w"] / BUSY_W - 1) < 0.03  # the runner's power while it ran, not with start-ups
    # A few seconds of a 5 Hz gauge are too few samples to check their correlation: the interval over the runner
    # blocks says it assumes them independent (never labelled 95%), and it covers the truth.
    if energy["energy_mj_per_inference_ci95"] is None:
        assert "independent runner blocks" in energy["ci_assumes"] and energy["interval_problem"]
    lo, hi = energy["energy_mj_per_inference_ci95"] or energy["energy_mj_per_inference_ci"]
    assert lo <= truth_mj <= hi
    # Block means are what they are: p50 is their median, no per-inference tails, and the source is named.
    assert dev["latency_source"] == "block_means"
    assert dev["latency_ms"]["p90"] is None and dev["latency_ms"]["p99"] is None
    assert "block means" in dev["latency_ms"]["estimates"]
