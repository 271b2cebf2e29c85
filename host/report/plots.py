"""The report's plots, from a run's raw samples: latency distributions, power and memory over time, Pareto."""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from host.analysis.energy import power_over_time_w
from host.report import fields as f
from host.report.svg import PHASE_FILL, Chart, colour, padded_range
from host.store.rundata import DeviceRaw

#: Phases shaded on time plots, in protocol order.
SHADED_PHASES = ("idle", "warmup", "measure")
#: Histogram bins; the range ends at the 99.9th percentile so one outlier does not squash the rest.
HIST_BINS = 60
CDF_POINTS = 400


def no_data(message: str) -> str:
    return f'<div class="nodata">{escape(message)}</div>'


def time_origin_ns(raw: DeviceRaw) -> int:
    """Zero of a device's time axis: the start of its first shaded phase, else its first inference."""
    starts = [p.start_ns for p in raw.phases if p.name in SHADED_PHASES and p.end_ns > p.start_ns]
    if starts:
        return int(min(starts))
    if raw.warmup_start_ns.size:
        return int(raw.warmup_start_ns.min())
    return int(raw.start_ns.min()) if raw.start_ns.size else 0


def _time_range_s(raw: DeviceRaw, t0: int) -> tuple[float, float]:
    ends = [p.end_ns for p in raw.phases if p.name in SHADED_PHASES and p.end_ns > p.start_ns]
    if raw.end_ns.size:
        ends.append(int(raw.end_ns.max()))
    end = max(ends) if ends else t0 + 1
    return (0.0, max((end - t0) / 1e9, 1e-3))


def _shade_phases(chart: Chart, raw: DeviceRaw, t0: int) -> None:
    for span in raw.phases:
        if span.name in SHADED_PHASES and span.end_ns > span.start_ns:
            chart.band((span.start_ns - t0) / 1e9, (span.end_ns - t0) / 1e9, PHASE_FILL[span.name], span.name)


def latency_histogram(raw: DeviceRaw, index: int) -> str:
    lat_ms = raw.latency_ns.astype(np.float64) / 1e6
    if lat_ms.size == 0:
        return no_data("no measured inferences")
    hi = float(np.percentile(lat_ms, 99.9)) if lat_ms.size > 100 else float(lat_ms.max())
    lo = float(lat_ms.min())
    if hi <= lo:
        hi = lo + max(lo * 0.01, 1e-3)
    counts, edges = np.histogram(lat_ms, bins=HIST_BINS, range=(lo, hi))
    beyond = int(np.count_nonzero(lat_ms > hi))
    title = f"latency distribution, {raw.device}"
    chart = Chart((lo, hi), (0, float(counts.max()) * 1.1 or 1), "latency ms", "inferences", title)
    chart.bars(edges, counts.astype(np.float64), colour(index))
    p50, p99 = np.percentile(lat_ms, [50, 99])
    chart.vline(float(p50), "#333", f"p50 {f.num(p50)}")
    if p99 <= hi:
        chart.vline(float(p99), "#333", f"p99 {f.num(p99)}")
    note = f'<p class="caption">{beyond} slower inference(s) beyond {f.num(hi)} ms not drawn.</p>' if beyond else ""
    return chart.render() + note


def latency_cdf(raws: list[tuple[int, DeviceRaw]]) -> str:
    """All devices' latency CDFs on one chart (log latency axis when they span over 20x)."""
    curves = []
    for index, raw in raws:
        lat = np.sort(raw.latency_ns.astype(np.float64) / 1e6)
        if lat.size:
            q = np.linspace(0, 1, min(CDF_POINTS, lat.size))
            curves.append((index, raw.device, np.quantile(lat, q), q * 100))
    if not curves:
        return no_data("no latency samples stored for this run")
    lo = min(float(c[2][0]) for c in curves)
    hi = max(float(c[2][-1]) for c in curves)
    log_x = lo > 0 and hi / lo > 20
    x_range = (lo, hi) if log_x else padded_range([lo, hi])
    chart = Chart(
        x_range,
        (0, 100),
        "latency ms" + (" (log scale)" if log_x else ""),
        "% of inferences ≤",
        "latency CDF, all devices",
        log_x=log_x,
    )
    for index, name, x, y in curves:
        chart.line(x, y, colour(index), name)
    return chart.render()


