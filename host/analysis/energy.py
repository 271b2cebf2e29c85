"""Energy, power and memory figures of one job, computed from the raw sensor series (thermal: host/analysis/thermal.py).

Which rails are summed is host/analysis/rails.py's job (the profile's rail hierarchy: the whole-board rail, else
the top-level parts, never a parent with its part). Each rail becomes a cumulative-energy function of
time (a counter interpolated, power integrated with the trapezoid rule), so window edges are
interpolated and block energies add up exactly to the window's energy. Energy is given only when every
summed rail covers the window (samples near both edges, no gap): otherwise the figures are null and
``problem`` says which rail failed, never an extrapolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from host.analysis import rails as rail_plan
from host.analysis.autocorr import MIN_VALUES, mean_precision, ratio_precision
from host.analysis.distributions import t_two_sided
from host.analysis.energy_blocks import (
    UNIT_MIN_SAMPLES,
    block_spans,
    blocks_half_width_j,
    dynamic_interval,
    runner_blocks,
    unit_edges,
)
from host.analysis.power_trace import power_over_time_w, total_j
from host.analysis.rails import ENERGY_KINDS, ENERGY_UJ, POWER_MW, Channel, Rail
from host.analysis.stats import REACH_FRACTION
from host.analysis.thermal import in_span, thermal_stats
from host.store.rundata import PhaseSpan, Series

# thermal_stats lives in host/analysis/thermal.py; callers that read every figure of a job from here keep working.
__all__ = ["ENERGY_KINDS", "ENERGY_UJ", "POWER_MW", "dynamic_interval", "power_over_time_w", "thermal_stats"]

#: A counter should advance at least this many times over the window (NVML: ~100 ms steps).
MIN_COUNTER_UPDATES = 50

CO2E_LABEL = "estimate: energy x grid carbon intensity"


@dataclass
class EnergyStats:
    """Energy over the measured inferences; every number is None where no power sensor exists."""

    #: "counter" | "power-integration" | "counter + power-integration" | None.
    method: str | None
    #: What the total is made of, e.g. "whole board: rapl:psys".
    sensor: str | None
    idle_power_w: float | None
    avg_power_w: float | None
    energy_mj_per_inference: float | None
    #: Above idle: (E - P_idle·T)/n. Noise can make it slightly negative; it is reported as computed.
    dynamic_energy_mj_per_inference: float | None
    energy_mj_per_inference_ci95: tuple[float, float] | None
    #: Carries the idle baseline's own uncertainty (delta method, see ``dynamic_interval``).
    dynamic_energy_mj_per_inference_ci95: tuple[float, float] | None
    #: Samples of the sparsest summed rail inside the measured window, and that per second.
    sample_count: int | None
    sample_rate_hz: float | None
    energy_j_total: float | None
    duration_s: float | None
    #: Standard errors and degrees of freedom behind the intervals (for comparisons across runs).
    energy_mj_per_inference_se: float | None = None
    dynamic_energy_mj_per_inference_se: float | None = None
    dynamic_energy_mj_per_inference_df: float | None = None
    idle_power_w_se: float | None = None
    idle_power_w_df: float | None = None
    #: Runner blocks the inferences were measured in (a phone), and the start-up time between them left out (s).
    blocks: int | None = None
    gaps_excluded_s: float | None = None
    #: Why energy_mj_per_inference_ci95 is None although the energy is known (too few samples, too correlated).
    interval_problem: str | None = None
    #: A phone whose gauge samples cannot show their correlation (too few, or correlated beyond them): a t interval
    #: over its runner blocks, whose coverage rests on ``ci_assumes`` (never given as the 95% interval above).
    energy_mj_per_inference_ci: tuple[float, float] | None = None
    ci_assumes: str | None = None
    #: The intervals' reach: power correlated over more than this many seconds (a twentieth of the measured window,
    #: and of the idle span for the dynamic interval) is run-to-run variance, which only repetitions measure.
    interval_reach_s: float | None = None
    dynamic_interval_reach_s: float | None = None
    #: Every rail that produced samples: name, role, part_of, sensor, method, summed, avg_power_w, energy_mj.
    rails: list[dict[str, Any]] = field(default_factory=list)
    #: Why the energy figures are null although there is a power sensor (a rail broken, stopped, gapped).
    problem: str | None = None
    #: Doubts that do not null the figures: too few counter updates, no idle baseline.
    warnings: list[str] = field(default_factory=list)
    #: Why a summed rail sampled at a fixed period may alias with the inference period (or None).
    alias_risk: str | None = None

    @classmethod
    def empty(cls, method: str | None = None, sensor: str | None = None, **known: Any) -> EnergyStats:
        """No energy figures (no power sensor, or no usable window): every number None."""
        values: dict[str, Any] = {f.name: None for f in fields(cls)}
        values.update(rails=[], warnings=[])
        return cls(**{**values, "method": method, "sensor": sensor, **known})

    def to_dict(self) -> dict[str, Any]:
        """The result document's ``energy`` object (DESIGN.md §4) plus the extra figures above."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in (
            "energy_mj_per_inference_ci95",
            "dynamic_energy_mj_per_inference_ci95",
            "energy_mj_per_inference_ci",
        ):
            out[key] = list(out[key]) if out[key] is not None else None
        out["rails"] = [dict(r) for r in self.rails]
        out["warnings"] = list(self.warnings)
        return out


