"""A phone's energy per inference counts only its runner blocks' own windows, never the runner's start-ups.

The emulated phone (tests/adb_emulator.py) through a real adb server and the bridge agent, as in
tests/test_adb_bridge.py, with a benchmark_model that spends half a second busy before every invocation
(loading libraries and the model, as on a phone). The battery draws 900 mA at 3.9 V while the runner is busy,
so the true energy of an inference is 3.51 W times its latency; the start-ups between blocks, each as hungry,
would add over 100% if they were counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from host.analysis.energy import energy_stats
from host.store.rundata import PhaseSpan, Series
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
    # A few seconds of a 5 Hz gauge are too few samples to check their correlation (or, on a busy machine whose
    # start-ups run longer, enough samples whose correlation outlasts them): the interval over the runner blocks
    # says it assumes them independent (never labelled 95%), and it covers the truth.
    if energy["energy_mj_per_inference_ci95"] is None:
        assert "independent runner blocks" in energy["ci_assumes"] and energy["interval_problem"]
    lo, hi = energy["energy_mj_per_inference_ci95"] or energy["energy_mj_per_inference_ci"]
    assert lo <= truth_mj <= hi
    # Block means are what they are: p50 is their median, no per-inference tails, and the source is named.
    assert dev["latency_source"] == "block_means"
    assert dev["latency_ms"]["p90"] is None and dev["latency_ms"]["p99"] is None
    assert "block means" in dev["latency_ms"]["estimates"]


def test_a_phone_whose_power_wanders_beyond_its_samples_gets_the_runner_blocks_interval() -> None:
    """Enough gauge samples to try, but a power level that wanders over the whole window: no 95% interval, and
    the runner blocks' interval with what it assumes, as when the samples are too few (CI's busy run had neither)."""
    second = 1_000_000_000
    starts, t = [], 2 * second
    for _block in range(10):  # ten blocks of 40 inferences of 25 ms, a one-second start-up before each
        starts.append(t + np.arange(40) * 25_000_000)
        t += 40 * 25_000_000 + second
    start_ns = np.concatenate(starts)
    end_ns = start_ns + 25_000_000
    t_ns = second + np.arange(0, (t - second) // 100_000_000 + 2) * 100_000_000  # a 10 Hz gauge
    elapsed_s = (t_ns - t_ns[0]) / 1e9
    power_w = 4.0 + 0.8 * np.sin(2 * np.pi * elapsed_s / (elapsed_s[-1] * 1.3))
    rail = Series("battery", "power_mw", "total", "sim", t_ns, power_w * 1e3)
    measure = PhaseSpan("measure", int(start_ns[0]), int(end_ns[-1]))

    stats = energy_stats([rail], measure, None, start_ns, end_ns, in_blocks=True)

    assert stats.sample_count is not None and stats.sample_count >= 100  # enough to try the samples' correlation
    assert stats.energy_mj_per_inference_ci95 is None
    assert stats.interval_problem is not None and "outlasts" in stats.interval_problem
    assert stats.ci_assumes == "independent runner blocks (10; the power's correlation outlasts the samples)"
    assert stats.energy_mj_per_inference_ci is not None and stats.energy_mj_per_inference is not None
    low, high = stats.energy_mj_per_inference_ci
    assert low < stats.energy_mj_per_inference < high