def power_over_time(raw: DeviceRaw, index: int, has_sensor: bool) -> str:
    """Total power with idle/warmup/measure shaded and the inference windows as a strip below."""
    t0 = time_origin_ns(raw)
    t_ns, watts = power_over_time_w(raw.series) if has_sensor else (np.zeros(0), np.zeros(0))
    x_range = _time_range_s(raw, t0)
    y_range = padded_range(watts, from_zero=True) if watts.size else (0.0, 1.0)
    chart = Chart(x_range, y_range, "time s (board monotonic clock)", "power W", f"power over time, {raw.device}")
    _shade_phases(chart, raw, t0)
    if raw.warmup_start_ns.size:
        chart.strip((raw.warmup_start_ns - t0) / 1e9, (raw.warmup_end_ns - t0) / 1e9, "#b07000", "warmup inferences")
    if raw.start_ns.size:
        chart.strip((raw.start_ns - t0) / 1e9, (raw.end_ns - t0) / 1e9, "#333333", "measured inferences")
    if watts.size:
        chart.line((t_ns - t0) / 1e9, watts, colour(index), "power W")
    svg = chart.render()
    if not watts.size:
        svg = svg.replace(
            "</svg>", f'<text x="50%" y="45%" text-anchor="middle" class="nosensor">{f.NO_SENSOR}</text></svg>'
        )
    return svg


def memory_over_time(raw: DeviceRaw, index: int) -> str:
    memory = [s for s in raw.series if s.kind in ("rss_bytes", "gpu_mem_bytes") and s.t_ns.size]
    if not memory:
        return no_data("no memory samples")
    t0 = time_origin_ns(raw)
    values_mb = [s.value / 1024**2 for s in memory]
    chart = Chart(
        _time_range_s(raw, t0),
        padded_range(np.concatenate(values_mb), from_zero=True),
        "time s (board monotonic clock)",
        "memory MB",
        f"memory over time, {raw.device}",
    )
    _shade_phases(chart, raw, t0)
    for k, (s, mb) in enumerate(zip(memory, values_mb, strict=True)):
        label = f"{s.name} ({'RSS' if s.kind == 'rss_bytes' else 'GPU'})"
        chart.line((s.t_ns - t0) / 1e9, mb, colour(index) if k == 0 else colour(index + 5), label, step=True)
    return chart.render()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency and energy (lower is better)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def energy_vs_latency(devices: list[dict[str, Any]]) -> str:
    """p50 latency against gross mJ/inference per device, the Pareto front joined and ringed."""
    measured = [(i, d) for i, d in enumerate(devices) if f.has_energy(d) and f.get(d, "latency_ms", "p50") is not None]
    if not measured:
        return no_data(f"energy vs latency: {f.NO_SENSOR} on any device, nothing to plot")
    points = [(float(d["latency_ms"]["p50"]), float(d["energy"]["energy_mj_per_inference"])) for _, d in measured]
    front = pareto_front(points)
    lo_x, hi_x = padded_range([p[0] for p in points], from_zero=True)
    chart = Chart(
        (lo_x, hi_x + (hi_x - lo_x) * 0.2),
        padded_range([p[1] for p in points], from_zero=True),
        "latency p50 ms",
        "energy mJ / inference",
        "energy vs latency, all devices",
    )
    ordered = sorted(front, key=lambda i: points[i][0])
    if len(ordered) > 1:
        chart.line(
            np.array([points[i][0] for i in ordered]),
            np.array([points[i][1] for i in ordered]),
            "#999999",
            "Pareto front",
            step=True,
        )
    for k, (index, d) in enumerate(measured):
        chart.point(points[k][0], points[k][1], colour(index), d["device"], ring=k in front)
    missing = [d.get("device", "?") for d in devices if not f.has_energy(d)]
    note = (
        f'<p class="caption">Not plotted ({f.NO_SENSOR} or no result): {escape(", ".join(missing))}.</p>'
        if missing
        else ""
    )
    return chart.render() + note
