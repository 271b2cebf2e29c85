"""Validity rules: each unmet rule makes a result not valid, with the reason stated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.device.profiles import load_profile
from agent.sensors.thermal import ThermalSensor
from host.analysis.drift import latency_drift
from host.analysis.thermal import thermal_stats
from host.analysis.validity import assess
from host.store.rundata import PhaseSpan, Series
from tests.sensor_fakes import build_thermal


def _ok_entry(**over: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "status": "ok",
        "n_inferences": 200,
        "n_warmup": 10,
        "duration_s": 5.0,
        "notes": {"warmup_stable": "true"},
        "phases": [],
        "thermal": {"throttled": False},
        "latency_ms": {"outlier_fraction": 0.0, "p50_ci95": [1.9, 2.1]},
    }
    entry.update(over)
    return entry


def test_result_meeting_every_rule_is_valid() -> None:
    assert assess(_ok_entry(), runs=100, min_duration_s=2.0) == {"valid": True, "reasons": [], "warnings": []}


def test_too_few_inferences_or_too_short_is_not_valid() -> None:
    verdict = assess(_ok_entry(n_inferences=50, duration_s=1.0), runs=100, min_duration_s=2.0)
    assert verdict["valid"] is False
    assert any("fewer than the 100 required" in r for r in verdict["reasons"])
    assert any("less than the 2 s required" in r for r in verdict["reasons"])


def test_unstable_warmup_unsettled_board_and_throttling_are_reasons() -> None:
    entry = _ok_entry(
        notes={"warmup_stable": "false"},
        thermal={"throttled": True, "throttle_reason": "cpu0 at 60%"},
        phases=[{"name": "settle", "detail": "not settled: 71.0 C after 60 s (limit 50.0 C)"}],
    )
    verdict = assess(entry, runs=100, min_duration_s=2.0)
    assert verdict["valid"] is False and len(verdict["reasons"]) == 3


def test_outliers_warn_but_do_not_invalidate() -> None:
    verdict = assess(
        _ok_entry(latency_ms={"outlier_fraction": 0.05, "outliers": 10, "p50_ci95": [1.9, 2.1]}),
        runs=100,
        min_duration_s=2.0,
    )
    assert verdict["valid"] is True and "outliers" in verdict["warnings"][0]


def test_failed_device_is_not_valid_with_its_error() -> None:
    assert assess({"status": "error", "error": "boom"}, runs=1, min_duration_s=0) == {
        "valid": False,
        "reasons": ["boom"],
        "warnings": [],
    }


# --- rules that must catch what they claim (issue 12) ------------------------------------------

S = 1_000_000_000
T0 = 50 * S


def _series(kind: str, name: str, values: list[float], every_s: float = 0.1) -> Series:
    t_ns = T0 + np.round(np.arange(len(values)) * every_s * S).astype(np.int64)
    return Series(name, kind, "", "test", t_ns, np.array(values, dtype=np.float64))


def test_a_97_c_board_with_only_a_temperature_sensor_is_not_valid(tmp_path: Path, monkeypatch: Any) -> None:
    root = tmp_path / "sys"
    build_thermal(root, {"cpu-thermal": 97.0})  # no trip points declared
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(root))
    sensor = ThermalSensor.from_profile(load_profile("generic-linux"))
    temps = _series("temp_c", "cpu-thermal", [sensor.read()[0]] * 30)

    thermal = thermal_stats([temps], PhaseSpan("measure", T0 + S, T0 + 3 * S), trip_temp_c=sensor.trip_temp_c)
    verdict = assess(_ok_entry(thermal=thermal), runs=100, min_duration_s=2.0)

    assert sensor.trip_temp_c == 90.0  # the profile's max_temp_c: the zone has no trip of its own
    assert verdict["valid"] is False
    assert any("temperature reached 97.0 °C, trip point 90.0 °C" in r for r in verdict["reasons"])
    assert any(w.startswith("throttling not monitored") for w in verdict["warnings"])


def test_a_zones_own_trip_point_wins_over_the_profile_maximum(tmp_path: Path, monkeypatch: Any) -> None:
    root = tmp_path / "sys"
    build_thermal(root, {"cpu-thermal": 60.0}, passive_trip_c=85.0)
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(root))

    assert ThermalSensor.from_profile(load_profile("generic-linux")).trip_temp_c == 85.0


def test_throttling_that_starts_during_warmup_is_detected() -> None:
    # Idle 0-1 s at 1.5 GHz; warmup 1-2 s: 1.5 GHz for 0.3 s, then 1.0 GHz; measure 2-3 s at 1.0 GHz.
    freq = _series("cpu_freq_khz", "cpu0", [1.5e6] * 10 + [1.5e6] * 3 + [1.0e6] * 7 + [1.0e6] * 10)
    idle = PhaseSpan("idle", T0, T0 + int(0.95 * S))
    warmup = PhaseSpan("warmup", T0 + S, T0 + int(1.95 * S))

    thermal = thermal_stats([freq], PhaseSpan("measure", T0 + 2 * S, T0 + 3 * S), warmup=warmup, idle=idle)

    assert thermal["throttled"] is True and "33% below its 1.50 GHz" in thermal["throttle_reason"]


def _ramp_run(tau: float, seed: int, n: int = 400, after_warmup: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Back-to-back inferences whose latency starts 30% high and decays with time constant tau inferences."""
    rng = np.random.default_rng(seed)
    i = np.arange(after_warmup, after_warmup + n)
    latency_ns = (10e6 * (1 + 0.3 * np.exp(-i / tau)) * rng.lognormal(0, 0.03, n)).astype(np.int64)
    starts = T0 + np.concatenate(([0], np.cumsum(latency_ns[:-1] + 50_000)))
    return starts, starts + latency_ns


