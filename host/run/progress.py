"""Live progress while devices are profiled (a table on a terminal, plain lines otherwise), and the final table."""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any, TextIO

from host.analysis.document import NO_SENSOR
from host.report.escape import rich_text, terminal_text
from host.report.fields import n_text
from host.run.profiling import DeviceProgress


class PlainProgress:
    """One line per phase change (and every few seconds while measuring): fit for CI logs and pipes."""

    def __init__(self, out: TextIO = sys.stderr, every_s: float = 5.0) -> None:
        self.out = out
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, float]] = {}

    def __call__(self, p: DeviceProgress) -> None:
        with self._lock:
            phase, at = self._last.get(p.device, ("", 0.0))
            now = time.monotonic()
            if p.phase == phase and now - at < self.every_s:
                return
            self._last[p.device] = (p.phase, now)
            # Device names and errors come from agents: never let them drive the terminal.
            if p.status == "error":
                line = f"{terminal_text(p.device)}: failed: {terminal_text(p.error)}"
            else:
                line = f"{terminal_text(p.device)}: {terminal_text(p.phase)}"
                if p.measured:
                    line += f"  {p.measured} inferences"
                if p.p50_ms is not None:  # of the newest inferences; the final table's p50 is of all of them
                    line += f"  recent p50 {significant(p.p50_ms)} ms"
                if p.power_w is not None:
                    line += f"  {p.power_w:.2f} W"
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        pass


class LiveProgress:
    """A rich table redrawn a few times a second: device, phase, progress, running p50 and power."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._rows: dict[str, DeviceProgress] = {}
        self._lock = threading.Lock()
        self._live = Live(self._render(), console=Console(stderr=True), refresh_per_second=4, transient=True)
        self._live.start()

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for col in ("device", "phase", "inferences", "recent p50 ms", "power W", "status"):
            table.add_column(col)
        for p in self._rows.values():
            done = f"{p.measured}/{p.target_runs}" if p.target_runs else str(p.measured)
            p50 = significant(p.p50_ms) if p.p50_ms is not None else ""
            power = f"{p.power_w:.2f}" if p.power_w is not None else ""
            status = {"ok": "[green]ok", "error": f"[red]{rich_text(p.error)}"}.get(p.status, "")
            table.add_row(rich_text(p.device), rich_text(p.phase), done, p50, power, status)
        return table

    def __call__(self, p: DeviceProgress) -> None:
        with self._lock:
            self._rows[p.device] = p
            self._live.update(self._render())

    def close(self) -> None:
        self._live.stop()


def make_progress(quiet: bool = False) -> Any:
    if quiet:
        return lambda p: None
    if sys.stderr.isatty():
        return LiveProgress()
    return PlainProgress()


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
        mj = NO_SENSOR if d["status"] == "ok" else "-"
    else:
        mj = significant(energy["energy_mj_per_inference"])
    provider = d.get("execution_provider") or ""
    runtime = (d.get("runtime") or "-") + (f" / {provider.replace('ExecutionProvider', '')}" if provider else "")
    return {
        "device": rich_text(d["device"]),
        "status": "ok" if d["status"] == "ok" else "error",
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


def _table(title: str, rows: list[dict[str, str]], max_priority: int) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
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


def final_table(document: dict[str, Any], out: TextIO = sys.stdout, width: int | None = None) -> None:
    """The per-device summary table printed after a run, with as many columns as the width holds."""
    from rich.console import Console

    width = width or output_width(out)
    title = rich_text(f"run {document['run_id']}  ·  {document['model']['path']}")
    rows = [_row(d) for d in document["devices"]]
    fits = [level for level in (3, 2, 1) if rows and _natural_width(rows, level) <= width]
    console = Console(file=out, width=width)
    console.print(_table(title, rows, fits[0] if fits else 0))
    for d in document["devices"]:
        # Plain print: one error stays one line however narrow the terminal or pipe.
        if d["status"] != "ok":
            print(f"error  {terminal_text(d['device'])}: {terminal_text(d.get('error'))}", file=out)
        elif d.get("validity") and not d["validity"]["valid"]:
            reasons = "; ".join(terminal_text(r) for r in d["validity"]["reasons"])
            print(f"error  {terminal_text(d['device'])}: result not valid: {reasons}", file=out)
