"""The generation section of the reports (generative models): per prompt length TTFT, ITL, tokens/s, energy per token.

Figures come from each device entry's `generation` list (host/analysis/generation.py); the plots from the raw token
timestamps: the inter-token latency distribution per prompt length, and power over time with every measured
generation's prefill and decode shaded. The same rows feed HTML, Markdown and CSV, so the three agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from typing import Any

import numpy as np

from host.analysis.energy import power_over_time_w
from host.analysis.generation import generations, llama_cpp_line
from host.report import fields as f
from host.report.escape import markdown_text
from host.report.plots import no_data, time_origin_ns
from host.report.svg import Chart, colour, padded_range
from host.store.rundata import DeviceRaw

#: Shading of a generation's two phases on the power plot.
PREFILL_FILL = "#f4a6a6"
DECODE_FILL = "#b9d7f0"
#: Points per ITL quantile curve.
QUANTILE_POINTS = 200


def _count(value: Any) -> str:
    """A whole number as digits; "–" for anything else (an imported document may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return str(int(value))


def _tail(stat: dict[str, Any] | None, key: str) -> str:
    """p90/p99 with its interval where it has one; a p99 below its minimum sample count says so."""
    stat = stat or {}
    text = f.with_interval(stat.get(key), stat.get(f"{key}_ci95"))
    if key == "p99" and stat.get("p99_reliable") is False and stat.get("p99") is not None:
        text += f" (n < {_count(stat.get('p99_min_n'))})"
    return text


#: (header, cell text from one generation row); the HTML and Markdown tables use these columns.
COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("prompt tokens", lambda r: _count(r.get("prompt_len"))),
    ("generated", lambda r: _count(r.get("gen_len"))),
    ("n", lambda r: _count(r.get("n_generations"))),
    ("TTFT p50 ms [95% CI]", lambda r: _tail(r.get("ttft_ms"), "p50")),
    ("TTFT p90 ms", lambda r: _tail(r.get("ttft_ms"), "p90")),
    ("TTFT p99 ms", lambda r: _tail(r.get("ttft_ms"), "p99")),
    ("ITL p50 ms [95% CI]", lambda r: _tail(r.get("itl_ms"), "p50")),
    ("ITL p90 ms", lambda r: _tail(r.get("itl_ms"), "p90")),
    ("ITL p99 ms", lambda r: _tail(r.get("itl_ms"), "p99")),
    ("prefill tok/s", lambda r: f.num(r.get("prefill_tokens_per_s"))),
    ("decode tok/s", lambda r: f.num(r.get("decode_tokens_per_s"))),
    ("e2e p50 ms", lambda r: f.num(f.get(r, "e2e_ms", "p50"))),
    ("mJ/prompt token", lambda r: f.num(r.get("energy_mj_per_prompt_token"))),
    ("mJ/generated token", lambda r: f.num(r.get("energy_mj_per_generated_token"))),
    ("tokens/J", lambda r: f.num(r.get("tokens_per_joule"))),
    ("dynamic mJ/generated token", lambda r: f.num(r.get("dynamic_energy_mj_per_generated_token"))),
    ("dynamic tokens/J", lambda r: f.num(r.get("dynamic_tokens_per_joule"))),
)

#: CSV columns of a generation row (full precision, units in the names), after the device's own columns.
CSV_COLUMNS: tuple[tuple[str, tuple[str | int, ...]], ...] = (
    ("prompt_len", ("prompt_len",)),
    ("gen_len", ("gen_len",)),
    ("n_generations", ("n_generations",)),
    ("ttft_p50_ms", ("ttft_ms", "p50")),
    ("ttft_p50_ci95_lo_ms", ("ttft_ms", "p50_ci95", 0)),
    ("ttft_p50_ci95_hi_ms", ("ttft_ms", "p50_ci95", 1)),
    ("ttft_p90_ms", ("ttft_ms", "p90")),
    ("ttft_p99_ms", ("ttft_ms", "p99")),
    ("itl_p50_ms", ("itl_ms", "p50")),
    ("itl_p50_ci95_lo_ms", ("itl_ms", "p50_ci95", 0)),
    ("itl_p50_ci95_hi_ms", ("itl_ms", "p50_ci95", 1)),
    ("itl_p90_ms", ("itl_ms", "p90")),
    ("itl_p99_ms", ("itl_ms", "p99")),
    ("e2e_p50_ms", ("e2e_ms", "p50")),
    ("prefill_tokens_per_s", ("prefill_tokens_per_s",)),
    ("decode_tokens_per_s", ("decode_tokens_per_s",)),
    ("tokens_generated", ("tokens_generated",)),
    ("energy_mj_per_prompt_token", ("energy_mj_per_prompt_token",)),
    ("energy_mj_per_generated_token", ("energy_mj_per_generated_token",)),
    ("tokens_per_joule", ("tokens_per_joule",)),
    ("dynamic_energy_mj_per_prompt_token", ("dynamic_energy_mj_per_prompt_token",)),
    ("dynamic_energy_mj_per_generated_token", ("dynamic_energy_mj_per_generated_token",)),
    ("dynamic_tokens_per_joule", ("dynamic_tokens_per_joule",)),
)


def rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The entry's generation rows (one per prompt length); none for a model measured by inferences."""
    found = entry.get("generation")
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []


def itl_quantiles(raw: DeviceRaw) -> str:
    """Inter-token latency quantile curves, one per prompt length (log latency axis when they span over 20x)."""
    by_prompt: dict[int, list[np.ndarray]] = {}
    for g in generations(raw):
        if g.token_end_ns.size > 1:
            by_prompt.setdefault(g.prompt_tokens, []).append(np.diff(g.token_end_ns) / 1e6)
    if not by_prompt:
        return no_data("no inter-token latencies (generations of one token)")
    curves = []
    for prompt_len, parts in by_prompt.items():
        itl_ms = np.sort(np.concatenate(parts))
        q = np.linspace(0, 1, min(QUANTILE_POINTS, itl_ms.size))
        curves.append((prompt_len, np.quantile(itl_ms, q), q * 100))
    lo = min(float(c[1][0]) for c in curves)
    hi = max(float(c[1][-1]) for c in curves)
    log_x = lo > 0 and hi / lo > 20
    chart = Chart(
        (lo, hi) if log_x else padded_range([lo, hi]),
        (0, 100),
        "inter-token latency ms" + (" (log scale)" if log_x else ""),
        "% of tokens ≤",
        f"inter-token latency, {raw.device}",
        log_x=log_x,
    )
    for k, (prompt_len, x, y) in enumerate(curves):
        chart.line(x, y, colour(k), f"prompt {prompt_len}")
    return chart.render()


def power_with_generations(raw: DeviceRaw, index: int, has_sensor: bool) -> str:
    """Power over the measured generations; each pixel column shaded prefill or decode, whichever took most of it."""
    spans = [(g.start_ns, int(g.token_end_ns[0]), int(g.token_end_ns[-1])) for g in generations(raw)]
    if not spans:
        return no_data("no measured generations")
    t0 = time_origin_ns(raw)
    first, last = min(s[0] for s in spans), max(s[2] for s in spans)
    t_ns, watts = power_over_time_w(raw.series) if has_sensor else (np.zeros(0), np.zeros(0))
    keep = (t_ns >= first) & (t_ns <= last) if watts.size else np.zeros(0, dtype=bool)
    t_ns, watts = t_ns[keep], watts[keep]
    chart = Chart(
        ((first - t0) / 1e9, max((last - t0) / 1e9, (first - t0) / 1e9 + 1e-3)),
        padded_range(watts, from_zero=True) if watts.size else (0.0, 1.0),
        "time s (board monotonic clock)",
        "power W",
        f"power during generation, {raw.device}",
    )
    starts = np.array([s[0] for s in spans], dtype=np.float64)
    firsts = np.array([s[1] for s in spans], dtype=np.float64)
    lasts = np.array([s[2] for s in spans], dtype=np.float64)
    chart.shade_dominant(
        [
            ((starts - t0) / 1e9, (firsts - t0) / 1e9, PREFILL_FILL, "prefill"),
            ((firsts - t0) / 1e9, (lasts - t0) / 1e9, DECODE_FILL, "decode"),
        ]
    )
    if watts.size:
        chart.line((t_ns - t0) / 1e9, watts, colour(index), "power W")
    svg = chart.render()
    if not watts.size:
        svg = svg.replace(
            "</svg>", f'<text x="50%" y="45%" text-anchor="middle" class="nosensor">{f.NO_SENSOR}</text></svg>'
        )
    return svg


def generation_html(entry: dict[str, Any], raw: DeviceRaw | None, index: int) -> str:
    """The device's generation table and plots; empty for a model measured by inferences."""
    found = rows(entry)
    if not found:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell(r))}</td>" for _, cell in COLUMNS) + "</tr>" for r in found)
    table = (
        f'<div class="scroll"><table class="generation"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )
    plots = ""
    if raw is not None:
        has_sensor = f.get(entry, "energy", "method") is not None
        plots = (
            f'<div class="grid2"><div>{itl_quantiles(raw)}</div>'
            f"<div>{power_with_generations(raw, index, has_sensor)}</div></div>"
        )
    llama = entry.get("llama_cpp")
    settings = f'<p class="caption">{escape(llama_cpp_line(llama))}</p>' if isinstance(llama, dict) and llama else ""
    return (
        f"<h4>Generation</h4>{settings}{table}"
        '<p class="caption">TTFT: prompt in to first token (prefill and the first pick); ITL: between consecutive '
        "tokens; decode tok/s: tokens after the first over the time after the first. Energy per prompt token is "
        "the prefill's, per generated token the decode's; dynamic figures are above the idle baseline.</p>" + plots
    )


def generation_markdown(entry: dict[str, Any]) -> list[str]:
    """Markdown lines: the device's generation table (rows per prompt length); none without generations."""
    found = rows(entry)
    if not found:
        return []
    lines = ["", f"**{markdown_text(entry.get('device', '?'))}: generation**", ""]
    llama = entry.get("llama_cpp")
    if isinstance(llama, dict) and llama:
        lines += [markdown_text(llama_cpp_line(llama)), ""]
    lines += ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "|".join("---:" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |" for r in found]  # our digits, '.', '–', '[ ]'
    return lines
