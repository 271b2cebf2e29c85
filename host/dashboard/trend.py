"""Trends: one model on one device over time, a point per run, p50 and energy per inference with intervals.

Runs of one model file that ran differently (float, dynamic or static int8, fed an `--inputs` file, another
thread count or compile recipe: host/analysis/variant.py) are separate lines, never one. A point is marked as a
gate failure when `host compare PREVIOUS RUN --fail-on-regression PCT` would fail for this device, PREVIOUS being
the run before it of the same variant (the same rule and code: host.analysis.compare).

A generative model's runs (GenAI directories, GGUF files) are points of what their results lead with: time to
first token (p50, with its interval) and energy per generated token, both of the first prompt length.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from host.analysis.compare import compare_runs
from host.analysis.variant import variant_key
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
    #: What ran (settings label, compile recipe): one trend line per variant.
    variant: tuple[str, str] = ("as given", "")
    #: Metrics that regressed beyond the gate against the previous run ("" when none or not checked).
    gate_failures: list[str] = field(default_factory=list)
    #: The prompt length whose TTFT and energy per generated token the point shows (a generative run), else None.
    prompt_len: int | None = None
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
        point = TrendPoint(
            run_id=str(doc.get("run_id", "?")),
            created_at=_created(doc),
            p50_ms=_number(latency.get("p50")),
            p50_ci_ms=_interval(latency.get("p50_ci95")),
            energy_mj=_number(energy.get("energy_mj_per_inference")),
            energy_ci_mj=_interval(energy.get("energy_mj_per_inference_ci95")),
            valid=(entry.get("validity") or {}).get("valid", True) is not False,
            variant=variant_key(doc, entry),
            latency_source=str(entry.get("latency_source") or "per_inference"),
        )
        rows = entry.get("generation")
        first = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
        if first is not None:
            found = first.get("ttft_ms")
            ttft: dict[str, Any] = found if isinstance(found, dict) else {}
            point.p50_ms, point.p50_ci_ms = _number(ttft.get("p50")), _interval(ttft.get("p50_ci95"))
            point.energy_mj, point.energy_ci_mj = _number(first.get("energy_mj_per_generated_token")), None
            length = _number(first.get("prompt_len"))
            point.prompt_len = int(length) if length is not None else 0
        points.append(point)
    return sorted(points, key=lambda p: (p.created_at, p.run_id))


def mark_gate_failures(store: Store, points: list[TrendPoint], device: str, gate_pct: float) -> None:
    """Compare each of the newest runs with the one before it of the same variant, as `host compare
    --fail-on-regression` does."""
    checked = points[-GATE_CHECKED_RUNS - 1 :]
    previous: dict[tuple[str, str], Any] = {}
    for point in checked:
        try:
            run = store.load_run(point.run_id)
        except StoreError:  # deleted meanwhile
            previous.pop(point.variant, None)
            continue
        if point.variant in previous:
            result = compare_runs(previous[point.variant], run, fail_on_regression_pct=gate_pct)
            point.gate_failures = [c.metric for c in result.regressions if c.device == device]
        previous[point.variant] = run


def variant_names(points: list[TrendPoint]) -> dict[tuple[str, str], str]:
    """A legend name per variant: its settings label, with the compile recipe where two labels coincide."""
    labels = [v[0] for v in dict.fromkeys(p.variant for p in points)]
    return {
        v: v[0] if labels.count(v[0]) == 1 else f"{v[0]} ({v[1] or 'as uploaded'})"
        for v in dict.fromkeys(p.variant for p in points)
    }


#: Time-axis steps, seconds: the first that leaves at most _MAX_TICKS ticks is used.
_TIME_STEPS_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400)
_MAX_TICKS = 7


def time_ticks(lo_s: float, hi_s: float) -> list[tuple[float, str]]:
    """Ticks for a time axis in UTC epoch seconds: round minutes, hours or days, labelled as such.

    A label carries the date where the day changes (and on the first tick), the time of day only within a day:
    `12-07 06:40`, `07:00`, ... or `2026-03-01`, `2026-03-08`, ... for weeks.
    """
    span = max(hi_s - lo_s, 1.0)
    step = next((s for s in _TIME_STEPS_S if span / s <= _MAX_TICKS), 365 * 86400)
    first = math.ceil(lo_s / step) * step
    ticks: list[tuple[float, str]] = []
    last_day = ""
    t = first
    while t <= hi_s:
        when = dt.datetime.fromtimestamp(t, dt.timezone.utc)
        day = f"{when:%m-%d}"
        within_day = f"{day} {when:%H:%M}" if day != last_day else f"{when:%H:%M}"
        ticks.append((t, f"{when:%Y-%m-%d}" if step >= 86400 else within_day))
        last_day = day
        t += step
    return ticks


def _chart(points: list[TrendPoint], which: str, title: str, unit: str, keyword: str = "") -> str:
    times = [p.created_at.timestamp() for p in points]
    values = [p.p50_ms if which == "p50" else p.energy_mj for p in points]
    cis = [p.p50_ci_ms if which == "p50" else p.energy_ci_mj for p in points]
    shown = [(x, v, ci, p) for x, v, ci, p in zip(times, values, cis, points, strict=True) if v is not None]
    if not shown:
        reason = "no energy figures: the board has no power sensor" if which == "energy" else "no latency figures"
        return f'<p class="muted">{escape(reason)}</p>'
    bounds = [v for _, v, ci, _ in shown for v in ((v,) + (ci or ()))]
    lo_s, hi_s = min(x for x, *_ in shown), max(x for x, *_ in shown)
    pad_s = max((hi_s - lo_s) * 0.05, 600.0)  # one run alone still gets an axis of ten minutes a side
    x_lo, x_hi = lo_s - pad_s, hi_s + pad_s
    chart = Chart(
        (x_lo, x_hi), padded_range(bounds, from_zero=True), "time of the run (UTC)", unit, title,
        x_ticks=time_ticks(x_lo, x_hi),
    )  # fmt: skip
    names = variant_names(points)
    marked = False
    for index, variant in enumerate(names):
        stroke = colour(index)
        mine = [(x, v, ci, p) for x, v, ci, p in shown if p.variant == variant]
        if not mine:
            continue
        # Unlabelled: the variants' legend is HTML above the charts, where long labels wrap instead of clipping.
        chart.line(np.array([x for x, *_ in mine]), np.array([v for _, v, *_ in mine]), stroke)
        for x, v, ci, p in mine:
            marked = _point(chart, keyword or _KEYWORD[which], unit, stroke, x, v, ci, p) or marked
    if marked:
        chart.legend.append((_GATE_COLOUR, "gate failed vs the previous run"))
    return chart.render()


def _point(
    chart: Chart,
    keyword: str,
    unit: str,
    stroke: str,
    x: float,
    v: float,
    ci: tuple[float, float] | None,
    p: TrendPoint,
) -> bool:
    """One run's point with its interval bar (hollow when not valid); True when it carries a gate-failure mark."""
    px, py = float(chart.px(x)), float(chart.py(v))
    if ci is not None:
        lo, hi = float(chart.py(ci[0])), float(chart.py(ci[1]))
        chart.parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{lo:.1f}" y2="{hi:.1f}" stroke="{stroke}" stroke-width="1.4"/>'
            f'<line x1="{px - 4:.1f}" x2="{px + 4:.1f}" y1="{lo:.1f}" y2="{lo:.1f}" stroke="{stroke}"/>'
            f'<line x1="{px - 4:.1f}" x2="{px + 4:.1f}" y1="{hi:.1f}" y2="{hi:.1f}" stroke="{stroke}"/>'
        )
    fill = stroke if p.valid else "#fff"
    label = f"{p.run_id} ({p.variant[0]}): {v:.4g} {unit}" + (
        f" · gate failed: {', '.join(p.gate_failures)}" if p.gate_failures else ""
    )
    chart.parts.append(
        f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5" fill="{fill}" stroke="{stroke}" stroke-width="1.5">'
        f"<title>{escape(label)}</title></circle>"
    )
    if not any(keyword in metric for metric in p.gate_failures):
        return False
    chart.parts.append(
        f'<path d="M{px - 8:.1f} {py - 8:.1f} L{px + 8:.1f} {py + 8:.1f} M{px - 8:.1f} {py + 8:.1f} '
        f'L{px + 8:.1f} {py - 8:.1f}" stroke="{_GATE_COLOUR}" stroke-width="2.5"/>'
    )
    return True


