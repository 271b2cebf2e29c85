"""The per-device figures every report format shows, read from the result document (DESIGN.md §4).

One list of columns, so the HTML table, the Markdown table and the CSV agree on names and units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from host.analysis.document import NO_SENSOR as NO_SENSOR  # the report formats read it from here
from host.analysis.document import get, no_energy_text, num
from host.analysis.energy import CO2E_LABEL, co2e_g


@dataclass(frozen=True)
class Column:
    """One CSV column: its name (with unit) and where the value lives in a device entry."""

    name: str
    read: Callable[[dict[str, Any]], Any]


def _path(*path: str | int) -> Callable[[dict[str, Any]], Any]:
    return lambda entry: get(entry, *path)


CSV_COLUMNS: tuple[Column, ...] = (
    Column("device", _path("device")),
    Column("status", _path("status")),
    Column("error", _path("error")),
    Column("profile", _path("profile")),
    Column("runtime", _path("runtime")),
    Column("execution_provider", _path("execution_provider")),
    Column("threads", _path("threads")),
    Column("n_inferences", _path("n_inferences")),
    Column("latency_source", _path("latency_source")),
    Column("latency_p50_ms", _path("latency_ms", "p50")),
    Column("latency_p50_ci95_lo_ms", _path("latency_ms", "p50_ci95", 0)),
    Column("latency_p50_ci95_hi_ms", _path("latency_ms", "p50_ci95", 1)),
    Column("latency_p90_ms", _path("latency_ms", "p90")),
    Column("latency_p99_ms", _path("latency_ms", "p99")),
    Column("latency_mean_ms", _path("latency_ms", "mean")),
    Column("latency_std_ms", _path("latency_ms", "std")),
    Column("latency_min_ms", _path("latency_ms", "min")),
    Column("latency_max_ms", _path("latency_ms", "max")),
    Column("throughput_ips", _path("throughput_ips")),
    Column("load_time_ms", _path("load_time_ms")),
    Column("peak_rss_mb", _path("peak_rss_mb")),
    Column("energy_method", _path("energy", "method")),
    Column("energy_sensor", _path("energy", "sensor")),
    Column("idle_power_w", _path("energy", "idle_power_w")),
    Column("avg_power_w", _path("energy", "avg_power_w")),
    Column("energy_mj_per_inference", _path("energy", "energy_mj_per_inference")),
    Column("energy_mj_per_inference_ci95_lo", _path("energy", "energy_mj_per_inference_ci95", 0)),
    Column("energy_mj_per_inference_ci95_hi", _path("energy", "energy_mj_per_inference_ci95", 1)),
    Column("dynamic_energy_mj_per_inference", _path("energy", "dynamic_energy_mj_per_inference")),
    Column("dynamic_energy_mj_per_inference_ci95_lo", _path("energy", "dynamic_energy_mj_per_inference_ci95", 0)),
    Column("dynamic_energy_mj_per_inference_ci95_hi", _path("energy", "dynamic_energy_mj_per_inference_ci95", 1)),
    Column("max_temp_c", _path("thermal", "max_temp_c")),
    Column("throttled", _path("thermal", "throttled")),
    # Whether the figures can be trusted (host/analysis/validity.py), and why not: never only in the terminal.
    Column("valid", _path("validity", "valid")),
    Column("validity_reasons", lambda entry: _joined(get(entry, "validity", "reasons"))),
    Column("validity_warnings", lambda entry: _joined(get(entry, "validity", "warnings"))),
)


def _joined(items: Any) -> str | None:
    return "; ".join(str(i) for i in items) if isinstance(items, list) and items else None


def validity_text(entry: dict[str, Any]) -> str:
    """ "valid", "not valid", or "–" where the result recorded no validity (a failed device, an old document)."""
    valid = get(entry, "validity", "valid")
    return "–" if not isinstance(valid, bool) or entry.get("status") != "ok" else "valid" if valid else "not valid"


def latency_source_text(entry: dict[str, Any]) -> str:
    """What the latency figures are: "" for per-inference latencies, "block means" for a phone's runner blocks."""
    return "block means" if entry.get("latency_source") == "block_means" else ""


def n_text(entry: dict[str, Any]) -> str:
    """The inference count, and for a phone the block means its latency figures are made of ("400 in 10 block
    means"): their p50 is the blocks' median, close to the mean latency, and there is no per-inference p90/p99."""
    n = str(entry.get("n_inferences") or 0)
    if latency_source_text(entry):
        return f"{n} in {get(entry, 'latency_ms', 'n') or '?'} block means"
    return n


def has_energy(entry: dict[str, Any]) -> bool:
    return get(entry, "energy", "energy_mj_per_inference") is not None


def co2e_g_per_1m_inferences(entry: dict[str, Any], grid_g_per_kwh: float | None) -> float | None:
    """Estimated g CO2e per million inferences (gross energy x grid intensity); None without both."""
    mj = get(entry, "energy", "energy_mj_per_inference")
    if mj is None or grid_g_per_kwh is None:
        return None
    return co2e_g(float(mj) * 1e-3 * 1e6, grid_g_per_kwh)


CO2E_NOTE = f"CO2e is an {CO2E_LABEL}"


def with_interval(value: Any, interval: Any, digits: int = 4) -> str:
    """ "2.525 [2.464–2.627]", or just the value where there is no interval."""
    if value is None:
        return "–"
    if isinstance(interval, list) and len(interval) == 2 and None not in interval:
        return f"{num(value, digits)} [{num(interval[0], digits)}–{num(interval[1], digits)}]"
    return num(value, digits)


def energy_text(entry: dict[str, Any], key: str, digits: int = 4) -> str:
    """mJ/inference with its interval, or why there is none (no power sensor, "charging", no usable window)."""
    if entry.get("status") != "ok":
        return "–"
    if not has_energy(entry):
        return no_energy_text(entry) if get(entry, "energy", "method") is None else "no usable window"
    return with_interval(get(entry, "energy", key), get(entry, "energy", f"{key}_ci95"), digits)


def board_text(entry: dict[str, Any]) -> str:
    board = get(entry, "board") or {}
    parts = [
        board.get("board") or board.get("hostname") or "",
        board.get("machine") or "",
        board.get("cpu_model") or "",
    ]
    return " · ".join(p for p in parts if p) or "–"
