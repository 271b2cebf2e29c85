"""Energy accounting from raw sensor series: integration, counters, idle subtraction, intervals, thermal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.analysis.energy import co2e_g, empty, energy_stats, peak_bytes, power_over_time_w, thermal_stats
from host.store.rundata import PhaseSpan, Series

S = 1_000_000_000  # ns per second
T0 = 100 * S  # boards' monotonic clocks do not start at zero


def _uneven_times_ns(start_s: float, end_s: float, seed: int = 1) -> np.ndarray:
    """Sample times 2..18 ms apart, like a sampler thread that the scheduler delays."""
    rng = np.random.default_rng(seed)
    gaps_ns = rng.integers(2_000_000, 18_000_000, size=int((end_s - start_s) * 200) + 10)
    t_ns = T0 + int(start_s * S) + np.concatenate(([0], np.cumsum(gaps_ns)))
    return t_ns[t_ns <= T0 + int(end_s * S)]


def _power_w(t_s: np.ndarray) -> np.ndarray:
    """Piecewise-linear (2 W ramping to 5 W over 4 s, then flat) plus a 0.7 Hz sine of 1.5 W."""
    return 2.0 + 0.75 * np.minimum(t_s, 4.0) + 1.5 * np.sin(2 * np.pi * 0.7 * t_s)


def _energy_j(t_s: np.ndarray) -> np.ndarray:
    """Exact integral of _power_w from 0 to t."""
    ramp = np.where(t_s < 4.0, 0.375 * t_s**2, 0.375 * 16 + 3.0 * (t_s - 4.0))
    sine = 1.5 / (2 * np.pi * 0.7) * (1 - np.cos(2 * np.pi * 0.7 * t_s))
    return 2.0 * t_s + ramp + sine


def _inferences(start_s: float, end_s: float, every_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Back-to-back inference windows filling [start_s, end_s)."""
    n = round((end_s - start_s) / every_s)
    starts = T0 + np.round((start_s + np.arange(n) * every_s) * S).astype(np.int64)
    return starts, starts + int(every_s * S)


def _span(name: str, start_s: float, end_s: float) -> PhaseSpan:
    return PhaseSpan(name, T0 + int(start_s * S), T0 + int(end_s * S))


def _rel_s(t_ns: np.ndarray) -> np.ndarray:
    return (t_ns - T0).astype(np.float64) / S


def test_integrated_power_matches_known_integral_within_half_a_percent() -> None:
    t_ns = _uneven_times_ns(0.0, 10.0)
    power = Series("VDD_IN", "power_mw", "total", "ina3221", t_ns, _power_w(_rel_s(t_ns)) * 1e3)
    start_ns, end_ns = _inferences(1.2345, 8.7645, 0.0251)
    expected_j = float(np.diff(_energy_j(_rel_s(np.array([start_ns[0], end_ns[-1]]))))[0])

    stats = energy_stats([power], _span("measure", 1.0, 9.0), None, start_ns, end_ns)

    assert stats.method == "power-integration"
    assert stats.energy_j_total == pytest.approx(expected_j, rel=0.005)
    assert stats.energy_mj_per_inference == pytest.approx(expected_j / start_ns.size * 1e3, rel=0.005)


def test_window_edges_between_samples_are_interpolated_exactly_for_linear_power() -> None:
    t_ns = T0 + np.arange(0, 11) * S  # one sample a second; the window edges fall mid-interval
    power = Series("rail", "power_mw", "total", "csv", t_ns, (1.0 + 0.5 * np.arange(11)) * 1e3)
    start_ns = np.array([T0 + int(2.25 * S)])
    end_ns = np.array([T0 + int(7.5 * S)])

    stats = energy_stats([power], _span("measure", 2.0, 8.0), None, start_ns, end_ns)

    # P(t) = 1 + 0.5 t W, so E = t + t^2/4 between 2.25 and 7.5 s.
    assert stats.energy_j_total == pytest.approx((7.5 + 7.5**2 / 4) - (2.25 + 2.25**2 / 4), rel=1e-9)
    assert stats.duration_s == pytest.approx(5.25)


def test_counter_and_power_integration_agree_on_the_same_trace() -> None:
    t_ns = _uneven_times_ns(0.0, 10.0, seed=4)
    rel_s = _rel_s(t_ns)
    counter = Series("pkg", "energy_uj", "total", "nvml", t_ns, 7e9 + _energy_j(rel_s) * 1e6)
    power = Series("pkg", "power_mw", "total", "nvml", t_ns, _power_w(rel_s) * 1e3)
    start_ns, end_ns = _inferences(2.0, 9.0, 0.01)
    measure = _span("measure", 2.0, 9.0)

    by_counter = energy_stats([counter], measure, None, start_ns, end_ns)
    by_power = energy_stats([power], measure, None, start_ns, end_ns)

    assert (by_counter.method, by_power.method) == ("counter", "power-integration")
    assert by_counter.energy_j_total == pytest.approx(by_power.energy_j_total, rel=0.001)


