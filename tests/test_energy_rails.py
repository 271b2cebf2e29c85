"""Channel accounting: the total is formed from the profile's rail hierarchy, every rail is reported,
and a total that cannot be formed honestly (a broken, stopped or gapped rail) is null with the reason."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.device.profiles import load_profile
from agent.sensors.base import wire_role
from agent.sensors.detect import DEFAULT_BACKENDS, Backend, detect_sensors
from agent.sensors.nvml import NvmlSensor
from host.analysis.energy import energy_stats
from host.analysis.validity import assess
from host.store.rundata import PhaseSpan, Series
from tests.sensor_fakes import FakeGpu, ScriptedNvml, build_rapl_zone, write

S = 1_000_000_000
T0 = 100 * S


def _counter(name: str, watts: float, role: str, sensor: str = "rapl", end_s: float = 10.0, seed: int = 0) -> Series:
    """An energy counter read every 8-12 ms from 0 s to ``end_s`` at a constant power."""
    rng = np.random.default_rng(seed)
    t_ns = T0 + np.cumsum(rng.integers(8_000_000, 12_000_001, size=int(end_s * 100)))
    t_ns = t_ns[t_ns <= T0 + int(end_s * S)]
    return Series(name, "energy_uj", role, sensor, t_ns, 5e9 + watts * (t_ns - T0) / S * 1e6)


def _power(name: str, watts: float, role: str, sensor: str, end_s: float = 10.0) -> Series:
    t_ns = T0 + np.arange(0, int(end_s * 100) + 1) * 10_000_000
    return Series(name, "power_mw", role, sensor, t_ns, np.full(t_ns.size, watts * 1e3))


def _measure() -> tuple[PhaseSpan, np.ndarray, np.ndarray]:
    starts = T0 + np.arange(2 * S, 8 * S, 20_000_000, dtype=np.int64)
    return PhaseSpan("measure", int(starts[0]), int(starts[-1] + 20_000_000)), starts, starts + 20_000_000


def _psys_tree(**over: Series) -> list[Series]:
    """A laptop's RAPL tree as the agent streams it: psys 50 W ⊃ package-0 30 W ⊃ core-0 20 W; DRAM 4 W."""
    tree = {
        "psys": _counter("psys", 50.0, "total", seed=1),
        "package-0": _counter("package-0", 30.0, "cpu;part_of=psys", seed=2),
        "core-0": _counter("core-0", 20.0, "cpu;part_of=package-0", seed=3),
        "dram-0": _counter("dram-0", 4.0, "dram;part_of=psys", seed=4),
    }
    tree.update(over)
    return list(tree.values())


def test_psys_package_core_tree_gives_the_platform_power_and_lists_every_rail() -> None:
    measure, starts, ends = _measure()

    stats = energy_stats(_psys_tree(), measure, None, starts, ends)

    assert stats.avg_power_w == pytest.approx(50.0, rel=0.01)
    assert stats.sensor == "whole board: rapl:psys"
    rails = {r["name"]: r for r in stats.rails}
    assert set(rails) == {"psys", "package-0", "core-0", "dram-0"}
    assert rails["package-0"]["avg_power_w"] == pytest.approx(30.0, rel=0.01)
    assert rails["core-0"]["part_of"] == "package-0" and rails["core-0"]["summed"] is False
    assert rails["core-0"]["energy_mj"] == pytest.approx(20.0 * stats.duration_s * 1e3, rel=0.01)
    assert [r["name"] for r in stats.rails if r["summed"]] == ["psys"]


def test_without_psys_the_packages_and_dram_are_summed_but_never_their_cores() -> None:
    measure, starts, ends = _measure()
    tree = [s for s in _psys_tree() if s.name != "psys"]

    stats = energy_stats(tree, measure, None, starts, ends)

    assert stats.avg_power_w == pytest.approx(34.0, rel=0.01)
    assert stats.sensor == "sum of top-level rails (no 'total' rail): rapl:package-0 + rapl:dram-0"


