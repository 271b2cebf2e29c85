"""Energy, power, thermal and memory figures of one job, computed from the raw sensor series.

Channel choice: the series with role "total" are summed (two RAPL packages, say); when those are RAPL
packages, "dram"-role series are added too, because RAPL's package domain does not include DRAM while a
board's input rail (INA3221 VDD_IN, a USB meter) already does. With no "total" series at all, every
power/energy series is summed and the ``sensor`` text says so. A chosen set with energy counters
(kind "energy_uj", cumulative and already unwrapped by the agent) uses only the counters, because the
power series beside them are the same rails' instantaneous readings; otherwise power (kind "power_mw")
is integrated with the trapezoid rule. Either way each channel becomes a cumulative-energy function of
time, so window edges are interpolated and block energies add up exactly to the window's energy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from host.rundata import PhaseSpan, Series
from host.stats import batch_means_ci95

POWER_MW = "power_mw"
ENERGY_UJ = "energy_uj"
ENERGY_KINDS = (POWER_MW, ENERGY_UJ)

#: Blocks of inferences for the batch-means interval, and the fewest that still give one.
CI_BLOCKS = 10
CI_MIN_BLOCKS = 5
#: Each block must span at least this many sensor samples, or its energy is mostly interpolation.
CI_MIN_SAMPLES_PER_BLOCK = 4

#: cpu_freq_khz below this fraction of its warmup (else idle) median during measure counts as throttling.
FREQ_DROP_FRACTION = 0.85
#: ... when it stays there for this many consecutive samples (one low reading is a governor blip).
FREQ_DROP_MIN_SAMPLES = 3

CO2E_LABEL = "estimate: energy x grid carbon intensity"


@dataclass(frozen=True)
class _Channel:
    """A power/energy series cleaned for integration: finite values, strictly increasing time."""

    label: str
    kind: str
    t_ns: np.ndarray
    value: np.ndarray


@dataclass
class EnergyStats:
    """Energy over the measured inferences; every number is None where no power sensor exists."""

    #: "counter" | "power-integration" | None.
    method: str | None
    #: The channels summed, e.g. "rapl:package-0 + rapl:package-1 + rapl:dram".
    sensor: str | None
    idle_power_w: float | None
    avg_power_w: float | None
    energy_mj_per_inference: float | None
    #: Above idle: (E - P_idle·T)/n. Noise can make it slightly negative; it is reported as computed.
    dynamic_energy_mj_per_inference: float | None
    energy_mj_per_inference_ci95: tuple[float, float] | None
    dynamic_energy_mj_per_inference_ci95: tuple[float, float] | None
    #: Samples of the sparsest chosen channel inside the measured window, and that per second.
    sample_count: int | None
    sample_rate_hz: float | None
    energy_j_total: float | None
    duration_s: float | None

    @classmethod
    def empty(cls, method: str | None = None, sensor: str | None = None) -> EnergyStats:
        """No energy figures (no power sensor, or no usable window): every number None."""
        values: dict[str, Any] = {f.name: None for f in fields(cls)}
        return cls(**{**values, "method": method, "sensor": sensor})

    def to_dict(self) -> dict[str, Any]:
        """The result document's ``energy`` object (DESIGN.md §4) plus the extra figures above."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("energy_mj_per_inference_ci95", "dynamic_energy_mj_per_inference_ci95"):
            out[key] = list(out[key]) if out[key] is not None else None
        return out


def empty() -> dict[str, Any]:
    """The all-null ``energy`` object for a device without a power sensor."""
    return EnergyStats.empty().to_dict()


def _clean(series: Series) -> _Channel | None:
    """Sort by time, drop non-finite values and repeated timestamps; None if < 2 samples remain."""
    t = np.asarray(series.t_ns, dtype=np.int64)
    v = np.asarray(series.value, dtype=np.float64)
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    first = np.concatenate(([True], np.diff(t) > 0))
    t, v = t[first], v[first]
    if t.size < 2:
        return None
    label = f"{series.sensor}:{series.name}" if series.sensor else series.name
    return _Channel(label, series.kind, t, v)