def _rapl_counter(name: str, watts: float, start_s: float, end_s: float, seed: int) -> Series:
    """A RAPL package counter read about every ms, in 61 uJ steps, already unwrapped by the agent."""
    rng = np.random.default_rng(seed)
    t_ns = T0 + int(start_s * S) + np.cumsum(rng.integers(800_000, 1_200_000, size=int((end_s - start_s) * 1000)))
    energy_uj = np.floor(watts * _rel_s(t_ns) * 1e6 / 61.0) * 61.0 + 2**32
    return Series(name, "energy_uj", "total" if name.startswith("package") else "dram", "rapl", t_ns, energy_uj)


def test_rapl_counter_at_4_watts_gives_4_watts_and_power_times_time_per_inference() -> None:
    counter = _rapl_counter("package-0", 4.0, 0.0, 8.0, seed=2)
    idle = _span("idle", 0.5, 2.5)
    start_ns, end_ns = _inferences(3.0, 7.5, 0.012)

    stats = energy_stats([counter], _span("measure", 3.0, 7.5), idle, start_ns, end_ns)

    assert stats.method == "counter"
    assert stats.avg_power_w == pytest.approx(4.0, rel=0.01)
    assert stats.idle_power_w == pytest.approx(4.0, rel=0.01)
    assert stats.energy_mj_per_inference == pytest.approx(4.0 * 12.0, rel=0.01)
    assert stats.dynamic_energy_mj_per_inference is not None
    assert abs(stats.dynamic_energy_mj_per_inference) < 0.01 * 48.0
    lo, hi = stats.energy_mj_per_inference_ci95 or (math.nan, math.nan)
    assert lo <= 48.0 <= hi and hi - lo < 1.0
    assert stats.sample_rate_hz == pytest.approx(1000, rel=0.05)
    assert stats.avg_power_w is not None and stats.duration_s is not None
    assert stats.avg_power_w * stats.duration_s == pytest.approx(stats.energy_j_total)


def test_rapl_packages_and_dram_are_summed_but_sub_zones_are_not() -> None:
    zones = [
        _rapl_counter("package-0", 3.0, 0.0, 6.0, seed=5),
        _rapl_counter("package-1", 1.0, 0.0, 6.0, seed=6),
        _rapl_counter("dram", 0.5, 0.0, 6.0, seed=7),
    ]
    core = _rapl_counter("core", 2.0, 0.0, 6.0, seed=8)
    core.role = "cpu"
    start_ns, end_ns = _inferences(1.0, 5.0, 0.02)

    stats = energy_stats([*zones, core], _span("measure", 1.0, 5.0), None, start_ns, end_ns)

    assert stats.avg_power_w == pytest.approx(4.5, rel=0.01)
    assert stats.sensor == "RAPL packages and DRAM: rapl:package-0 + rapl:package-1 + rapl:dram"


def _step_trace(idle_w: float, active_w: float) -> Series:
    """Power held at idle_w until 3.0 s, then active_w; sampled every 10 ms."""
    t_ns = T0 + np.arange(0, 1000) * 10_000_000
    watts = np.where(_rel_s(t_ns) < 3.0, idle_w, active_w)
    return Series("VDD_IN", "power_mw", "total", "ina3221", t_ns, watts * 1e3)


def test_idle_subtraction_is_exact_for_a_step_trace() -> None:
    start_ns, end_ns = _inferences(4.0, 9.0, 0.025)

    stats = energy_stats([_step_trace(2.0, 5.0)], _span("measure", 4.0, 9.0), _span("idle", 0.5, 2.5), start_ns, end_ns)

    assert stats.idle_power_w == pytest.approx(2.0, rel=1e-9)
    assert stats.avg_power_w == pytest.approx(5.0, rel=1e-9)
    assert stats.energy_mj_per_inference == pytest.approx(5.0 * 25.0, rel=1e-9)
    assert stats.dynamic_energy_mj_per_inference == pytest.approx(3.0 * 25.0, rel=1e-9)
    assert stats.dynamic_energy_mj_per_inference_ci95 == pytest.approx((75.0, 75.0), abs=1e-6)


def test_dynamic_energy_below_idle_is_reported_negative_not_clamped() -> None:
    start_ns, end_ns = _inferences(4.0, 9.0, 0.025)

    stats = energy_stats([_step_trace(2.0, 1.9)], _span("measure", 4.0, 9.0), _span("idle", 0.5, 2.5), start_ns, end_ns)

    assert stats.dynamic_energy_mj_per_inference == pytest.approx(-0.1 * 25.0, rel=1e-9)