def test_a_tau_200_warmup_ramp_left_in_the_measured_phase_is_not_valid() -> None:
    starts, ends = _ramp_run(tau=200.0, seed=1)
    entry = _ok_entry(latency_drift=latency_drift(starts, ends))

    verdict = assess(entry, runs=100, min_duration_s=2.0)

    assert verdict["valid"] is False
    (reason,) = [r for r in verdict["reasons"] if "drifted" in r]
    assert "not stationary" in reason and "-1" in reason  # about -10% to -20% from first to last quarter


def test_a_stationary_noisy_run_is_not_called_drifting() -> None:
    for seed in range(20):
        starts, ends = _ramp_run(tau=1e-9, seed=seed)  # no ramp left: only 3% lognormal noise
        drift = latency_drift(starts, ends)
        assert drift is not None and drift["drifting"] is False


def test_no_warmup_and_a_run_too_short_for_its_intervals_are_reasons() -> None:
    no_warmup = assess(_ok_entry(n_warmup=0), runs=100, min_duration_s=2.0)
    one_run = assess(
        _ok_entry(n_inferences=3, latency_ms={"outlier_fraction": 0.0, "p50_ci95": None}), runs=1, min_duration_s=0
    )
    energy_too_sparse = assess(
        _ok_entry(energy={"energy_mj_per_inference": 4.0, "energy_mj_per_inference_ci95": None, "sample_count": 9}),
        runs=100,
        min_duration_s=2.0,
    )

    assert no_warmup["valid"] is False and "no warmup" in no_warmup["reasons"][0]
    assert one_run["valid"] is False and "3 inferences give no 95% interval for p50" in one_run["reasons"][0]
    assert energy_too_sparse["valid"] is False and "9 power samples" in energy_too_sparse["reasons"][0]


def test_more_threads_than_cores_is_a_warning_naming_both() -> None:
    oversubscribed = assess(_ok_entry(threads=64, board={"cpu_cores": 2}), runs=100, min_duration_s=2.0)
    fitting = assess(_ok_entry(threads=2, board={"cpu_cores": 2}), runs=100, min_duration_s=2.0)

    assert oversubscribed["valid"] is True
    assert [w for w in oversubscribed["warnings"] if w.startswith("64 intra-op threads on 2 CPU cores")]
    assert fitting["warnings"] == []
