"""The run as Markdown for a pull-request comment: one summary table and the key differences."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from host.analysis.accelerator import device_lines
from host.report import fields as f
from host.report.escape import markdown_code, markdown_html_text, markdown_text
from host.report.generation import generation_markdown
from host.report.repetitions import repetitions_markdown
from host.store.rundata import RunData

SUMMARY_HEADER = (
    "device",
    "status",
    "runtime / provider",
    "n",
    "p50 ms [95% CI]",
    "p90 ms",
    "p99 ms",
    "inf/s",
    "mJ/inf [95% CI]",
    "dynamic mJ/inf",
    "avg W",
    "idle W",
    "peak MB",
    "max °C",
    "throttled",
    "validity",
)


def _row(entry: dict[str, Any]) -> list[str]:
    lat = entry.get("latency_ms") or {}
    provider = (entry.get("execution_provider") or "").removesuffix("ExecutionProvider")
    runtime = " / ".join(p for p in (entry.get("runtime") or "", provider) if p) or "–"
    return [  # text from the agent is escaped; the numbers are ours (digits, '.', '–', brackets)
        markdown_text(entry.get("device", "?")),
        markdown_text(entry.get("status") or "–"),
        markdown_text(runtime),
        f.n_text(entry),
        f.with_interval(lat.get("p50"), lat.get("p50_ci95")),
        f.num(lat.get("p90")),
        f.num(lat.get("p99")),
        f.num(entry.get("throughput_ips")),
        f.energy_text(entry, "energy_mj_per_inference"),
        f.energy_text(entry, "dynamic_energy_mj_per_inference") if f.has_energy(entry) else "–",
        f.num(f.get(entry, "energy", "avg_power_w")),
        f.num(f.get(entry, "energy", "idle_power_w")),
        f.num(entry.get("peak_rss_mb")),
        f.num(f.get(entry, "thermal", "max_temp_c")),
        f.num(f.get(entry, "thermal", "throttled")),
        f.validity_text(entry),
    ]


def _key_figures(devices: list[dict[str, Any]], grid_g_per_kwh: float | None) -> list[str]:
    ok = [d for d in devices if d.get("status") == "ok" and f.get(d, "latency_ms", "p50") is not None]
    lines: list[str] = []
    if ok:
        fastest = min(ok, key=lambda d: d["latency_ms"]["p50"])
        lines.append(f"- Fastest p50: **{markdown_text(fastest['device'])}** {f.num(fastest['latency_ms']['p50'])} ms")
        for d in ok:
            if d is not fastest:
                ratio = d["latency_ms"]["p50"] / fastest["latency_ms"]["p50"]
                vs = markdown_text(fastest["device"])
                lines.append(f"  - {markdown_text(d['device'])}: {(ratio - 1) * 100:+.1f}% p50 vs {vs}")
    powered = [d for d in ok if f.has_energy(d)]
    if powered:
        frugal = min(powered, key=lambda d: d["energy"]["energy_mj_per_inference"])
        lines.append(
            f"- Lowest energy: **{markdown_text(frugal['device'])}**"
            f" {f.num(frugal['energy']['energy_mj_per_inference'])} mJ/inference"
        )
        if grid_g_per_kwh is not None:
            for d in powered:
                g = f.co2e_g_per_1m_inferences(d, grid_g_per_kwh)
                lines.append(
                    f"- {markdown_text(d['device'])}: ~{f.num(g, 3)} g CO2e per million inferences "
                    f"(estimate at {f.num(grid_g_per_kwh, 3)} g/kWh)"
                )
    unpowered = [
        f"{markdown_text(d['device'])} ({markdown_text(f.no_energy_text(d))})" for d in ok if not f.has_energy(d)
    ]
    if unpowered:
        lines.append(f"- Energy not measured: {', '.join(unpowered)}")
    for d in devices:
        if d.get("status") != "ok":
            lines.append(f"- ❌ {markdown_text(d.get('device'))}: {markdown_text(d.get('error') or 'failed')}")
    return lines


def render_markdown(run: RunData, grid_g_per_kwh: float | None = None) -> str:
    doc = run.document
    model = doc.get("model") or {}
    name = PurePath(str(model.get("path", "?"))).name
    devices = list(doc.get("devices") or [])
    out = [
        f"### edgeprof · {markdown_code(name)} · run {markdown_code(doc.get('run_id', '?'))}",
        "",
        f"Model sha256 {markdown_code(str(model.get('sha256', ''))[:12])} · {len(devices)} device(s)"
        f" · {markdown_text(doc.get('created_at', ''))}",
        "",
        "| " + " | ".join(SUMMARY_HEADER) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(SUMMARY_HEADER))) + "|",
    ]
    out += ["| " + " | ".join(_row(d)) + " |" for d in devices]
    for d in devices:
        validity = d.get("validity") or {}
        if validity and not validity.get("valid"):
            reasons = "; ".join(markdown_text(r) for r in validity.get("reasons") or [])
            out += ["", f"⚠️ **{markdown_text(d.get('device'))}: not valid**: {reasons}"]
        if validity.get("warnings"):
            device = markdown_text(d.get("device"))
            out += [""] + [f"- warning, {device}: {markdown_text(w)}" for w in validity["warnings"]]
        out += generation_markdown(d)
        accelerator = device_lines(d)  # TensorRT engine, Jetson power mode and clocks, rails that moved
        if accelerator:
            out += ["", *(f"- {markdown_text(d.get('device'))}: {markdown_text(line)}" for line in accelerator)]
        out += repetitions_markdown(d, markdown_html_text(d.get("device")))
        ops = (d.get("op_profile") or {}).get("by_type") or []
        if ops:
            total_us = sum(r["total_us"] for r in ops) or 1.0
            out += [
                "",
                f"<details><summary>{markdown_html_text(d.get('device'))}: time by operator type</summary>",
                "",
                "| op type | total ms | share | calls |",
                "|---|---:|---:|---:|",
            ]
            out += [
                f"| {markdown_text(r['op_type'])} | {r['total_us'] / 1e3:.2f}"
                f" | {100 * r['total_us'] / total_us:.1f}% | {r['calls']} |"
                for r in ops[:10]
            ]
            out += ["", "</details>"]
    figures = _key_figures(devices, grid_g_per_kwh)
    if figures:
        out += ["", "**Key figures**", "", *figures]
    out += [
        "",
        "<sub>p50 interval: distribution-free 95% CI; energy interval: batch means over blocks of "
        "inferences. " + (f.CO2E_NOTE + ".</sub>" if grid_g_per_kwh is not None else "</sub>"),
    ]
    return "\n".join(out) + "\n"
