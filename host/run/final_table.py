"""The table printed after a run: a row per device that fits the terminal, then every error, validity reason and
warning, and which columns a narrow terminal left out."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, TextIO

from host.analysis.document import NO_SENSOR, no_energy_text
from host.report.escape import rich_text, terminal_text
from host.report.fields import n_text


def significant(value: float | None, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits without an exponent: 0.006123, 2.110, 296.9, 12346."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


#: Terminal columns the full table needs; narrower terminals get the columns that matter most first.
#: Pipes and CI logs, which never wrap, get the full table whatever COLUMNS says.
_COLUMNS: tuple[tuple[str, str, int], ...] = (
    # (header, justify, priority: 0 always shown, higher numbers dropped first when space is short)
    ("device", "left", 0),
    ("status", "left", 0),
    ("runtime / provider", "left", 3),
    ("n", "right", 2),
    ("p50 ms [95% CI]", "right", 0),
    ("p90 ms", "right", 2),
    ("p99 ms", "right", 1),
    ("inf/s", "right", 1),
    ("load ms", "right", 3),
    ("peak MB", "right", 2),
    ("mJ/inf", "right", 0),
    ("avg W", "right", 1),
    ("max °C", "right", 3),
)
#: Width used when the output is not a terminal: wide enough that no column is dropped.
PIPE_WIDTH = 220


def _row(d: dict[str, Any]) -> dict[str, str]:
    lat = d.get("latency_ms") or {}
    energy = d.get("energy") or {}
    thermal = d.get("thermal") or {}
    ci = lat.get("p50_ci95")
    p50 = significant(lat.get("p50")) + (f" [{significant(ci[0])}–{significant(ci[1])}]" if ci else "")
    if energy.get("energy_mj_per_inference") is None:
        # Short: at 80 columns every character counts ("charging": a phone on USB power refuses energy).
        refused = no_energy_text(d)
        mj = ("no sensor" if refused == NO_SENSOR else refused) if d["status"] == "ok" else "-"
    else:
        mj = significant(energy["energy_mj_per_inference"])
    provider = d.get("execution_provider") or ""
    runtime = (d.get("runtime") or "-") + (f" / {provider.replace('ExecutionProvider', '')}" if provider else "")
    return {
        "device": rich_text(d["device"]),
        "status": device_status(d),
        "runtime / provider": rich_text(runtime),
        "n": n_text(d),  # a phone's latency is block means: said here (host/report/fields.py)
        "p50 ms [95% CI]": p50,
        "p90 ms": significant(lat.get("p90")),
        "p99 ms": significant(lat.get("p99")),
        "inf/s": significant(d.get("throughput_ips")),
        "load ms": significant(d.get("load_time_ms")),
        "peak MB": significant(d.get("peak_rss_mb")),
        "mJ/inf": mj,
        "avg W": significant(energy.get("avg_power_w")),
        "max °C": significant(thermal.get("max_temp_c"), 3),
    }


def _natural_width(rows: list[dict[str, str]], max_priority: int) -> int:
    """Columns a table needs with no cell wrapped: each column's widest cell plus rich's padding and rule."""
    shown = [h for h, _, priority in _COLUMNS if priority <= max_priority]
    return 1 + sum(3 + max(len(h), *(len(row[h]) for row in rows)) for h in shown)


def _table(rows: list[dict[str, str]], max_priority: int) -> Any:
    from rich.table import Table

    table = Table()
    for header, justify, priority in _COLUMNS:
        if priority <= max_priority:
            if header == "device":
                # Device names tell fleet rows apart: folded onto a second line when they must, never cut.
                widest = max(len(row[header]) for row in rows)
                table.add_column(header, justify="left", overflow="fold", min_width=min(widest, 20))
            else:
                table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row[h] for h, _, priority in _COLUMNS if priority <= max_priority))
    return table


def output_width(out: TextIO) -> int:
    """The terminal's width for a terminal; PIPE_WIDTH for a file or pipe (logs do not wrap)."""
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        from rich.console import Console

        return Console(file=out).width
    return PIPE_WIDTH


def device_status(d: dict[str, Any]) -> str:
    """One word for a device's outcome: ok, invalid (measured, but not to be trusted), interrupted or error."""
    if d.get("status") != "ok":
        return "interrupted" if d.get("error_kind") == "interrupted" else "error"
    validity = d.get("validity") or {}
    return "invalid" if validity.get("valid") is False else "ok"


