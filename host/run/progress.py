"""Live progress while devices are profiled: a redrawn table on a terminal, a few plain lines in a pipe or CI log.

What a row says: the phase; for --repeat and `host ab` the repetition (3/10) and its side (A base, B candidate);
inferences measured against the repetition's target (never past it: past the count, measuring goes on for
--min-duration and the time left says so); the p50 of the newest inferences; power; and the time left.
In a pipe a device gets a line per phase until it first measures, a line per repetition that ends, a line when
it ends, and one every HEARTBEAT_S in between at most: not a line per phase of every repetition.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from host.report.escape import rich_text, terminal_text
from host.run.final_table import significant
from host.run.profiling import DeviceProgress

#: Longest silence of a running device in a pipe: then one line says where it is.
HEARTBEAT_S = 30.0
_LIVE_COLUMNS = ("device", "phase", "repetition", "inferences", "recent p50 ms", "power W", "left", "status")


def counter(p: DeviceProgress) -> str:
    """Inferences of the current repetition against its target: `120/200`, or `336` once past the target."""
    n = p.part_measured if p.parts > 1 else p.measured
    if p.target_runs and n <= p.target_runs:
        return f"{n}/{p.target_runs}"
    return str(n)


def repetition(p: DeviceProgress) -> str:
    """`3/10 B` for the third of ten repetitions, on the candidate's side; "" without repetitions."""
    if p.parts <= 1:
        return ""
    return f"{min(p.part + 1, p.parts)}/{p.parts}" + (f" {p.side}" if p.side else "")


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 90:
        return f"{value / 60:.0f} min"
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def time_left(p: DeviceProgress) -> str:
    """`about 40 s` for the whole job when repetitions tell it; else the measure phase's `--min-duration` left."""
    if p.eta_s is not None and p.parts > 1:
        return f"about {seconds(p.eta_s)}"
    if p.measure_left_s:
        return f"{seconds(p.measure_left_s)} of measuring"
    return ""


def details(p: DeviceProgress) -> str:
    """The figures of a progress line: inferences, recent p50, power, time left (what is known)."""
    parts = []
    if p.measured:
        parts.append(f"{counter(p)} inferences")
    if p.p50_ms is not None:  # of the newest inferences; the final table's p50 is of all of them
        parts.append(f"recent p50 {significant(p.p50_ms)} ms")
    if p.power_w is not None:
        parts.append(f"{p.power_w:.2f} W")
    if time_left(p):
        parts.append(f"{time_left(p)} left")
    return "  ".join(parts)


@dataclass
class _Seen:
    """What a pipe has already been told about one device."""

    phase: str = ""
    at: float = 0.0
    measuring_seen: bool = False
    parts_done: int = 0
    ended: bool = False


class PlainProgress:
    """A few plain lines per device, for CI logs and pipes (see the module docstring for which)."""

    def __init__(self, out: TextIO = sys.stderr, every_s: float = HEARTBEAT_S) -> None:
        self.out = out
        self.every_s = every_s
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}

    def __call__(self, p: DeviceProgress) -> None:
        with self._lock:
            line = self._line(p, self._seen.setdefault(p.device, _Seen()), time.monotonic())
            if line is not None:
                print(line, file=self.out, flush=True)

    def _line(self, p: DeviceProgress, seen: _Seen, now: float) -> str | None:
        # Device names and errors come from agents: never let them drive the terminal.
        device = terminal_text(p.device)
        if p.status in ("ok", "error"):
            if seen.ended:
                return None
            seen.ended = True
            if p.status == "error":
                return f"{device}: failed: {terminal_text(p.error)}"
            return f"{device}: done" + (f"  {p.measured} inferences" if p.measured else "")
        if p.parts > 1 and p.parts_done > seen.parts_done:
            seen.parts_done, seen.at, seen.phase = p.parts_done, now, p.phase
            side = f" ({p.done_side})" if p.done_side else ""
            p50 = f"  p50 {significant(p.done_p50_ms)} ms" if p.done_p50_ms is not None else ""
            left = f"  about {seconds(p.eta_s)} left" if p.eta_s is not None else ""
            return f"{device}: repetition {p.parts_done}/{p.parts}{side} done  {p.done_measured} inferences{p50}{left}"
        first_time = p.phase != seen.phase and not seen.measuring_seen
        if not first_time and now - seen.at < self.every_s:
            return None
        seen.phase, seen.at = p.phase, now
        seen.measuring_seen = seen.measuring_seen or p.phase == "measure"
        where = f"{terminal_text(p.phase)}" + (f" (repetition {repetition(p)})" if repetition(p) else "")
        figures = details(p)
        return f"{device}: {where}" + (f"  {figures}" if figures else "")

    def close(self) -> None:
        pass


class LiveProgress:
    """A rich table redrawn a few times a second, one row per device (columns: _LIVE_COLUMNS)."""

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
        with_reps = any(p.parts > 1 for p in self._rows.values())
        for col in _LIVE_COLUMNS:
            if col != "repetition" or with_reps:
                table.add_column(col, no_wrap=col != "status")
        for p in self._rows.values():
            p50 = significant(p.p50_ms) if p.p50_ms is not None else ""
            power = f"{p.power_w:.2f}" if p.power_w is not None else ""
            status = {"ok": "[green]ok", "error": f"[red]{rich_text(p.error)}"}.get(p.status, "")
            cells = [rich_text(p.device), rich_text(p.phase)]
            cells += [repetition(p)] if with_reps else []
            cells += [counter(p) if p.measured else "", p50, power, time_left(p), status]
            table.add_row(*cells)
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
