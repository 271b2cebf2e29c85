"""Trends: one model on one device over time, a point per run, p50 and energy per inference with intervals.

A point is marked as a gate failure when `host compare PREVIOUS RUN --fail-on-regression PCT` would fail
for this device (the same rule and code: host.analysis.compare), so the chart shows where a change regressed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from host.analysis.compare import compare_runs
from host.dashboard.layout import link
from host.dashboard.runs_view import model_name
from host.report.svg import Chart, colour, padded_range
from host.store.sqlite import Store, StoreError

#: Runs whose gate is checked against their predecessor (each check loads two runs' raw arrays).
GATE_CHECKED_RUNS = 200
_GATE_COLOUR = "#b00020"
#: Which gate failures each chart marks: host.analysis.compare's metric names.
_KEYWORD = {"p50": "latency", "energy": "energy"}
_VALID, _INVALID = "valid", '<span class="partial">invalid</span>'
#: Said next to a p50 that is not a per-inference median.
_SOURCE = {"block_means": " (median of block means)"}


@dataclass
class TrendPoint:
    run_id: str
    created_at: dt.datetime
    p50_ms: float | None
    p50_ci_ms: tuple[float, float] | None
    energy_mj: float | None
    energy_ci_mj: tuple[float, float] | None
    valid: bool
    #: Metrics that regressed beyond the gate against the previous run ("" when none or not checked).
    gate_failures: list[str] = field(default_factory=list)
    #: "per_inference", or "block_means" (a phone: p50 is the median of its runner blocks' means).
    latency_source: str = "per_inference"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and all(_number(v) is not None for v in value):
        return float(value[0]), float(value[1])
    return None


def _created(doc: dict[str, Any]) -> dt.datetime:
    try:
        stamp = dt.datetime.fromisoformat(str(doc.get("created_at", "")))
    except ValueError:
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def _entry(doc: dict[str, Any], device: str) -> dict[str, Any] | None:
    return next((d for d in doc.get("devices") or [] if d.get("device") == device and d.get("status") == "ok"), None)


def trend_points(docs: list[dict[str, Any]], model: str, device: str) -> list[TrendPoint]:
    """The runs of `model` (file name) that measured `device` successfully, oldest first."""
    points = []
    for doc in docs:
        entry = _entry(doc, device) if model_name(doc) == model else None
        if entry is None:
            continue
        latency = entry.get("latency_ms") or {}
        energy = entry.get("energy") or {}
        points.append(
            TrendPoint(
                run_id=str(doc.get("run_id", "?")),
                created_at=_created(doc),
                p50_ms=_number(latency.get("p50")),
                p50_ci_ms=_interval(latency.get("p50_ci95")),
                energy_mj=_number(energy.get("energy_mj_per_inference")),
                energy_ci_mj=_interval(energy.get("energy_mj_per_inference_ci95")),
                valid=(entry.get("validity") or {}).get("valid", True) is not False,
                latency_source=str(entry.get("latency_source") or "per_inference"),
            )
        )
    return sorted(points, key=lambda p: (p.created_at, p.run_id))


def mark_gate_failures(store: Store, points: list[TrendPoint], device: str, gate_pct: float) -> None:
    """Compare each of the newest runs with the one before it, as `host compare --fail-on-regression` does."""
    checked = points[-GATE_CHECKED_RUNS - 1 :]
    previous = None
    for point in checked:
        try:
            run = store.load_run(point.run_id)
        except StoreError:  # deleted meanwhile
            previous = None
            continue
        if previous is not None:
            result = compare_runs(previous, run, fail_on_regression_pct=gate_pct)
            point.gate_failures = [c.metric for c in result.regressions if c.device == device]
        previous = run


def _chart(points: list[TrendPoint], which: str, title: str, unit: str, t0: dt.datetime) -> str:
    days = [(p.created_at - t0).total_seconds() / 86400 for p in points]
    values = [p.p50_ms if which == "p50" else p.energy_mj for p in points]
    cis = [p.p50_ci_ms if which == "p50" else p.energy_ci_mj for p in points]
    shown = [(x, v, ci, p) for x, v, ci, p in zip(days, values, cis, points, strict=True) if v is not None]
    if not shown:
        reason = "no energy figures: the board has no power sensor" if which == "energy" else "no latency figures"
        return f'<p class="muted">{escape(reason)}</p>'
    bounds = [v for _, v, ci, _ in shown for v in ((v,) + (ci or ()))]
    x_lo, x_hi = padded_range([x for x, *_ in shown])
    chart = Chart((x_lo, x_hi), padded_range(bounds, from_zero=True), f"days since {t0:%Y-%m-%d}", unit, title)
    stroke, marked = colour(0), False
    chart.line(np.array([x for x, *_ in shown]), np.array([v for _, v, *_ in shown]), stroke, label=title)
    for x, v, ci, p in shown:
        px, py = float(chart.px(x)), float(chart.py(v))
        if ci is not None:
            lo, hi = float(chart.py(ci[0])), float(chart.py(ci[1]))
            chart.parts.append(
                f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{lo:.1f}" y2="{hi:.1f}" stroke="{stroke}" stroke-width="1.4"/>'
                f'<line x1="{px - 4:.1f}" x2="{px + 4:.1f}" y1="{lo:.1f}" y2="{lo:.1f}" stroke="{stroke}"/>'
                f'<line x1="{px - 4:.1f}" x2="{px + 4:.1f}" y1="{hi:.1f}" y2="{hi:.1f}" stroke="{stroke}"/>'
            )
        fill = stroke if p.valid else "#fff"
        label = f"{p.run_id}: {v:.4g} {unit}" + (
            f" · gate failed: {', '.join(p.gate_failures)}" if p.gate_failures else ""
        )
        chart.parts.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5" fill="{fill}" stroke="{stroke}" stroke-width="1.5">'
            f"<title>{escape(label)}</title></circle>"
        )
        if any(_KEYWORD[which] in metric for metric in p.gate_failures):
            marked = True
            chart.parts.append(
                f'<path d="M{px - 8:.1f} {py - 8:.1f} L{px + 8:.1f} {py + 8:.1f} M{px - 8:.1f} {py + 8:.1f} '
                f'L{px + 8:.1f} {py - 8:.1f}" stroke="{_GATE_COLOUR}" stroke-width="2.5"/>'
            )
    if marked:
        chart.legend.append((_GATE_COLOUR, "gate failed vs the previous run"))
    return chart.render()


def render_trend(points: list[TrendPoint], model: str, device: str, gate_pct: float) -> str:
    head = f"<h1>{escape(model)} on {escape(device)}</h1>"
    if not points:
        return head + '<p class="muted">no successful runs of this model on this device in the store.</p>'
    t0 = points[0].created_at
    rows = "".join(
        f'<tr><td><a href="{link("/runs/" + p.run_id)}"><code>{escape(p.run_id)}</code></a></td>'
        f"<td>{p.created_at:%Y-%m-%d %H:%M}</td>"
        f'<td class="num">{_figure(p.p50_ms, p.p50_ci_ms)}{_SOURCE.get(p.latency_source, "")}</td>'
        f'<td class="num">{_figure(p.energy_mj, p.energy_ci_mj)}</td>'
        f"<td>{_VALID if p.valid else _INVALID}</td>"
        f'<td class="gate">{escape(", ".join(p.gate_failures))}</td></tr>'
        for p in reversed(points)
    )
    return (
        head
        + f'<p class="caption">{len(points)} run(s), one point each; bars are 95% intervals; a hollow point is a run'
        f" whose validity checks failed; ✕ marks a run that fails <code>host compare PREVIOUS RUN"
        f" --fail-on-regression {gate_pct:g}</code> on this device.</p>"
        + "<h2>Latency p50</h2>"
        + _chart(points, "p50", "p50 latency", "ms", t0)
        + "<h2>Energy per inference</h2>"
        + _chart(points, "energy", "energy per inference", "mJ", t0)
        + "<h2>Runs</h2><table><tr><th>run</th><th>created (UTC)</th><th>p50 ms [95% CI]</th>"
        "<th>mJ/inference [95% CI]</th><th>validity</th><th>gate failed on</th></tr>" + rows + "</table>"
    )


def _figure(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")


def render_trend_index(docs: list[dict[str, Any]], model_filter: str) -> str:
    """Every model × device pair in the store, with its number of runs and latest p50, each linking to its trend."""
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for doc in docs:
        if model_filter and model_filter.lower() not in model_name(doc).lower():
            continue
        for entry in doc.get("devices") or []:
            if entry.get("status") == "ok":
                pairs.setdefault((model_name(doc), str(entry.get("device", "?"))), []).append(doc)
    rows = []
    for (model, device), runs in sorted(pairs.items()):
        latest = max(runs, key=lambda d: str(d.get("created_at", "")))
        p50 = _number(((_entry(latest, device) or {}).get("latency_ms") or {}).get("p50"))
        rows.append(
            f'<tr><td><a href="{link("/trend", model=model, device=device)}">{escape(model)}</a></td>'
            f'<td>{escape(device)}</td><td class="num">{len(runs)}</td><td class="num">{_figure(p50, None)}</td>'
            f"<td>{escape(str(latest.get('created_at', ''))[:19].replace('T', ' '))}</td></tr>"
        )
    body = (
        "<table><tr><th>model</th><th>device</th><th>runs</th><th>latest p50 ms</th><th>latest run</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else '<p class="muted">no successful runs in the store yet.</p>'
    )
    return "<h1>Trends</h1>" + body