def render_trend(points: list[TrendPoint], model: str, device: str, gate_pct: float) -> str:
    head = f"<h1>{escape(model)} on {escape(device)}</h1>"
    if not points:
        return head + '<p class="muted">no successful runs of this model on this device in the store.</p>'
    generative = next((p.prompt_len for p in points if p.prompt_len is not None), None)
    if generative is not None:  # a generative model: what its results lead with (module docstring)
        first_chart = _chart(points, "p50", f"TTFT p50, prompt {generative}", "ms", keyword="TTFT p50")
        second_chart = _chart(points, "energy", "energy per generated token", "mJ")
        titles = (f"Time to first token p50, prompt {generative} tokens", "Energy per generated token")
        columns = ("TTFT p50 ms [95% CI]", "mJ/generated token")
    else:
        first_chart = _chart(points, "p50", "p50 latency", "ms")
        second_chart = _chart(points, "energy", "energy per inference", "mJ")
        titles = ("Latency p50", "Energy per inference")
        columns = ("p50 ms [95% CI]", "mJ/inference [95% CI]")
    names = variant_names(points)
    rows = "".join(
        f'<tr><td><a href="{link("/runs/" + p.run_id)}"><code>{escape(p.run_id)}</code></a></td>'
        f"<td>{p.created_at:%Y-%m-%d %H:%M}</td><td>{escape(names[p.variant])}</td>"
        f'<td class="num">{_figure(p.p50_ms, p.p50_ci_ms)}{_SOURCE.get(p.latency_source, "")}</td>'
        f'<td class="num">{_figure(p.energy_mj, p.energy_ci_mj)}</td>'
        f"<td>{_VALID if p.valid else _INVALID}</td>"
        f'<td class="gate">{escape(", ".join(p.gate_failures))}</td></tr>'
        for p in reversed(points)
    )
    return (
        head + f'<p class="caption">{len(points)} run(s), one point each, one line per variant ({len(names)}: what ran,'
        f" quantization, calibration, inputs, threads, runtime, recipe); bars are 95% intervals; a hollow point is a"
        f" run whose validity checks failed; ✕ marks a run that fails <code>host compare PREVIOUS RUN"
        f" --fail-on-regression {gate_pct:g}</code> on this device, PREVIOUS being the variant's run before.</p>"
        + _legend(names)
        + f"<h2>{escape(titles[0])}</h2>"
        + first_chart
        + f"<h2>{escape(titles[1])}</h2>"
        + second_chart
        + f"<h2>Runs</h2><table><tr><th>run</th><th>created (UTC)</th><th>variant</th><th>{escape(columns[0])}</th>"
        f"<th>{escape(columns[1])}</th><th>validity</th><th>gate failed on</th></tr>" + rows + "</table>"
    )


def _legend(names: dict[tuple[str, str], str]) -> str:
    swatch = "display:inline-block;width:11px;height:11px;border-radius:2px;margin:0 5px 0 14px;background:"
    items = "".join(
        f'<span class="variant"><span style="{swatch}{colour(i)}"></span>{escape(name)}</span> '
        for i, name in enumerate(names.values())
    )
    return f'<p class="legend">lines: {items}</p>'


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