def choose_channels(series: Sequence[Series]) -> tuple[list[_Channel], str | None, str | None]:
    """The channels whose sum is the device's power, with (method, sensor text) naming them."""
    usable = [s for s in series if s.kind in ENERGY_KINDS]
    totals = [s for s in usable if s.role == "total"]
    fallback = not totals
    if fallback:
        chosen = usable
    else:
        rapl_packages = any(s.sensor == "rapl" for s in totals)
        chosen = totals + ([s for s in usable if s.role == "dram"] if rapl_packages else [])
    counters = [s for s in chosen if s.kind == ENERGY_UJ]
    picked = counters or [s for s in chosen if s.kind == POWER_MW]
    channels = [ch for ch in (_clean(s) for s in picked) if ch is not None]
    if not channels:
        return [], None, None
    method = "counter" if counters else "power-integration"
    sensor = " + ".join(ch.label for ch in channels)
    if fallback:
        sensor = f"sum of all rails (no 'total' rail): {sensor}"
    return channels, method, sensor


def _cumulative_j(ch: _Channel, t_ns: np.ndarray) -> np.ndarray:
    """Energy in J from the channel's first sample to each time in ``t_ns``.

    Power is taken as linear between samples (so the integral is the trapezoid rule, exact at window
    edges too); a counter is interpolated linearly. Outside the samples the edge power is held.
    """
    t_s = (ch.t_ns - ch.t_ns[0]).astype(np.float64) / 1e9
    q_s = (np.asarray(t_ns, dtype=np.int64) - ch.t_ns[0]).astype(np.float64) / 1e9
    inside = np.clip(q_s, t_s[0], t_s[-1])
    if ch.kind == ENERGY_UJ:
        energy_j = (ch.value - ch.value[0]) * 1e-6
        rate_w = np.diff(energy_j) / np.diff(t_s)
        edge_before, edge_after = rate_w[0], rate_w[-1]
        at = np.interp(inside, t_s, energy_j)
    else:
        power_w = ch.value * 1e-3
        cum_j = np.concatenate(([0.0], np.cumsum((power_w[1:] + power_w[:-1]) / 2 * np.diff(t_s))))
        seg = np.clip(np.searchsorted(t_s, inside, side="right") - 1, 0, t_s.size - 2)
        dt = inside - t_s[seg]
        slope = (power_w[seg + 1] - power_w[seg]) / (t_s[seg + 1] - t_s[seg])
        at = cum_j[seg] + dt * (power_w[seg] + (power_w[seg] + slope * dt)) / 2
        edge_before, edge_after = power_w[0], power_w[-1]
    below = np.minimum(q_s - inside, 0.0)
    above = np.maximum(q_s - inside, 0.0)
    return np.asarray(at + below * edge_before + above * edge_after)


def _total_j(channels: list[_Channel], t_ns: np.ndarray) -> np.ndarray:
    return np.sum([_cumulative_j(ch, t_ns) for ch in channels], axis=0)


def _covers(channels: list[_Channel], start_ns: int, end_ns: int) -> bool:
    """True when every channel has samples overlapping the window (edges may still be extrapolated)."""
    return end_ns > start_ns and all(ch.t_ns[0] < end_ns and ch.t_ns[-1] > start_ns for ch in channels)