def test_dgpu_and_cpu_machine_sums_every_gpu_including_a_power_only_one() -> None:
    measure, starts, ends = _measure()
    machine = [
        _counter("gpu0", 120.0, "gpu", sensor="nvml", seed=5),
        _power("gpu0_power", 118.0, "gpu", "nvml"),  # the same rail's instantaneous reading
        _power("gpu1", 27.0, "gpu", "nvml"),  # an older GPU without an energy counter
        _counter("package-0", 30.0, "cpu", seed=6),
        _counter("core-0", 20.0, "cpu;part_of=package-0", seed=7),
        _counter("dram-0", 3.0, "dram", seed=8),
    ]

    stats = energy_stats(machine, measure, None, starts, ends)

    assert stats.avg_power_w == pytest.approx(120.0 + 27.0 + 30.0 + 3.0, rel=0.01)
    assert stats.method == "counter + power-integration"
    assert {r["name"] for r in stats.rails if r["summed"]} == {"gpu0", "gpu1", "package-0", "dram-0"}
    assert len(stats.rails) == 5  # gpu0's power reading is part of the gpu0 rail, not a rail of its own


def test_a_broken_summed_rail_makes_energy_null_with_the_rail_named() -> None:
    measure, starts, ends = _measure()
    one_sample = _counter("package-1", 5.0, "cpu")
    one_sample.t_ns, one_sample.value = one_sample.t_ns[:1], one_sample.value[:1]
    packages = [_counter("package-0", 5.0, "cpu"), one_sample]

    stats = energy_stats(packages, measure, None, starts, ends)
    entry = {"status": "ok", "n_inferences": starts.size, "n_warmup": 10, "duration_s": 6.0, "notes": {}}
    verdict = assess({**entry, "energy": stats.to_dict()}, runs=10, min_duration_s=1.0)

    assert stats.avg_power_w is None and stats.energy_mj_per_inference is None
    assert stats.problem == "rail rapl:package-1 gave fewer than 2 usable samples"
    assert verdict["valid"] is False
    assert "energy not measured: rail rapl:package-1 gave fewer than 2 usable samples" in verdict["reasons"]


def test_a_rail_that_stops_inside_the_window_is_not_extrapolated() -> None:
    measure, starts, ends = _measure()
    stopped = _counter("dram-0", 4.0, "dram", end_s=2.6)  # 0.6 s into a 6 s window

    stats = energy_stats([_counter("package-0", 30.0, "cpu"), stopped], measure, None, starts, ends)

    assert stats.energy_mj_per_inference is None and stats.energy_mj_per_inference_ci95 is None
    assert stats.problem is not None and "rail rapl:dram-0 stopped 5.4" in stats.problem
    rails = {r["name"]: r for r in stats.rails}
    assert rails["package-0"]["avg_power_w"] == pytest.approx(30.0, rel=0.01)  # still reported on its own
    assert rails["dram-0"]["avg_power_w"] is None


def test_a_gap_inside_the_window_is_not_bridged() -> None:
    measure, starts, ends = _measure()
    rail = _counter("package-0", 30.0, "cpu")
    keep = (rail.t_ns < T0 + 4 * S) | (rail.t_ns > T0 + int(4.8 * S))
    rail.t_ns, rail.value = rail.t_ns[keep], rail.value[keep]

    stats = energy_stats([rail], measure, None, starts, ends)

    assert stats.problem is not None and "0.8" in stats.problem and "gap" in stats.problem


def test_a_part_of_a_summed_rail_may_fail_without_nulling_the_total() -> None:
    measure, starts, ends = _measure()
    core = _counter("core-0", 20.0, "cpu;part_of=package-0", end_s=3.0)

    stats = energy_stats(_psys_tree(**{"core-0": core}), measure, None, starts, ends)

    assert stats.avg_power_w == pytest.approx(50.0, rel=0.01)
    assert stats.problem is None
    assert next(r for r in stats.rails if r["name"] == "core-0")["problem"].startswith("rail rapl:core-0 stopped")