def _ou_power_job(seed: int, corr_s: float) -> tuple[Series, PhaseSpan, np.ndarray, np.ndarray, float]:
    """20 s of 10 ms inferences at 5 W with Ornstein-Uhlenbeck noise (sd 0.25 W, correlation time corr_s), 100 Hz.

    Returns the rail, the measure span, the windows and the exact long-run energy per inference (50 mJ).
    """
    rng = np.random.default_rng(seed)
    t_ns = T0 + np.arange(0, 2101) * 10_000_000
    phi = math.exp(-0.01 / corr_s)
    noise = np.empty(t_ns.size)
    noise[0] = rng.standard_normal()
    shocks = rng.standard_normal(t_ns.size) * math.sqrt(1 - phi * phi)
    for k in range(1, t_ns.size):
        noise[k] = phi * noise[k - 1] + shocks[k]
    rail = Series("VDD_IN", "power_mw", "total", "ina3221", t_ns, (5.0 + 0.25 * noise) * 1e3)
    starts, ends = _inferences(0.5, 20.5, 0.010)
    return rail, _span("measure", 0.5, 20.5), starts, ends, 50.0


def test_energy_interval_allows_for_power_noise_correlated_over_half_a_second() -> None:
    given = covered = 0
    for seed in range(60):
        rail, measure, starts, ends, exact_mj = _ou_power_job(seed, corr_s=0.5)
        stats = energy_stats([rail], measure, None, starts, ends)
        if stats.energy_mj_per_inference_ci95 is None:
            assert "correlation outlasts" in (stats.interval_problem or "")
            continue
        lo, hi = stats.energy_mj_per_inference_ci95
        given += 1
        covered += lo <= exact_mj <= hi

    # 20 s against a 0.5 s correlation is near what a window resolves: most runs get an interval, and it covers.
    assert given >= 42
    assert covered / given >= 0.9


def test_power_correlated_over_a_tenth_of_the_window_gets_no_interval_and_says_why() -> None:
    rail, measure, starts, ends, _ = _ou_power_job(2, corr_s=2.0)

    stats = energy_stats([rail], measure, None, starts, ends)

    assert stats.energy_mj_per_inference is not None and stats.energy_mj_per_inference_ci95 is None
    assert "correlation outlasts" in (stats.interval_problem or "")


def test_independent_power_noise_gets_an_interval_about_as_narrow_as_it_should() -> None:
    rail, measure, starts, ends, _ = _ou_power_job(5, corr_s=0.002)  # white at 100 Hz

    stats = energy_stats([rail], measure, None, starts, ends)

    # 2000 samples of sd 0.25 W: se of the mean power 0.0056 W, 0.056 mJ per 10 ms inference.
    assert stats.energy_mj_per_inference_se == pytest.approx(0.25 / math.sqrt(2000) * 10, rel=0.35)
    assert stats.energy_mj_per_inference_ci95 is not None


def test_counter_is_preferred_over_power_of_the_same_rail() -> None:
    t_ns = T0 + np.arange(0, 1001) * 10_000_000
    counter = Series("gpu", "energy_uj", "total", "nvml", t_ns, 60.0 * _rel_s(t_ns) * 1e6)
    lagging_power = Series("gpu", "power_mw", "total", "nvml", t_ns, np.full(t_ns.size, 55_000.0))
    start_ns, end_ns = _inferences(2.0, 8.0, 0.05)

    stats = energy_stats([lagging_power, counter], _span("measure", 2.0, 8.0), None, start_ns, end_ns)

    assert stats.method == "counter"
    assert stats.avg_power_w == pytest.approx(60.0, rel=1e-6)


def test_without_a_total_rail_every_rail_is_summed_and_the_sensor_says_so() -> None:
    t_ns = T0 + np.arange(0, 1001) * 10_000_000
    rails = [
        Series(name, "power_mw", role, "ina3221", t_ns, np.full(t_ns.size, mw))
        for name, role, mw in (("VDD_CPU", "cpu", 1500.0), ("VDD_GPU", "gpu", 2500.0))
    ]
    temperature = Series("cpu-thermal", "temp_c", "", "thermal", t_ns, np.full(t_ns.size, 50.0))
    start_ns, end_ns = _inferences(2.0, 8.0, 0.05)

    stats = energy_stats([*rails, temperature], _span("measure", 2.0, 8.0), None, start_ns, end_ns)

    assert stats.avg_power_w == pytest.approx(4.0)
    assert stats.sensor is not None and "no 'total' rail" in stats.sensor and "VDD_GPU" in stats.sensor