def empty() -> dict[str, Any]:
    """The all-null ``energy`` object for a device without a power sensor."""
    return EnergyStats.empty().to_dict()


def _samples_in(ch: Channel, start_ns: int, end_ns: int) -> int:
    return int(np.count_nonzero((ch.t_ns >= start_ns) & (ch.t_ns <= end_ns)))


def _rail_entry(rail: Rail, spans: np.ndarray, problem: str | None) -> dict[str, Any]:
    """One ``energy.rails[]`` item: the rail's own power and energy over the spans (null when unusable)."""
    entry: dict[str, Any] = {
        "name": rail.name,
        "role": rail.role,
        "part_of": rail.parent or None,
        "sensor": rail.sensor,
        "method": rail.method,
        "summed": rail.summed,
        "avg_power_w": None,
        "energy_mj": None,
        "problem": problem,
    }
    if rail.channel is not None and problem is None:
        energy_j = _spans_j([rail.channel], spans)
        entry["energy_mj"] = energy_j * 1e3
        entry["avg_power_w"] = energy_j / (float(np.sum(spans[:, 1] - spans[:, 0])) / 1e9)
    return entry


def _spans_j(channels: Sequence[Channel], spans: np.ndarray) -> float:
    """Energy in J summed over (start, end) spans."""
    return float(np.sum(total_j(channels, spans[:, 1]) - total_j(channels, spans[:, 0])))


def _idle_power(channels: Sequence[Channel], idle: PhaseSpan) -> tuple[float, float | None, float | None]:
    """Idle power in W over the span, with its standard error and df (or None): the span cut into equal time
    units of UNIT_MIN_SAMPLES samples, their powers a correlated series (a wandering level widens it)."""
    span = (int(idle.start_ns), int(idle.end_ns))
    duration_s = (span[1] - span[0]) / 1e9
    power_w = float(np.diff(total_j(channels, np.array(span, dtype=np.int64)))[0]) / duration_s
    k = min(_samples_in(ch, *span) for ch in channels) // UNIT_MIN_SAMPLES
    if k < MIN_VALUES:
        return power_w, None, None
    edges = np.round(np.linspace(span[0], span[1], k + 1)).astype(np.int64)
    unit_w = np.diff(total_j(channels, edges)) / (np.diff(edges).astype(np.float64) / 1e9)
    precision = mean_precision(unit_w)
    if precision.se is None:
        return power_w, None, None
    return power_w, precision.se, precision.df