def test_dynamic_energy_interval_carries_the_idle_baselines_uncertainty() -> None:
    # Idle 0-2 s: a noisy 3 W; measure 2-8 s: a steady 5 W. The measured blocks alone have no spread.
    rng = np.random.default_rng(11)
    t_ns = T0 + np.arange(0, 1001) * 10_000_000
    rel_s = (t_ns - T0) / S
    watts = np.where(rel_s < 2.0, 3.0 + 0.5 * np.sin(2 * np.pi * 1.3 * rel_s) + rng.normal(0, 0.3, t_ns.size), 5.0)
    rail = Series("VDD_IN", "power_mw", "total", "ina3221", t_ns, watts * 1e3)
    measure, starts, ends = _measure()

    stats = energy_stats([rail], measure, PhaseSpan("idle", T0, T0 + 2 * S - 20_000_000), starts, ends)

    assert stats.idle_power_w_se is not None and stats.idle_power_w_se > 0
    assert stats.dynamic_energy_mj_per_inference is not None and stats.dynamic_energy_mj_per_inference_ci95 is not None
    lo, hi = stats.dynamic_energy_mj_per_inference_ci95
    assert stats.energy_mj_per_inference_ci95 is not None
    gross_lo, gross_hi = stats.energy_mj_per_inference_ci95
    assert gross_hi - gross_lo < 1e-6  # a steady 5 W while measuring ...
    # ... yet the dynamic energy depends on the idle mean: (T/n)·SE(P_idle) in mJ, times t.
    per_inference_s = 0.020
    assert stats.dynamic_energy_mj_per_inference_se == pytest.approx(per_inference_s * 1e3 * stats.idle_power_w_se)
    assert hi - lo > 2 * 2.0 * per_inference_s * 1e3 * stats.idle_power_w_se
    assert lo < stats.dynamic_energy_mj_per_inference < hi
    assert math.isfinite(hi)


def _streamed(sensors: list[Any], watts: dict[str, float]) -> list[Series]:
    """What the agent would stream for these sensors' power channels, at constant per-rail power."""
    t_ns = T0 + np.arange(0, 1001) * 10_000_000
    out = []
    for sensor in sensors:
        for ch in sensor.channels():
            if ch.kind == "energy_uj":
                value = 1e9 + watts[ch.name] * (t_ns - T0) / S * 1e6
            elif ch.kind == "power_mw":
                value = np.full(t_ns.size, watts[ch.name.removesuffix("_power")] * 1e3)
            else:
                continue
            out.append(Series(ch.name, ch.kind, wire_role(ch), sensor.backend, t_ns, value))
    return out


def test_shipped_nvidia_dgpu_profile_sums_each_gpu_and_the_cpu_side_once(tmp_path: Path, monkeypatch: Any) -> None:
    # A desktop with psys (which does not cover the PCIe GPUs), a package with its core, and two GPUs.
    root = tmp_path / "sys"
    for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core"), ("intel-rapl:1", "psys")):
        build_rapl_zone(root, zone, name)
    write(root, "/proc/driver/nvidia/version", "NVRM version: 550.54\n")
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(root))
    nvml = ScriptedNvml([FakeGpu(), FakeGpu(name="Tesla P4", energy_mj=None, power_instant_mw=27_000.0)])
    backends = {
        **DEFAULT_BACKENDS,
        "nvml": Backend("nvml", lambda p: True, lambda p: NvmlSensor.from_profile(p, library=nvml)),
    }
    detection = detect_sensors(load_profile("nvidia-dgpu"), backends=backends)
    watts = {"gpu0": 150.0, "gpu1": 27.0, "psys": 45.0, "package-0": 30.0, "core-0": 20.0}
    try:
        series = _streamed(detection.sensors, watts)
    finally:
        detection.close()
    measure, starts, ends = _measure()

    stats = energy_stats(series, measure, None, starts, ends)

    assert stats.avg_power_w == pytest.approx(150.0 + 27.0 + 45.0, rel=1e-6)
    assert {r["name"] for r in stats.rails if r["summed"]} == {"gpu0", "gpu1", "psys"}
    assert {r["name"] for r in stats.rails} == {"gpu0", "gpu1", "psys", "package-0", "core-0"}


def test_a_profile_declares_parents_that_reach_the_host_in_the_streamed_role(tmp_path: Path, monkeypatch: Any) -> None:
    root = tmp_path / "sys"
    for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:2", "dram")):
        build_rapl_zone(root, zone, name)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "server.toml").write_text(
        'name = "server"\npower_sensors = ["rapl"]\n[rail_parents]\n"dram-0" = "package-0"\n'
    )
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(root))
    monkeypatch.setenv("EDGEPROF_PROFILES_DIR", str(profiles))
    detection = detect_sensors(load_profile("server"))
    try:
        roles = {ch.name: wire_role(ch) for s in detection.sensors for ch in s.channels() if ch.kind == "energy_uj"}
        series = _streamed(detection.sensors, {"package-0": 30.0, "dram-0": 4.0})
    finally:
        detection.close()
    measure, starts, ends = _measure()

    stats = energy_stats(series, measure, None, starts, ends)

    assert roles == {"package-0": "cpu", "dram-0": "dram;part_of=package-0"}
    assert stats.avg_power_w == pytest.approx(30.0)  # this profile says the package already holds DRAM