def test_no_power_sensor_gives_all_null_energy() -> None:
    t_ns = T0 + np.arange(0, 100) * 10_000_000
    temperature = Series("cpu-thermal", "temp_c", "", "thermal", t_ns, np.full(t_ns.size, 50.0))
    start_ns, end_ns = _inferences(0.1, 0.9, 0.1)

    out = energy_stats([temperature], _span("measure", 0.1, 0.9), None, start_ns, end_ns).to_dict()

    design_keys = {
        "method", "sensor", "idle_power_w", "avg_power_w", "energy_mj_per_inference",
        "dynamic_energy_mj_per_inference", "energy_mj_per_inference_ci95",
    }  # fmt: skip
    assert design_keys <= set(out)
    assert all(value is None for key, value in out.items() if key not in ("rails", "warnings"))
    assert out["rails"] == [] and out["warnings"] == []
    assert out == empty()


def test_power_over_time_differentiates_a_counter() -> None:
    counter = _rapl_counter("package-0", 4.0, 0.0, 3.0, seed=9)

    t_ns, watts = power_over_time_w([counter])

    assert t_ns.size > 100 and np.all(np.diff(t_ns) > 0)
    assert np.median(watts) == pytest.approx(4.0, rel=0.02)


def test_co2e_estimate_from_energy_and_grid_intensity() -> None:
    assert co2e_g(3.6e6, 400.0) == pytest.approx(400.0)  # 1 kWh at 400 g/kWh


def _freq(values_khz: list[float], start_s: float = 0.0, every_s: float = 0.1) -> Series:
    t_ns = T0 + np.round((start_s + np.arange(len(values_khz)) * every_s) * S).astype(np.int64)
    return Series("cpu0", "cpu_freq_khz", "", "cpufreq", t_ns, np.array(values_khz, dtype=np.float64))


# Idle 0-1 s, warmup 1-2 s, measure 2-3 s; samples every 100 ms.
IDLE, WARMUP, MEASURE = _span("idle", 0.0, 0.95), _span("warmup", 1.0, 1.95), _span("measure", 2.0, 3.0)


def test_sustained_frequency_drop_during_measure_is_throttling() -> None:
    freq = _freq([600_000.0] * 10 + [2_000_000.0] * 10 + [2_000_000.0] * 5 + [1_500_000.0] * 5)

    thermal = thermal_stats([freq], MEASURE, warmup=WARMUP, idle=IDLE)

    assert thermal["throttled"] is True
    assert "cpu0" in thermal["throttle_reason"] and "25% below" in thermal["throttle_reason"]


def test_one_low_frequency_reading_or_a_low_idle_clock_is_not_throttling() -> None:
    freq = _freq([600_000.0] * 10 + [2_000_000.0] * 10 + [2_000_000.0] * 5 + [1_500_000.0] + [2_000_000.0] * 4)

    thermal = thermal_stats([freq], MEASURE, warmup=WARMUP, idle=IDLE)

    assert thermal["throttled"] is False
    assert thermal["throttle_reason"] is None


def test_throttle_flag_counts_only_during_measure() -> None:
    flag_in_warmup = _freq([0.0] * 10 + [1.0] * 10 + [0.0] * 10)
    flag_in_warmup.kind, flag_in_warmup.name = "throttle", "soc_throttle"
    flag_in_measure = _freq([0.0] * 25 + [1.0] * 5)
    flag_in_measure.kind, flag_in_measure.name = "throttle", "soc_throttle"

    assert thermal_stats([flag_in_warmup], MEASURE, warmup=WARMUP)["throttled"] is False
    assert thermal_stats([flag_in_measure], MEASURE, warmup=WARMUP)["throttled"] is True


def test_max_temperature_spans_warmup_and_measure_and_unknown_throttling_is_null() -> None:
    temps = _freq([80.0] * 10 + [55.0] * 9 + [61.0] + [58.0] * 10)  # hot settle/idle reading excluded
    temps.kind = "temp_c"

    thermal = thermal_stats([temps], MEASURE, warmup=WARMUP)

    assert thermal["max_temp_c"] == 61.0
    assert thermal["throttled"] is None
    assert thermal_stats([temps], MEASURE, warmup=WARMUP, trip_temp_c=57.0)["throttled"] is True


def test_peak_bytes_of_worker_rss() -> None:
    rss = _freq([100e6, 250e6, 180e6])
    rss.kind = "rss_bytes"

    assert peak_bytes([rss]) == 250_000_000
    assert peak_bytes([rss], kind="gpu_mem_bytes") is None


# Pinned figures of one hand-computable job (issue 18: mutation testing found these unchecked).
# One total rail, P(t) = 2 + 0.25 t W, sampled every 50 ms from 0 to 12 s (samples fall exactly on every
# window edge below). Idle span 0-2 s; 100 back-to-back inferences of 50 ms from 3 to 8 s.
# Linear power integrates exactly: window 3-8 s: avg 2 + 0.25*5.5 = 3.375 W, 16.875 J, 168.75 mJ per
# inference; idle 2 + 0.25*1 = 2.25 W.


