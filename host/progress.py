"""Live progress while devices are profiled (a table on a terminal, plain lines otherwise), and the final table."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from host.profiling import DeviceProgress
from host.report.escape import rich_text, terminal_text


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
                if p.p50_ms is not None:
                    line += f"  p50 {p.p50_ms:.3f} ms"
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
        for col in ("device", "phase", "inferences", "p50 ms", "power W", "status"):
            table.add_column(col)
        for p in self._rows.values():
            done = f"{p.measured}/{p.target_runs}" if p.target_runs else str(p.measured)
            p50 = f"{p.p50_ms:.3f}" if p.p50_ms is not None else ""
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


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def final_table(document: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """The per-device summary table printed after a run."""
    from rich.console import Console
    from rich.table import Table

    title = rich_text(f"run {document['run_id']}  ·  {document['model']['path']}")
    table = Table(title=title, title_justify="left")
    for col, justify in (
        ("device", "left"),
        ("status", "left"),
        ("runtime / provider", "left"),
        ("n", "right"),
        ("p50 ms [95% CI]", "right"),
        ("p90 ms", "right"),
        ("p99 ms", "right"),
        ("inf/s", "right"),
        ("load ms", "right"),
        ("peak MB", "right"),
        ("mJ/inf", "right"),
        ("avg W", "right"),
        ("max °C", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    errors = []
    for d in document["devices"]:
        lat = d.get("latency_ms") or {}
        energy = d.get("energy") or {}
        thermal = d.get("thermal") or {}
        ci = lat.get("p50_ci95")
        p50 = _fmt(lat.get("p50"), ".3f") + (f" [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else "")
        if energy.get("energy_mj_per_inference") is None:
            mj = "no power sensor" if d["status"] == "ok" else "-"
        else:
            mj = f"{energy['energy_mj_per_inference']:.3f}"
        provider = d.get("execution_provider") or ""
        runtime = (d.get("runtime") or "-") + (f" / {provider.replace('ExecutionProvider', '')}" if provider else "")
        status = "ok" if d["status"] == "ok" else "error"
        if d["status"] != "ok":
            errors.append(f"{terminal_text(d['device'])}: {terminal_text(d.get('error'))}")
        elif d.get("validity") and not d["validity"]["valid"]:
            reasons = "; ".join(terminal_text(r) for r in d["validity"]["reasons"])
            errors.append(f"{terminal_text(d['device'])}: result not valid: {reasons}")
        table.add_row(
            rich_text(d["device"]),
            status,
            rich_text(runtime),
            str(d.get("n_inferences", 0)),
            p50,
            _fmt(lat.get("p90"), ".3f"),
            _fmt(lat.get("p99"), ".3f"),
            _fmt(d.get("throughput_ips"), ".1f"),
            _fmt(d.get("load_time_ms"), ".1f"),
            _fmt(d.get("peak_rss_mb"), ".1f"),
            mj,
            _fmt(energy.get("avg_power_w"), ".2f"),
            _fmt(thermal.get("max_temp_c"), ".1f"),
        )
    console = Console(file=out, width=max(140, Console(file=out).width))
    console.print(table)
    for line in errors:
        # Plain print: one error stays one line however narrow the terminal or pipe.
        print(f"error  {line}", file=out)
