"""The run as one self-contained HTML page: inline CSS and SVG only, no script, no fetch; printable."""

from __future__ import annotations

import json
from html import escape
from pathlib import PurePath
from typing import Any

from host.report import fields as f
from host.report import plots
from host.report.generation import generation_html
from host.report.repetitions import repetitions_html
from host.report.svg import colour
from host.store.rundata import DeviceRaw, RunData

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a;
       margin: 0 auto; max-width: 1280px; padding: 24px 32px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 2px solid #e3e3e3;
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 16px 0 6px; }
.sub { color: #555; margin: 0 0 12px; }
code { font-size: 12.5px; background: #f3f3f3; padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e6e6e6; text-align: right; white-space: nowrap; }
th { background: #f5f7fa; font-weight: 600; vertical-align: bottom; white-space: normal; }
th:first-child, td:first-child, td.text { text-align: left; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.err, .invalid { color: #b00020; } .muted, .nosensor-cell { color: #777; font-style: italic; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 16px 28px; }
.device { border: 1px solid #e3e3e3; border-radius: 6px; padding: 8px 18px 14px; margin: 18px 0; }
.chart { width: 100%; height: auto; display: block; }
.chart text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: #333; }
.chart .axis { font-size: 12px; fill: #111; } .chart .band { fill: #555; font-size: 10px; }
.chart .frame { fill: none; stroke: #bbb; } .chart .grid { stroke: #ececec; }
.chart .nosensor { font-size: 16px; fill: #777; font-style: italic; }
.nodata { border: 1px dashed #bbb; color: #777; padding: 24px; text-align: center; font-style: italic; }
.scroll { overflow-x: auto; }
td.text { white-space: normal; }
.caption { color: #666; font-size: 12px; margin: 2px 0 0; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 6px 0; font-size: 13px; }
dl.meta dt { color: #555; } dl.meta dd { margin: 0; word-break: break-word; }
.how li { margin: 3px 0; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  .scroll { overflow: visible; } table { font-size: 9px; } th, td { padding: 3px 4px; }
  .device, .plots { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; }
  @page { size: A4 landscape; margin: 12mm; }
}
"""

_SUMMARY_HEAD = (
    "device",
    "status",
    "validity",
    "runtime / provider",
    "n",
    "p50 ms [95% CI]",
    "p90 ms",
    "p99 ms",
    "inf/s",
    "mJ/inf [95% CI]",
    "dynamic mJ/inf [95% CI]",
    "avg W",
    "idle W",
    "peak MB",
    "max °C",
    "throttled",
)


def _td(text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{escape(text)}</td>' if cls else f"<td>{escape(text)}</td>"


def _energy_td(entry: dict[str, Any], key: str) -> str:
    text = f.energy_text(entry, key)
    return _td(text, "nosensor-cell" if not f.has_energy(entry) else "")


def _summary_table(devices: list[dict[str, Any]], grid: float | None) -> str:
    head = list(_SUMMARY_HEAD) + (["g CO2e / 1M inf (estimate)"] if grid is not None else [])
    rows = []
    for i, d in enumerate(devices):
        lat = d.get("latency_ms") or {}
        provider = (d.get("execution_provider") or "").removesuffix("ExecutionProvider")
        status = d.get("status") or "–"
        cells = [
            f'<td><span class="swatch" style="background:{colour(i)}"></span>{escape(str(d.get("device", "?")))}</td>',
            _td(status, "text" if status == "ok" else "text err"),
            _td(f.validity_text(d), "text invalid" if f.validity_text(d) == "not valid" else "text"),
            _td(" / ".join(p for p in (d.get("runtime") or "", provider) if p) or "–", "text"),
            _td(f.n_text(d)),
            _td(f.with_interval(lat.get("p50"), lat.get("p50_ci95"))),
            _td(f.num(lat.get("p90"))),
            _td(f.num(lat.get("p99"))),
            _td(f.num(d.get("throughput_ips"))),
            _energy_td(d, "energy_mj_per_inference"),
            _energy_td(d, "dynamic_energy_mj_per_inference") if f.has_energy(d) else _td("–"),
            _td(f.num(f.get(d, "energy", "avg_power_w"))),
            _td(f.num(f.get(d, "energy", "idle_power_w"))),
            _td(f.num(d.get("peak_rss_mb"))),
            _td(f.num(f.get(d, "thermal", "max_temp_c"))),
            _td(f.num(f.get(d, "thermal", "throttled"))),
        ]
        if grid is not None:
            cells.append(_td(f.num(f.co2e_g_per_1m_inferences(d, grid), 3)))
        rows.append("<tr>" + "".join(cells) + "</tr>")
        if status != "ok" and d.get("error"):
            rows.append(
                f'<tr><td></td><td class="text err" colspan="{len(head) - 1}">{escape(str(d["error"]))}</td></tr>'
            )
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f'<div class="scroll"><table><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _metadata(d: dict[str, Any]) -> str:
    board = d.get("board") or {}
    energy = d.get("energy") or {}
    recipe = d.get("recipe")
    steps = ", ".join(str(s) if not isinstance(s, dict) else json.dumps(s) for s in (recipe or {}).get("steps", []))
    runtimes = ", ".join(f"{k} {v}" for k, v in (board.get("runtimes") or {}).items())
    sensors = ", ".join(
        f"{s.get('sensor')}:{s.get('name')} ({s.get('kind')}, {s.get('role') or '-'})"
        for s in board.get("sensors") or []
    )
    rate = d.get("sample_rate_hz")
    effective = energy.get("sample_rate_hz")
    items = [
        ("board", f.board_text(d)),
        ("CPU cores / RAM", f"{board.get('cpu_cores', '–')} / {f.num(board.get('ram_mb'), 5)} MB" if board else "–"),
        ("OS / kernel", " / ".join(x for x in (board.get("os"), board.get("kernel")) if x) or "–"),
        ("device profile", d.get("profile") or "–"),
        ("runtime", d.get("runtime") or "–"),
        ("execution providers", ", ".join(d.get("execution_providers") or []) or d.get("execution_provider") or "–"),
        ("runtimes on the board", runtimes or "–"),
        ("intra-op threads", "runtime default" if not d.get("threads") else str(d.get("threads"))),
        ("recipe", f"{(recipe or {}).get('target_format', '–')}" + (f": {steps}" if steps else " (as uploaded)")),
        (
            "inputs",
            ", ".join(f"{i.get('name')} {i.get('dtype')} {i.get('shape')}" for i in d.get("inputs") or [])
            + (f" ({d.get('inputs_source')})" if d.get("inputs_source") else "")
            or "–",
        ),
        ("sensors", sensors or f.NO_SENSOR),
        (
            "sampling rate",
            (f"{f.num(rate)} Hz requested" if rate else "–")
            + (f", {f.num(effective)} Hz effective on the energy channel" if effective else ""),
        ),
        ("energy method", f"{energy.get('method')} ({energy.get('sensor')})" if energy.get("method") else f.NO_SENSOR),
        (
            "warmup / measured",
            f"{d.get('n_warmup', '–')} / {d.get('n_inferences', '–')} inferences"
            + (f" over {f.num(d.get('duration_s'))} s" if d.get("duration_s") else ""),
        ),
        (
            "throttling",
            (f.get(d, "thermal", "throttle_reason") or "none seen")
            if f.get(d, "thermal", "throttled") is not None
            else "not monitored",
        ),
        ("agent", " · ".join(str(x) for x in (board.get("agent_version"), d.get("address")) if x) or "–"),
        ("validity", _validity(d)),
    ]
    return '<dl class="meta">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in items) + "</dl>"


def _op_profile(d: dict[str, Any]) -> str:
    """Per-operator time (ONNX Runtime's profiler, `--op-profile`): by op type and the slowest nodes."""
    ops = d.get("op_profile") or {}
    if not ops.get("by_type"):
        return ""
    total_us = sum(row["total_us"] for row in ops["by_type"]) or 1.0

    def rows(items: list[dict[str, Any]], name_key: str | None) -> str:
        # By type, the type is the row's name; by node, the node's name comes first and its type beside it.
        return "".join(
            "<tr>"
            + (f"<td>{escape(str(r.get(name_key) or '–'))}</td>" if name_key else "")
            + f"<td>{escape(r['op_type'])}</td>"
            f"<td class=num>{r['total_us'] / 1e3:.2f}</td><td class=num>{100 * r['total_us'] / total_us:.1f}%</td>"
            f"<td class=num>{r['calls']}</td></tr>"
            for r in items[:12]
        )

    head = "<tr>{}<th>op type</th><th>total ms</th><th>share</th><th>calls</th></tr>"
    return (
        '<div class="ops"><h4>Time by operator type</h4><table>'
        + head.format("")
        + rows(ops["by_type"], None)
        + "</table><h4>Slowest nodes</h4><table>"
        + head.format("<th>node</th>")
        + rows(ops.get("top_nodes") or [], "node")
        + "</table></div>"
    )


def _validity(d: dict[str, Any]) -> str:
    v = d.get("validity")
    if not v:
        return "–"
    text = "valid" if v.get("valid") else "NOT VALID: " + "; ".join(v.get("reasons") or [])
    return text + ("" if not v.get("warnings") else " (" + "; ".join(v["warnings"]) + ")")


def _device_section(index: int, d: dict[str, Any], raw: DeviceRaw | None) -> str:
    name = escape(str(d.get("device", "?")))
    head = f'<h3><span class="swatch" style="background:{colour(index)}"></span>{name}</h3>'
    if raw is None or (raw.start_ns.size == 0 and not raw.series):
        why = d.get("error") or "no raw samples stored (report built from a result document)"
        body = f"{_metadata(d)}{plots.no_data(str(why))}{generation_html(d, None, index)}"
        return f'<section class="device">{head}{body}</section>'
    return (
        f'<section class="device">{head}<div class="grid2"><div>{_metadata(d)}</div>'
        f"<div>{plots.latency_histogram(raw, index)}</div>"
        f"<div>{plots.power_over_time(raw, index, f.get(d, 'energy', 'method') is not None)}</div>"
        f"<div>{plots.memory_over_time(raw, index)}</div></div>{generation_html(d, raw, index)}"
        f"{repetitions_html(d)}{_op_profile(d)}</section>"
    )


_HOW = """
<ol class="how">
<li><b>Prepare</b>: the model is uploaded to each agent (content-addressed by sha256) and loaded by a separate
worker process, so a crashing runtime cannot take the agent down and the worker's own memory can be measured.</li>
<li><b>Idle baseline</b>: power is sampled with nothing running; that average is the idle W subtracted for the
dynamic (above-idle) energy. Skipped on boards without a power sensor.</li>
<li><b>Warmup</b>: inferences that are not counted, until latency is stable.</li>
<li><b>Measure</b>: at least the requested number of inferences <i>and</i> the minimum duration (MLPerf-style).
Every inference is timestamped with CLOCK_MONOTONIC on the board, the clock the power, memory and
temperature samplers share, so samples and inference windows line up without clock translation.</li>
<li><b>Repetitions</b> (<code>--repeat K</code>, <code>host ab</code>): the whole protocol runs K times in one job,
each time in a fresh worker that loads the model again, so what varies from process to process (start, memory
layout, load) is sampled; the figures are pooled over the repetitions and their intervals come from the spread
between repetitions, the unit of evidence for comparisons.</li>
<li><b>Statistics</b> on the host from the raw samples: percentiles, a distribution-free 95% interval for p50,
throughput over the measured span; energy from a hardware energy counter where the board has one, else the
trapezoid integral of power samples, with a batch-means 95% interval over blocks of inferences.</li>
</ol>
"""


def _subtitle(doc: dict[str, Any], model: dict[str, Any], n_devices: int, setting_text: str) -> str:
    """Run, date, model hash, device count and settings: what the document records, nothing for what it does not."""
    parts = [f"run <code>{escape(str(doc.get('run_id') or '?'))}</code>"]
    if doc.get("created_at"):
        parts.append(escape(str(doc["created_at"])))
    if model.get("sha256"):
        parts.append(f"model sha256 <code>{escape(str(model['sha256'])[:16])}</code>")
    parts.append(f"{n_devices} device(s)")
    if setting_text:
        parts.append(escape(setting_text))
    return " · ".join(parts)


def render_html(run: RunData, grid_g_per_kwh: float | None = None) -> str:
    doc = run.document
    model = doc.get("model") or {}
    devices = list(doc.get("devices") or [])
    raws = [(i, run.raw[d["device"]]) for i, d in enumerate(devices) if d.get("device") in run.raw]
    settings = doc.get("settings") or {}
    title = f"edgeprof · {PurePath(str(model.get('path', '?'))).name} · {doc.get('run_id', '?')}"
    setting_text = ", ".join(
        f"{k} {v}" for k, v in settings.items() if k in ("runs", "warmup", "min_duration_s", "idle_s", "threads")
    )
    co2 = (
        f'<p class="caption">g CO2e per million inferences is an estimate: gross energy × grid carbon intensity '
        f"{f.num(grid_g_per_kwh, 3)} g/kWh; it leaves out power-supply losses and embodied emissions.</p>"
        if grid_g_per_kwh is not None
        else ""
    )
    body = [
        f"<h1>{escape(PurePath(str(model.get('path', '?'))).name)}</h1>",
        f'<p class="sub">{_subtitle(doc, model, len(devices), setting_text)}</p>',
        "<h2>Summary</h2>",
        _summary_table(devices, grid_g_per_kwh),
        co2,
        '<p class="caption">Intervals are 95%. Dynamic energy is energy above the idle baseline. '
        f"“{f.NO_SENSOR}”: the board has no power sensor the agent can read, so no energy figures exist.</p>",
        '<h2>Across devices</h2><div class="grid2 plots">',
        f"<div>{plots.latency_cdf(raws)}</div><div>{plots.energy_vs_latency(devices)}</div></div>",
        "<h2>Per device</h2>",
        *(_device_section(i, d, run.raw.get(d.get("device", ""))) for i, d in enumerate(devices)),
        "<h2>How this was measured</h2>",
        _HOW,
        f'<p class="caption">edgeprof {escape(str(doc.get("host_version", "")))} · this page is self-contained '
        "(no scripts, no network).</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