def energy_stats(
    series: Sequence[Series],
    measure: PhaseSpan,
    idle: PhaseSpan | None,
    start_ns: np.ndarray,
    end_ns: np.ndarray,
    in_blocks: bool = False,
) -> EnergyStats:
    """Energy of the measured inferences, gross and above idle, with 95% intervals that allow for correlation.

    The window is the measured inferences' span (first start to last end), the same span throughput is
    computed over, so avg_power_w = energy per inference x throughput exactly; with ``in_blocks`` (a runner
    started per block, e.g. a phone) only each block's own span counts, never the runner's start-up between
    blocks (host/analysis/energy_blocks.py). The MEASURE phase span is used only when there are no inference
    windows (then per-inference figures are None). The interval is a ratio over units of consecutive inferences
    whose residuals are a correlated series (energy_blocks), t with that estimate's degrees of freedom; none
    (``interval_problem`` says why) when the sensor gives too few units or the correlation outlasts them. The
    dynamic interval adds the idle power's own standard error, also from a correlated series. idle_power_w and
    the dynamic figures are None without an idle span that the samples cover.
    """
    plan = rail_plan.plan(series)
    if not plan.rails:
        return EnergyStats.empty()
    starts = np.asarray(start_ns, dtype=np.int64)
    ends = np.asarray(end_ns, dtype=np.int64)
    if starts.shape != ends.shape:
        raise ValueError(f"start_ns and end_ns differ in length: {starts.shape} and {ends.shape}")
    n = int(starts.size)
    blocks: list[tuple[int, int]] = []
    if n:
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        blocks = runner_blocks(starts, ends) if in_blocks else [(0, n)]
        spans = block_spans(starts, ends, blocks)
    else:
        spans = np.array([[measure.start_ns, measure.end_ns]], dtype=np.int64)
    window = (int(spans[0, 0]), int(spans[:, 1].max()))
    if window[1] <= window[0]:
        return EnergyStats.empty(plan.method, plan.sensor, problem="the measured window is empty")
    problems = {r.name: rail_plan.coverage_problem(r, *window) for r in plan.rails}
    rails_out = [_rail_entry(r, spans, problems[r.name]) for r in plan.rails]
    failed = [problems[r.name] for r in plan.summed if problems[r.name]]
    if plan.problem or failed:
        why = "; ".join(dict.fromkeys([p for p in [plan.problem, *failed] if p]))
        return EnergyStats.empty(plan.method, plan.sensor, rails=rails_out, problem=why)
    channels = [r.channel for r in plan.summed if r.channel is not None]
    warnings, aliases = _warnings(plan.summed, window, starts)

    duration_s = float(np.sum(spans[:, 1] - spans[:, 0])) / 1e9
    energy_j = _spans_j(channels, spans)
    sample_count = min(sum(_samples_in(ch, int(a), int(b)) for a, b in spans) for ch in channels)

    idle_power_w = idle_se = idle_df = None
    if idle is not None and idle.end_ns > idle.start_ns:
        span = (int(idle.start_ns), int(idle.end_ns))
        idle_rails = [rail_plan.coverage_problem(r, *span) for r in plan.summed]
        if not any(idle_rails):
            idle_power_w, idle_se, idle_df = _idle_power(channels, idle)
        else:
            warnings.append("no idle baseline: " + "; ".join(p for p in idle_rails if p))

    stats = EnergyStats.empty(
        plan.method,
        plan.sensor,
        idle_power_w=idle_power_w,
        idle_power_w_se=idle_se,
        idle_power_w_df=idle_df,
        avg_power_w=energy_j / duration_s,
        sample_count=sample_count,
        sample_rate_hz=sample_count / duration_s,
        energy_j_total=energy_j,
        duration_s=duration_s,
        rails=rails_out,
        warnings=warnings,
        alias_risk="; ".join(aliases) or None,
    )
    if not n:
        return stats
    if in_blocks:
        stats.blocks = len(blocks)
        stats.gaps_excluded_s = (window[1] - window[0]) / 1e9 - duration_s
    stats.energy_mj_per_inference = energy_j / n * 1e3
    stats.interval_reach_s = duration_s / REACH_FRACTION
    if idle is not None and idle_power_w is not None:
        stats.dynamic_interval_reach_s = min(duration_s, (idle.end_ns - idle.start_ns) / 1e9) / REACH_FRACTION
    if idle_power_w is not None:
        stats.dynamic_energy_mj_per_inference = (energy_j - idle_power_w * duration_s) / n * 1e3
    _intervals(stats, channels, starts, ends, blocks, idle_power_w, idle_se, idle_df)
    return stats


def _blocks_interval(
    stats: EnergyStats,
    channels: Sequence[Channel],
    starts: np.ndarray,
    ends: np.ndarray,
    blocks: list[tuple[int, int]],
    why_unchecked: str,
) -> None:
    """A phone's runner blocks, each a separate invocation, as the units of an interval that says what it assumes
    (never the 95% interval): where the power samples cannot show their own correlation. Needs three blocks."""
    if len(blocks) < 3:
        return
    spans = block_spans(starts, ends, blocks)
    block_j = total_j(channels, spans[:, 1]) - total_j(channels, spans[:, 0])
    half = blocks_half_width_j(block_j, np.array([j - i for i, j in blocks], dtype=np.float64)) * 1e3
    mid = stats.energy_mj_per_inference or 0.0
    stats.energy_mj_per_inference_ci = (mid - half, mid + half)
    stats.ci_assumes = f"independent runner blocks ({len(blocks)}; {why_unchecked})"