def _block_edges(
    starts_ns: np.ndarray, window_start_ns: int, window_end_ns: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split inferences (sorted by start) into k blocks by count; each block runs to the next one's start."""
    idx = np.round(np.linspace(0, starts_ns.size, k + 1)).astype(np.int64)
    edges = np.concatenate(([window_start_ns], starts_ns[idx[1:-1]], [window_end_ns])).astype(np.int64)
    return edges, np.diff(idx)


def energy_stats(
    series: Sequence[Series],
    measure: PhaseSpan,
    idle: PhaseSpan | None,
    start_ns: np.ndarray,
    end_ns: np.ndarray,
) -> EnergyStats:
    """Energy of the measured inferences, gross and above idle, with 95% batch-means intervals.

    The window is the measured inferences' span (first start to last end), the same span throughput is
    computed over, so avg_power_w = energy per inference x throughput exactly; the MEASURE phase span
    is used only when there are no inference windows (then per-inference figures are None). The
    interval splits the inferences into CI_BLOCKS blocks by count (fewer when the sensor is too sparse,
    none below CI_MIN_BLOCKS), takes energy per inference in each, and centres a Student-t interval on
    the overall estimate. The dynamic interval treats idle power as known (its own noise is not added).
    idle_power_w and the dynamic figures are None without an idle span that the samples cover.
    """
    channels, method, sensor = choose_channels(series)
    if not channels:
        return EnergyStats.empty()
    starts = np.asarray(start_ns, dtype=np.int64)
    ends = np.asarray(end_ns, dtype=np.int64)
    if starts.shape != ends.shape:
        raise ValueError(f"start_ns and end_ns differ in length: {starts.shape} and {ends.shape}")
    n = int(starts.size)
    if n:
        order = np.argsort(starts, kind="stable")
        starts = starts[order]
        window = (int(starts[0]), int(ends.max()))
    else:
        window = (int(measure.start_ns), int(measure.end_ns))
    if not _covers(channels, *window):
        return EnergyStats.empty(method, sensor)

    duration_s = (window[1] - window[0]) / 1e9
    energy_j = float(np.diff(_total_j(channels, np.array(window, dtype=np.int64)))[0])
    sample_count = min(int(np.count_nonzero((ch.t_ns >= window[0]) & (ch.t_ns <= window[1]))) for ch in channels)

    idle_power_w = None
    if idle is not None and _covers(channels, int(idle.start_ns), int(idle.end_ns)):
        idle_edges = np.array([idle.start_ns, idle.end_ns], dtype=np.int64)
        idle_power_w = float(np.diff(_total_j(channels, idle_edges))[0]) / ((idle.end_ns - idle.start_ns) / 1e9)

    gross_mj = dynamic_mj = gross_ci = dynamic_ci = None
    if n:
        gross_mj = energy_j / n * 1e3
        if idle_power_w is not None:
            dynamic_mj = (energy_j - idle_power_w * duration_s) / n * 1e3
        k = min(CI_BLOCKS, n, sample_count // CI_MIN_SAMPLES_PER_BLOCK)
        if k >= CI_MIN_BLOCKS:
            edges, counts = _block_edges(starts, window[0], window[1], k)
            block_j = np.diff(_total_j(channels, edges))
            gross_ci = batch_means_ci95(block_j / counts * 1e3, center=gross_mj)
            if idle_power_w is not None and dynamic_mj is not None:
                block_s = np.diff(edges).astype(np.float64) / 1e9
                dynamic_blocks = (block_j - idle_power_w * block_s) / counts * 1e3
                dynamic_ci = batch_means_ci95(dynamic_blocks, center=dynamic_mj)

    return EnergyStats(
        method=method,
        sensor=sensor,
        idle_power_w=idle_power_w,
        avg_power_w=energy_j / duration_s,
        energy_mj_per_inference=gross_mj,
        dynamic_energy_mj_per_inference=dynamic_mj,
        energy_mj_per_inference_ci95=gross_ci,
        dynamic_energy_mj_per_inference_ci95=dynamic_ci,
        sample_count=sample_count,
        sample_rate_hz=sample_count / duration_s,
        energy_j_total=energy_j,
        duration_s=duration_s,
    )


def power_over_time_w(series: Sequence[Series], min_interval_ns: int = 10_000_000) -> tuple[np.ndarray, np.ndarray]:
    """The chosen total power over time (for plots): (t_ns, watts); empty arrays without a sensor.

    Power channels are summed on the first channel's timestamps. Counters are differentiated between
    samples at least ``min_interval_ns`` apart (a raw 1 kHz RAPL difference is mostly update jitter),
    each value placed at the middle of its interval.
    """
    channels, method, _ = choose_channels(series)
    if not channels:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    base = channels[0].t_ns
    if method == "power-integration":
        watts = np.sum([np.interp(base, ch.t_ns, ch.value) for ch in channels], axis=0) * 1e-3
        return base.copy(), np.asarray(watts, dtype=np.float64)
    picks = [0]
    for i, t in enumerate(base):
        if t - base[picks[-1]] >= min_interval_ns:
            picks.append(i)
    grid = base[np.array(picks)]
    if grid.size < 2:
        grid = base[[0, -1]]
    energy_j = _total_j(channels, grid)
    watts = np.diff(energy_j) / (np.diff(grid).astype(np.float64) / 1e9)
    mid_ns = grid[:-1] + np.diff(grid) // 2
    return mid_ns, np.asarray(watts, dtype=np.float64)


def co2e_g(energy_j: float, grid_g_per_kwh: float) -> float:
    """Estimated grams of CO2-equivalent for ``energy_j`` at a grid intensity in g/kWh (see CO2E_LABEL).

    An estimate: it ignores the board's power supply losses and embodied emissions.
    """
    return energy_j / 3.6e6 * grid_g_per_kwh


def _in_span(s: Series, start_ns: int, end_ns: int) -> np.ndarray:
    t = np.asarray(s.t_ns, dtype=np.int64)
    v = np.asarray(s.value, dtype=np.float64)
    return v[(t >= start_ns) & (t <= end_ns) & np.isfinite(v)]


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True values."""
    if not mask.any():
        return 0
    padded = np.concatenate(([0], mask.astype(np.int8), [0]))
    changes = np.flatnonzero(np.diff(padded))
    return int((changes[1::2] - changes[::2]).max())


def _frequency_drop(s: Series, measure: PhaseSpan, baselines: Sequence[PhaseSpan]) -> str | None:
    """Why ``s`` (cpu_freq_khz) counts as throttled during measure, or None."""
    during = _in_span(s, measure.start_ns, measure.end_ns)
    for span in baselines:  # warmup first: a busy CPU's clock; idle may sit at a low governor clock
        before = _in_span(s, span.start_ns, span.end_ns)
        if before.size:
            reference = float(np.median(before))
            break
    else:
        return None
    low = during < FREQ_DROP_FRACTION * reference
    if reference <= 0 or _longest_run(low) < min(FREQ_DROP_MIN_SAMPLES, during.size) or not low.any():
        return None
    lowest = float(during.min())
    return (
        f"{s.name} frequency fell to {lowest / 1e6:.2f} GHz, {100 * (1 - lowest / reference):.0f}% below"
        f" its {span.name} median {reference / 1e6:.2f} GHz"
    )


def thermal_stats(
    series: Sequence[Series],
    measure: PhaseSpan,
    warmup: PhaseSpan | None = None,
    idle: PhaseSpan | None = None,
    trip_temp_c: float | None = None,
) -> dict[str, Any]:
    """``thermal`` object: max_temp_c, throttled, throttle_reason.

    max_temp_c is the hottest temp_c sample over warmup + measure (measure alone without a warmup span).
    Throttled when, during measure, (a) any "throttle" sample is 1, (b) a cpu_freq_khz series stays
    below FREQ_DROP_FRACTION of its warmup median (idle median when no warmup samples) for
    FREQ_DROP_MIN_SAMPLES consecutive samples, or (c) temperature reaches ``trip_temp_c`` when given.
    throttled is None (unknown) when there is neither a throttle flag, a frequency series nor a trip
    point to judge by.
    """
    hot_from = warmup.start_ns if warmup is not None else measure.start_ns
    temps = [_in_span(s, hot_from, measure.end_ns) for s in series if s.kind == "temp_c"]
    temps = [t for t in temps if t.size]
    max_temp_c = max(float(t.max()) for t in temps) if temps else None

    reasons: list[str] = []
    flags = [s for s in series if s.kind == "throttle"]
    freqs = [s for s in series if s.kind == "cpu_freq_khz"]
    for s in flags:
        if np.any(_in_span(s, measure.start_ns, measure.end_ns) >= 0.5):
            reasons.append(f"throttle flag {s.name} set during measure")
    baselines = [span for span in (warmup, idle) if span is not None]
    for s in freqs:
        reason = _frequency_drop(s, measure, baselines)
        if reason:
            reasons.append(reason)
    measure_temps = [_in_span(s, measure.start_ns, measure.end_ns) for s in series if s.kind == "temp_c"]
    hottest_c = max((float(t.max()) for t in measure_temps if t.size), default=None)
    if trip_temp_c is not None and hottest_c is not None and hottest_c >= trip_temp_c:
        reasons.append(f"temperature reached {hottest_c:.1f} °C, trip point {trip_temp_c:.1f} °C")

    judged = bool(flags or freqs or trip_temp_c is not None)
    return {
        "max_temp_c": max_temp_c,
        "throttled": bool(reasons) if judged else None,
        "throttle_reason": "; ".join(reasons) if reasons else None,
    }


def peak_bytes(series: Sequence[Series], kind: str = "rss_bytes", span: PhaseSpan | None = None) -> int | None:
    """Largest value of any series of ``kind`` (within ``span`` when given); None when there is none."""
    peak: float | None = None
    for s in series:
        if s.kind != kind:
            continue
        values = _in_span(s, span.start_ns, span.end_ns) if span else _in_span(s, -(2**62), 2**62)
        if values.size:
            peak = max(peak, float(values.max())) if peak is not None else float(values.max())
    return int(peak) if peak is not None else None