def _linear_job(period_ms: int = 50) -> tuple[list[Series], PhaseSpan, PhaseSpan, np.ndarray, np.ndarray]:
    t_ns = T0 + np.arange(0, 12_000 // period_ms + 1) * period_ms * 1_000_000
    power = Series("VDD_IN", "power_mw", "total", "ina3221", t_ns, (2.0 + 0.25 * _rel_s(t_ns)) * 1e3)
    starts = T0 + 3 * S + np.arange(100) * 50_000_000
    return [power], _span("measure", 3.0, 8.0), _span("idle", 0.0, 2.0), starts, starts + 50_000_000


def test_every_figure_of_a_linear_power_job_is_pinned() -> None:
    series, measure, idle, start_ns, end_ns = _linear_job()

    stats = energy_stats(series, measure, idle, start_ns[::-1].copy(), end_ns[::-1].copy())  # any order

    assert stats.method == "power-integration"
    assert stats.sensor == "whole board: ina3221:VDD_IN"
    assert stats.duration_s == pytest.approx(5.0, rel=1e-12)
    assert stats.energy_j_total == pytest.approx(16.875, rel=1e-12)
    assert stats.avg_power_w == pytest.approx(3.375, rel=1e-12)
    assert stats.energy_mj_per_inference == pytest.approx(168.75, rel=1e-12)
    assert stats.sample_count == 101  # 3.00, 3.05, ..., 8.00 s: both edges included
    assert stats.sample_rate_hz == pytest.approx(101 / 5.0, rel=1e-12)
    assert stats.idle_power_w == pytest.approx(2.25, rel=1e-12)
    assert stats.dynamic_energy_mj_per_inference == pytest.approx((16.875 - 2.25 * 5.0) / 100 * 1e3, rel=1e-12)
    assert stats.blocks is None and stats.gaps_excluded_s is None  # a worker's run: one span
    assert stats.rails == [
        {
            "name": "VDD_IN",
            "role": "total",
            "part_of": None,
            "sensor": "ina3221",
            "method": "power-integration",
            "summed": True,
            "avg_power_w": pytest.approx(3.375, rel=1e-12),
            "energy_mj": pytest.approx(16875.0, rel=1e-12),
            "problem": None,
        }
    ]
    assert stats.warnings == [] and stats.problem is None


def test_a_power_ramp_across_the_window_is_not_noise_to_average_away() -> None:
    series, measure, idle, start_ns, end_ns = _linear_job()

    stats = energy_stats(series, measure, idle, start_ns, end_ns)

    # Power that climbs all window long is a trend, not a stationary noise: no interval pretends otherwise.
    assert stats.energy_mj_per_inference_ci95 is None
    assert stats.interval_problem is not None and "correlation" in stats.interval_problem
    out = stats.to_dict()
    assert out["energy_mj_per_inference_ci95"] is None and out["interval_problem"] == stats.interval_problem


def test_the_interval_is_the_ratio_over_units_of_consecutive_inferences() -> None:
    from host.analysis.autocorr import ratio_precision
    from host.analysis.distributions import t_two_sided
    from host.analysis.energy_blocks import unit_edges

    rail, measure, starts, ends, _ = _ou_power_job(3, corr_s=0.05)

    stats = energy_stats([rail], measure, None, starts, ends)

    units = min(starts.size, (stats.sample_count or 0) // 2)
    u_start, u_end, u_count = unit_edges(starts, ends, [(0, starts.size)], units)
    watts = rail.value * 1e-3
    cum = np.concatenate(([0.0], np.cumsum((watts[1:] + watts[:-1]) / 2 * 0.01)))
    unit_j = np.interp(u_end, rail.t_ns, cum) - np.interp(u_start, rail.t_ns, cum)
    precision = ratio_precision(unit_j, u_count)
    assert precision.se is not None
    assert stats.energy_mj_per_inference_se == pytest.approx(precision.se * 1e3, rel=1e-6)
    lo, hi = stats.energy_mj_per_inference_ci95 or (math.nan, math.nan)
    assert hi - lo == pytest.approx(2 * t_two_sided(0.95, precision.df) * precision.se * 1e3, rel=1e-6)


def test_idle_span_too_sparse_to_show_its_correlation_gives_idle_power_without_its_interval() -> None:
    series, measure, _idle, start_ns, end_ns = _linear_job()

    # 0.5-1.0 s holds 11 samples: 5 units of 2, far below the 50 that show how correlated the power is.
    stats = energy_stats(series, measure, _span("idle", 0.5, 1.0), start_ns, end_ns)

    assert stats.idle_power_w == pytest.approx(2.0 + 0.25 * 0.75, rel=1e-12)
    assert stats.idle_power_w_se is None and stats.idle_power_w_df is None
    assert stats.dynamic_energy_mj_per_inference_ci95 is None and stats.dynamic_energy_mj_per_inference_se is None


def test_energy_interval_needs_enough_power_samples_to_show_their_correlation() -> None:
    rail, measure, starts, ends, _ = _ou_power_job(1, corr_s=0.002)

    enough = energy_stats([rail], measure, None, starts[:100], ends[:100])  # 1 s: 101 samples, 50 units
    short = energy_stats([rail], measure, None, starts[:98], ends[:98])  # 99 samples: 49 units

    assert enough.energy_mj_per_inference_ci95 is not None
    assert short.energy_mj_per_inference_ci95 is None and short.energy_mj_per_inference is not None
    assert "49 units" in (short.interval_problem or "")


def test_an_idle_span_the_rail_does_not_cover_leaves_no_baseline_and_says_why() -> None:
    series, measure, _idle, start_ns, end_ns = _linear_job()

    stats = energy_stats(series, measure, _span("idle", 20.0, 22.0), start_ns, end_ns)

    assert stats.idle_power_w is None and stats.dynamic_energy_mj_per_inference is None
    assert stats.warnings == ["no idle baseline: rail ina3221:VDD_IN stopped 10.00 s before the end of the window"]
    assert stats.energy_mj_per_inference == pytest.approx(168.75, rel=1e-12)


def test_an_empty_measured_window_names_the_problem_and_keeps_the_sensor() -> None:
    series, _measure, idle, _start, _end = _linear_job()
    empty_ns = np.zeros(0, dtype=np.int64)

    for measure in (_span("measure", 4.0, 4.0), _span("measure", 5.0, 4.0)):
        stats = energy_stats(series, measure, idle, empty_ns, empty_ns)
        assert stats.problem == "the measured window is empty"
        assert (stats.method, stats.sensor) == ("power-integration", "whole board: ina3221:VDD_IN")
        assert stats.avg_power_w is None


def test_without_inferences_the_measure_span_gives_power_but_no_per_inference_figures() -> None:
    series, _measure, idle, _start, _end = _linear_job()
    empty_ns = np.zeros(0, dtype=np.int64)

    stats = energy_stats(series, _span("measure", 4.0, 6.0), idle, empty_ns, empty_ns)

    assert stats.avg_power_w == pytest.approx(2 + 0.25 * 5.0, rel=1e-12)
    assert stats.energy_mj_per_inference is None and stats.energy_mj_per_inference_ci95 is None


def test_a_rail_that_stopped_early_nulls_the_energy_and_keeps_method_and_sensor() -> None:
    series, measure, idle, start_ns, end_ns = _linear_job()
    power = series[0]
    cut = power.t_ns <= T0 + 6 * S
    stopped = Series(power.name, power.kind, power.role, power.sensor, power.t_ns[cut], power.value[cut])

    stats = energy_stats([stopped], measure, idle, start_ns, end_ns)

    assert stats.problem == "rail ina3221:VDD_IN stopped 2.00 s before the end of the window"
    assert (stats.method, stats.sensor) == ("power-integration", "whole board: ina3221:VDD_IN")
    assert stats.rails[0]["problem"] == stats.problem and stats.rails[0]["energy_mj"] is None


def test_window_edges_just_outside_the_samples_hold_the_edge_power() -> None:
    # Samples every 10 ms from 1.000 to 2.000 s; the window reaches 5 ms beyond both ends (within tolerance).
    t_ns = T0 + S + np.arange(0, 101) * 10_000_000
    power = Series("rail", "power_mw", "total", "csv", t_ns, (1.0 + _rel_s(t_ns)) * 1e3)  # 2 W -> 3 W
    start_ns = np.array([T0 + S - 5_000_000])
    end_ns = np.array([T0 + 2 * S + 5_000_000])

    stats = energy_stats([power], _span("measure", 1.0, 2.0), None, start_ns, end_ns)

    # 2.5 J inside, plus 5 ms at the first sample's 2 W and 5 ms at the last one's 3 W.
    assert stats.energy_j_total == pytest.approx(2.5 + 0.005 * 2.0 + 0.005 * 3.0, rel=1e-12)


def test_counter_edges_just_outside_the_samples_extrapolate_the_edge_rates() -> None:
    # A counter whose rate is 2 W over its first interval and 3 W over its last (10 ms apart).
    t_ns = T0 + S + np.arange(0, 101) * 10_000_000
    rate_w = np.where(np.arange(100) < 50, 2.0, 3.0)
    energy_uj = 7e6 + np.concatenate(([0.0], np.cumsum(rate_w * 0.01))) * 1e6
    counter = Series("gpu", "energy_uj", "total", "nvml", t_ns, energy_uj)
    start_ns = np.array([T0 + S - 5_000_000])
    end_ns = np.array([T0 + 2 * S + 5_000_000])

    stats = energy_stats([counter], _span("measure", 1.0, 2.0), None, start_ns, end_ns)

    assert stats.energy_j_total == pytest.approx(2.5 + 0.005 * 2.0 + 0.005 * 3.0, rel=1e-12)


def test_a_counter_that_advanced_too_few_times_is_warned_about_in_words() -> None:
    # NVML-like: the counter changes every 100 ms (read every 10 ms), 4 W; a 2 s window sees 20 updates.
    t_ns = T0 + np.arange(0, 501) * 10_000_000
    energy_uj = 4.0 * np.floor(_rel_s(t_ns) * 10) / 10 * 1e6
    counter = Series("gpu", "energy_uj", "total", "nvml", t_ns, energy_uj)
    start_ns, end_ns = _inferences(1.0, 3.0, 0.05)

    stats = energy_stats([counter], _span("measure", 1.0, 3.0), None, start_ns, end_ns)

    assert stats.warnings == [
        "rail nvml:gpu: its counter advanced about 20 times in the window (every 100 ms), fewer than 50"
    ]


def test_a_counter_that_advances_often_enough_gives_no_warning() -> None:
    t_ns = T0 + np.arange(0, 1001) * 10_000_000
    counter = Series("gpu", "energy_uj", "total", "nvml", t_ns, 4.0 * np.floor(_rel_s(t_ns) * 10) / 10 * 1e6)
    start_ns, end_ns = _inferences(2.0, 8.0, 0.05)  # 60 updates

    assert energy_stats([counter], _span("measure", 2.0, 8.0), None, start_ns, end_ns).warnings == []


def test_dynamic_interval_combines_two_standard_errors_by_welch_satterthwaite() -> None:
    from host.analysis.energy import dynamic_interval

    # se = hypot(3, 4) = 5; df = 625 / (81/9 + 256/4) = 8.56, floored to 8 for the t quantile.
    t_crit_8 = 2.306  # Student t, two-sided 95%, 8 df
    interval, se, df = dynamic_interval(10.0, 3.0, 9, 4.0, 4)

    assert se == pytest.approx(5.0)
    assert df == pytest.approx(625 / 73)
    assert interval == pytest.approx((10.0 - t_crit_8 * 5.0, 10.0 + t_crit_8 * 5.0), rel=1e-6)
    # df below 1 is floored to 1 (the widest t), not to 2.
    (lo, hi), _, tiny_df = dynamic_interval(0.0, 1.0, 1, 1e-9, 1)
    assert tiny_df == pytest.approx(1.0) and hi == pytest.approx(12.706 * math.hypot(1.0, 1e-9)) and lo == -hi
    assert dynamic_interval(7.0, 0.0, 9, 0.0, 4) == ((7.0, 7.0), 0.0, math.inf)


def test_power_over_time_of_power_rails_is_their_sum_in_watts_on_the_first_rails_times() -> None:
    t_ns = T0 + np.arange(0, 11) * 100_000_000
    cpu = Series("VDD_CPU", "power_mw", "cpu", "ina3221", t_ns, np.full(11, 1500.0))
    gpu_t = t_ns + 50_000_000
    gpu = Series("VDD_GPU", "power_mw", "gpu", "ina3221", gpu_t, 2000.0 + 100.0 * np.arange(11))

    out_t, watts = power_over_time_w([cpu, gpu])

    assert out_t.tolist() == t_ns.tolist()
    # gpu interpolated at the cpu's times: held at 2.0 W before its first sample, then 1.95 + 0.1 i W.
    expected = 1.5 + np.concatenate(([2.0], 1.95 + 0.1 * np.arange(1, 11)))
    assert watts == pytest.approx(expected, rel=1e-12)


def test_power_over_time_of_a_counter_uses_steps_of_at_least_the_minimum_interval() -> None:
    t_ns = T0 + np.arange(0, 41) * 5_000_000  # every 5 ms for 200 ms at 4 W, then 6 W
    rate_w = np.where(np.arange(40) < 20, 4.0, 6.0)
    energy_uj = np.concatenate(([0.0], np.cumsum(rate_w * 0.005))) * 1e6
    counter = Series("package-0", "energy_uj", "total", "rapl", t_ns, energy_uj)

    out_t, watts = power_over_time_w([counter], min_interval_ns=10_000_000)

    # A pick every 10 ms exactly (the interval itself is long enough), each value at its middle.
    assert out_t.tolist() == (T0 + 5_000_000 + np.arange(20) * 10_000_000).tolist()
    assert watts == pytest.approx([4.0] * 10 + [6.0] * 10, rel=1e-9)


def test_power_over_time_of_a_counter_shorter_than_the_interval_is_one_average() -> None:
    t_ns = T0 + np.array([0, 2_000_000, 4_000_000])
    counter = Series("package-0", "energy_uj", "total", "rapl", t_ns, np.array([0.0, 10_000.0, 30_000.0]))

    out_t, watts = power_over_time_w([counter], min_interval_ns=10_000_000)

    assert out_t.tolist() == [T0 + 2_000_000]
    assert watts == pytest.approx([30_000e-6 / 0.004])


def test_power_over_time_without_a_power_sensor_is_empty() -> None:
    temperature = _freq([50.0, 51.0])
    temperature.kind = "temp_c"

    out_t, watts = power_over_time_w([temperature])

    assert out_t.size == 0 and watts.size == 0


def test_peak_bytes_within_a_span_over_several_series_skips_other_kinds() -> None:
    temp = _freq([99e9, 99e9, 99e9])
    temp.kind = "temp_c"
    first = _freq([100e6, 400e6, 120e6, 900e6])  # 0.0, 0.1, 0.2, 0.3 s
    first.kind = "rss_bytes"
    second = _freq([300e6, 350e6], start_s=0.05)  # 0.05, 0.15 s
    second.kind = "rss_bytes"
    span = _span("measure", 0.0, 0.25)

    assert peak_bytes([temp, first, second], span=span) == 400_000_000
    assert peak_bytes([temp, second, first], span=_span("measure", 0.0, 0.16)) == 400_000_000
    assert peak_bytes([temp, second], span=_span("measure", 0.1, 0.25)) == 350_000_000
    assert peak_bytes([temp, first, second]) == 900_000_000


def test_energy_of_each_window_integrates_the_total_rail() -> None:
    from host.analysis.energy import windows_energy_j

    series, _measure, _idle, _start, _end = _linear_job()
    starts = T0 + np.array([3 * S, 5 * S])
    ends = T0 + np.array([4 * S, 7 * S])

    # P(t) = 2 + 0.25 t W integrates to 2 dt + 0.125 (t1^2 - t0^2) J.
    assert windows_energy_j(series, starts, ends) == pytest.approx([2.0 + 0.125 * 7, 4.0 + 0.125 * 24], rel=1e-12)
    assert windows_energy_j(series, starts[:1], starts[:1]) is None  # no span at all
    assert windows_energy_j(series, starts + 20 * S, ends + 20 * S) is None  # beyond the samples
    assert windows_energy_j(series, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)) is None
    temperature = _freq([50.0, 51.0])
    temperature.kind = "temp_c"
    assert windows_energy_j([temperature], starts, ends) is None


def test_a_counter_that_advanced_exactly_the_minimum_number_of_times_is_not_warned_about() -> None:
    t_ns = T0 + np.arange(0, 1001) * 10_000_000
    counter = Series("gpu", "energy_uj", "total", "nvml", t_ns, 4.0 * np.floor(_rel_s(t_ns) * 10) / 10 * 1e6)
    start_ns, end_ns = _inferences(2.0, 7.0, 0.05)  # a 5 s window: 50 updates of 100 ms

    assert energy_stats([counter], _span("measure", 2.0, 7.0), None, start_ns, end_ns).warnings == []


def test_idle_baseline_error_allows_for_power_noise_correlated_over_150_ms() -> None:
    # 6 s of idle at 3 W with Ornstein-Uhlenbeck noise (sd 0.2 W, 0.15 s), sampled at 100 Hz: ten blocks of
    # 0.6 s taken as independent (the old rule) under-cover; the correlated series' own error covers, or, where
    # the run is too short to tell, there is none.
    from host.analysis.distributions import t_two_sided

    covered = given = naive = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        t_ns = T0 + np.arange(0, 1401) * 10_000_000
        noise = np.empty(t_ns.size)
        noise[0] = rng.standard_normal()
        phi = math.exp(-0.01 / 0.15)
        for k in range(1, t_ns.size):
            noise[k] = phi * noise[k - 1] + math.sqrt(1 - phi * phi) * rng.standard_normal()
        watts = np.where(_rel_s(t_ns) < 6.0, 3.0, 5.0) + 0.2 * noise
        rail = Series("VDD_IN", "power_mw", "total", "ina3221", t_ns, watts * 1e3)
        starts, ends = _inferences(6.5, 13.5, 0.01)
        stats = energy_stats([rail], _span("measure", 6.5, 13.5), _span("idle", 0.0, 6.0), starts, ends)
        if stats.idle_power_w_se is None:
            continue
        given += 1
        half = t_two_sided(0.95, stats.idle_power_w_df or 1.0) * stats.idle_power_w_se
        covered += abs((stats.idle_power_w or 0.0) - 3.0) <= half
        blocks = watts[:600].reshape(10, 60).mean(axis=1)  # the old rule: ten blocks of the idle span
        naive += abs(float(blocks.mean()) - 3.0) <= 2.262 * float(blocks.std(ddof=1)) / math.sqrt(10)

    assert given >= 40 and covered / given >= 0.9
    assert naive / 60 < 0.85  # 72% here: the blocks share the noise's slow part