def _intervals(
    stats: EnergyStats,
    channels: Sequence[Channel],
    starts: np.ndarray,
    ends: np.ndarray,
    blocks: list[tuple[int, int]],
    idle_power_w: float | None,
    idle_se: float | None,
    idle_df: float | None,
) -> None:
    """The gross and dynamic intervals in place, from units of consecutive inferences (energy_blocks)."""
    n = starts.size
    units = min(n, (stats.sample_count or 0) // UNIT_MIN_SAMPLES)
    if units < MIN_VALUES:
        stats.interval_problem = (
            f"{stats.sample_count} power samples make {units} units of {UNIT_MIN_SAMPLES}, fewer than the "
            f"{MIN_VALUES} that show how correlated the power is"
        )
        _blocks_interval(stats, channels, starts, ends, blocks, "too few power samples to check")
        return
    u_start, u_end, u_count = unit_edges(starts, ends, blocks, units)
    unit_j = total_j(channels, u_end) - total_j(channels, u_start)
    gross = ratio_precision(unit_j, u_count)
    if gross.se is None:
        stats.interval_problem = f"the power's correlation outlasts what the window resolves: {gross.reason}"
        _blocks_interval(stats, channels, starts, ends, blocks, "the power's correlation outlasts the samples")
        return
    center = stats.energy_mj_per_inference
    assert center is not None
    se = gross.se * 1e3
    half = t_two_sided(0.95, gross.df) * se
    stats.energy_mj_per_inference_se = se
    stats.energy_mj_per_inference_ci95 = (center - half, center + half)
    dynamic_mj = stats.dynamic_energy_mj_per_inference
    if idle_power_w is None or idle_se is None or idle_df is None or dynamic_mj is None:
        return
    unit_s = (u_end - u_start).astype(np.float64) / 1e9
    dynamic = ratio_precision(unit_j - idle_power_w * unit_s, u_count)
    if dynamic.se is None:
        return
    se_idle_term = float(unit_s.sum()) / n * 1e3 * idle_se
    interval, dyn_se, dyn_df = dynamic_interval(dynamic_mj, dynamic.se * 1e3, dynamic.df, se_idle_term, idle_df)
    stats.dynamic_energy_mj_per_inference_ci95 = interval
    stats.dynamic_energy_mj_per_inference_se = dyn_se
    stats.dynamic_energy_mj_per_inference_df = dyn_df if math.isfinite(dyn_df) else None


def _warnings(summed: Sequence[Rail], window: tuple[int, int], starts: np.ndarray) -> tuple[list[str], list[str]]:
    """Counters that advanced too few times; aliasing risks of regularly sampled power rails."""
    out: list[str] = []
    aliases: list[str] = []
    for rail in summed:
        ch = rail.channel
        assert ch is not None
        if rail.method == "counter":
            update_ns = rail_plan.counter_update_period_ns(ch)
            if update_ns:
                updates = (window[1] - window[0]) / update_ns
                if updates < MIN_COUNTER_UPDATES:
                    out.append(
                        f"rail {rail.label}: its counter advanced about {updates:.0f} times in the window"
                        f" (every {update_ns / 1e6:.0f} ms), fewer than {MIN_COUNTER_UPDATES}"
                    )
        elif starts.size >= 3:
            alias = rail_plan.alias_risk(ch, window, float(np.median(np.diff(starts))))
            if alias:
                aliases.append(alias)
    return out, aliases


def co2e_g(energy_j: float, grid_g_per_kwh: float) -> float:
    """Estimated grams of CO2-equivalent for ``energy_j`` at a grid intensity in g/kWh (see CO2E_LABEL).

    An estimate: it ignores the board's power supply losses and embodied emissions.
    """
    return energy_j / 3.6e6 * grid_g_per_kwh


def peak_bytes(series: Sequence[Series], kind: str = "rss_bytes", span: PhaseSpan | None = None) -> int | None:
    """Largest value of any series of ``kind`` (within ``span`` when given); None when there is none."""
    peak: float | None = None
    for s in series:
        if s.kind != kind:
            continue
        values = in_span(s, span.start_ns, span.end_ns) if span else in_span(s, -(2**62), 2**62)
        if values.size:
            peak = max(peak, float(values.max())) if peak is not None else float(values.max())
    return int(peak) if peak is not None else None


def windows_energy_j(series: Sequence[Series], start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray | None:
    """Energy in J of each [start, end] window over the rails that make the total (the same plan and integration
    as energy_stats); None without a power sensor or when the samples do not cover the windows' span."""
    plan = rail_plan.plan(series)
    starts = np.asarray(start_ns, dtype=np.int64)
    ends = np.asarray(end_ns, dtype=np.int64)
    if not plan.rails or plan.problem or not starts.size:
        return None
    window = (int(starts.min()), int(ends.max()))
    if window[1] <= window[0] or any(rail_plan.coverage_problem(r, *window) for r in plan.summed):
        return None
    channels = [r.channel for r in plan.summed if r.channel is not None]
    if not channels:
        return None
    return np.asarray(total_j(channels, ends) - total_j(channels, starts))
