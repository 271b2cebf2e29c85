"""The repetitions of a device (`--repeat K`, `host ab`) as a small table in the HTML and Markdown reports."""

from __future__ import annotations

from html import escape
from typing import Any

from host.report import fields as f

HEADER = ("#", "n", "p50 ms", "p90 ms", "mean ms", "inf/s", "mJ/inf", "dynamic mJ/inf", "load ms", "worker pid")


def _cells(rep: dict[str, Any]) -> list[str]:
    return [
        str(int(rep.get("index", 0)) + 1),
        str(rep.get("n", "–")),
        f.num(rep.get("p50_ms")),
        f.num(rep.get("p90_ms")),
        f.num(rep.get("mean_ms")),
        f.num(rep.get("throughput_ips")),
        f.num(rep.get("energy_mj_per_inference")),
        f.num(rep.get("dynamic_energy_mj_per_inference")),
        f.num(rep.get("load_time_ms")),
        str(rep.get("worker_pid") or "–"),
    ]


def _caption(d: dict[str, Any]) -> str:
    reps = d.get("repetitions") or []
    method = (d.get("latency_ms") or {}).get("ci_method")
    return f"{len(reps)} repetitions, each in a fresh worker; pooled figures above" + (
        f", intervals {method}" if method else ""
    )


def repetitions_html(d: dict[str, Any]) -> str:
    """A <table> of the device's repetitions; empty for a run measured once."""
    reps = d.get("repetitions") or []
    if len(reps) < 2:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in reps)
    return (
        f'<table class="reps"><caption>{escape(_caption(d))}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


def repetitions_markdown(d: dict[str, Any], device: str) -> list[str]:
    """Markdown lines (a collapsed table) of the device's repetitions; none for a run measured once."""
    reps = d.get("repetitions") or []
    if len(reps) < 2:
        return []
    lines = ["", f"<details><summary>{device}: {_caption(d)}</summary>", ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---:" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in reps]
    return [*lines, "", "</details>"]