def outcome_lines(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, device, text) for every device's error, validity reason and warning, in that order per device."""
    lines: list[tuple[str, str, str]] = []
    for d in document["devices"]:
        device = terminal_text(d["device"])
        status = device_status(d)
        validity = d.get("validity") or {}
        if status in ("error", "interrupted"):
            lines.append((status, device, terminal_text(d.get("error")) or "failed"))
        elif status == "invalid":
            reasons = "; ".join(terminal_text(r) for r in validity.get("reasons") or [])
            lines.append(("invalid", device, f"result not valid: {reasons}"))
        lines += [("warning", device, terminal_text(w)) for w in validity.get("warnings") or []]
    return lines


def wrapped(label: str, text: str, width: int | None) -> str:
    """``label  text``, folded at word boundaries to `width` (None: one line) under a hanging indent."""
    line = f"{label:<11} {text}"
    if width is None or len(line) <= width:
        return line
    import textwrap

    return "\n".join(
        textwrap.wrap(line, width=width, subsequent_indent=" " * 12, break_long_words=False, break_on_hyphens=False)
    )


def final_table(document: dict[str, Any], out: TextIO = sys.stdout, width: int | None = None) -> None:
    """The per-device summary table printed after a run, with as many columns as the width holds.

    Below it, every device's error, the reasons a result is not valid and its warnings, one per line (folded
    at word boundaries on a terminal); when the width left columns out, a line names them.
    """
    from rich.console import Console

    fold_width = width or (output_width(out) if _isatty(out) else None)
    width = width or output_width(out)
    # A plain line, not the table's title: rich folds a title to the table's width, mid-path.
    title = f"run {terminal_text(document['run_id'])}  ·  {terminal_text(document['model']['path'])}"
    if len(title) > width:
        title = f"run {terminal_text(document['run_id'])}  ·  {terminal_text(Path(document['model']['path']).name)}"
    print(title, file=out, flush=True)
    rows = [_row(d) for d in document["devices"]]
    fits = [level for level in (3, 2, 1) if rows and _natural_width(rows, level) <= width]
    level = fits[0] if fits else 0
    console = Console(file=out, width=width)
    console.print(_table(rows, level))
    dropped = [header for header, _, priority in _COLUMNS if priority > level]
    if dropped and rows:
        note = f"left out at {width} columns: {', '.join(dropped)} (--json and --report have every column)"
        print(wrapped("columns", note, fold_width), file=out)
    for label, device, text in outcome_lines(document):
        print(wrapped(label, f"{device}: {text}", fold_width), file=out)
    for line in op_profile_lines(document, fold_width):
        print(line, file=out)


def _isatty(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty is not None and isatty())


#: Operator types shown per device in the terminal (the HTML report has them all, and the slowest nodes).
OP_ROWS = 10


def op_profile_lines(document: dict[str, Any], width: int | None = None) -> list[str]:
    """--op-profile in the terminal: per device its time by operator type and the trace file kept, or why the
    runtime gave none."""
    lines: list[str] = []
    for d in document["devices"]:
        device = terminal_text(d["device"])
        profile = d.get("op_profile") or {}
        by_type = profile.get("by_type") or []
        note = (d.get("notes") or {}).get("op_profile")
        if not by_type:
            if note:
                lines.append(wrapped("op profile", f"{device}: {terminal_text(note)}", width))
            continue
        total_us = sum(float(r.get("total_us") or 0) for r in by_type) or 1.0
        lines.append(f"op profile  {device}: time by operator type over the profiled runs after measuring")
        lines.append(f"            {'op type':<24} {'total ms':>10} {'share':>7} {'calls':>7}  provider")
        for r in by_type[:OP_ROWS]:
            provider = terminal_text(r.get("provider") or "").removesuffix("ExecutionProvider")
            lines.append(
                f"            {terminal_text(r.get('op_type'))[:24]:<24} {float(r['total_us']) / 1e3:>10.2f}"
                f" {100 * float(r['total_us']) / total_us:>6.1f}% {int(r.get('calls') or 0):>7}  {provider}"
            )
        if len(by_type) > OP_ROWS:
            lines.append(f"            … {len(by_type) - OP_ROWS} more types, and the slowest nodes: host report")
        if profile.get("trace_file"):
            where = f"trace: {terminal_text(profile['trace_file'])} (open it in ui.perfetto.dev or chrome://tracing)"
            lines.append(wrapped("", where, width))
        elif profile.get("trace_problem") or note:
            lines.append(wrapped("", f"trace: {terminal_text(profile.get('trace_problem') or note)}", width))
    return lines
