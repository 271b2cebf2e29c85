"""What an accelerator run adds to a device's entry: the TensorRT engine, the Jetson's state, the rails that moved.

The agent reports these as JobEnd notes (agent/runtimes/trtexec.py, agent/jetson_state.py); here they become the
result's `tensorrt` and `jetson` blocks with typed values, and the power rails are compared between the idle
baseline and the measured window, so a report can say which rails the GPU or DLA work moved (on an AGX Orin:
VDD_GPU_SOC, not VDD_CPU_CV).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from host.store.rundata import PhaseSpan, Series

#: A rail counts as moved when it rose by at least this much over idle…
MOVED_MIN_W = 0.05
#: …and by at least this share of the largest rise among the rails that are not the board's total.
MOVED_SHARE = 0.1


def merged_notes(end: Any) -> dict[str, str]:
    """The job's notes, completed from its parts' (a multi-part job keeps runtime notes per part)."""
    notes: dict[str, str] = {}
    for part in reversed(list(getattr(end, "parts", []) or [])):
        notes.update(dict(part.notes))
    notes.update(dict(end.notes))
    return notes


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _integer(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def _flag(text: str | None) -> bool | None:
    return {"true": True, "false": False}.get(text or "")


def tensorrt_block(notes: Mapping[str, str]) -> dict[str, Any] | None:
    """The engine and how it was timed; None when the job did not run TensorRT."""
    if "tensorrt_engine" not in notes:
        return None
    return {
        "runner": notes.get("tensorrt_runner") or None,
        "latency_timer": notes.get("latency_timer") or None,
        "precision": notes.get("tensorrt_precision") or None,
        "dla_core": _integer(notes.get("tensorrt_dla_core")),
        "gpu_fallback": _flag(notes.get("tensorrt_gpu_fallback")),
        "engine": notes.get("tensorrt_engine"),
        "engine_cached": _flag(notes.get("engine_cached")),
        "engine_build_ms": _number(notes.get("engine_build_ms")),
        "device": notes.get("tensorrt_device") or None,
        "compute_capability": notes.get("tensorrt_compute_capability") or None,
        "dla_layers": _integer(notes.get("dla_layers")),
        "gpu_layers": _integer(notes.get("gpu_layers")),
        "int8_scales": notes.get("int8_scales") or None,
        "gpu_compute_ms_p50": _number(notes.get("gpu_compute_ms_p50")),
    }


def jetson_block(notes: Mapping[str, str]) -> dict[str, Any] | None:
    """Power mode and clocks around the job; None when the agent does not serve a Jetson."""
    jetson = {k.removeprefix("jetson."): v for k, v in notes.items() if k.startswith("jetson.")}
    if not jetson:
        return None
    clocks: dict[str, dict[str, Any]] = {"before": {}, "after": {}}
    for key, value in jetson.items():
        for when in ("before", "after"):
            if key.endswith(f"_mhz_{when}"):
                clocks[when][key.removesuffix(f"_mhz_{when}")] = _number(value) if _number(value) is not None else value
    return {
        "power_mode": jetson.get("power_mode"),
        "power_mode_id": _integer(jetson.get("power_mode_id")),
        "power_mode_source": jetson.get("power_mode_source"),
        "power_mode_set": jetson.get("power_mode_set"),
        "power_mode_restore": jetson.get("power_mode_restore"),
        "power_mode_changed": jetson.get("power_mode_changed"),
        "clocks_pinned": _flag(jetson.get("clocks_pinned")),
        "clocks_floating": jetson.get("clocks_floating"),
        "clocks_mhz": clocks,
    }


def jetson_warnings(entry: Mapping[str, Any]) -> list[str]:
    """Doubts about a Jetson run's state: floating clocks, a power mode that changed under the job."""
    jetson = entry.get("jetson") or {}
    out = []
    if jetson.get("clocks_pinned") is False:
        out.append(
            f"clocks not pinned ({jetson.get('clocks_floating') or 'DVFS active'}): latency and energy follow the"
            " governor; run `sudo jetson_clocks` for repeatable numbers, or say that DVFS was measured"
        )
    if jetson.get("power_mode_changed"):
        out.append(f"the power mode changed {jetson['power_mode_changed']}")
    if str(jetson.get("power_mode_restore") or "").startswith("failed"):
        out.append(f"the power mode was not restored after the job: {jetson['power_mode_restore']}")
    return out


def _mean_power_w(series: Series, start_ns: int, end_ns: int) -> float | None:
    """Mean power of one rail over [start, end], from its power samples or its energy counter."""
    t = np.asarray(series.t_ns, dtype=np.int64)
    v = np.asarray(series.value, dtype=np.float64)
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    if t.size < 2 or end_ns <= start_ns or t[0] > start_ns or t[-1] < end_ns:
        return None  # the samples do not cover the span: no figure rather than an extrapolated one
    if series.kind == "energy_uj":
        delta_uj = float(np.interp(end_ns, t, v) - np.interp(start_ns, t, v))
        return delta_uj / 1e6 / ((end_ns - start_ns) / 1e9)
    inside = (t > start_ns) & (t < end_ns)
    grid = np.concatenate(([start_ns], t[inside], [end_ns])).astype(np.float64)
    power = np.interp(grid, t.astype(np.float64), v)
    integral = float(np.sum((power[1:] + power[:-1]) / 2.0 * np.diff(grid)))
    return integral / (end_ns - start_ns) / 1000.0  # mW·ns / ns -> W


def rail_movement(series: Sequence[Series], window: tuple[int, int], idle: PhaseSpan | None) -> dict[str, Any] | None:
    """Each power rail's idle and measured power, and which rails the work moved; None with fewer than 2 rails."""
    rails = [s for s in series if s.kind in ("power_mw", "energy_uj") and not s.name.endswith("_power")]
    if len(rails) < 2 or idle is None or idle.end_ns <= idle.start_ns:
        return None
    rows: list[dict[str, Any]] = []
    for rail in rails:
        idle_w = _mean_power_w(rail, int(idle.start_ns), int(idle.end_ns))
        measure_w = _mean_power_w(rail, *window)
        delta = measure_w - idle_w if idle_w is not None and measure_w is not None else None
        rows.append(
            {
                "name": rail.name,
                "role": rail.role.partition(";")[0] or None,
                "sensor": rail.sensor or None,
                "idle_w": idle_w,
                "measure_w": measure_w,
                "delta_w": delta,
                "moved": False,
            }
        )
    parts = [float(r["delta_w"]) for r in rows if r["delta_w"] is not None and r["role"] != "total"]
    largest = max(parts, default=0.0)
    for row in rows:
        delta = row["delta_w"]
        row["moved"] = delta is not None and float(delta) >= MOVED_MIN_W and float(delta) >= MOVED_SHARE * largest
    rows.sort(key=lambda r: -(float(r["delta_w"]) if r["delta_w"] is not None else -math.inf))
    return {
        "rails": rows,
        "moved": [r["name"] for r in rows if r["moved"] and r["role"] != "total"],
    }


def device_lines(entry: Mapping[str, Any]) -> list[str]:
    """What a reader needs about one device's engine, power mode and rails, one plain line each (no device name)."""
    lines = []
    trt = entry.get("tensorrt")
    if trt:
        where = (
            f"DLA{trt['dla_core']}" + ("+GPU" if trt.get("gpu_fallback") else "")
            if trt.get("dla_core") is not None
            else "GPU"
        )
        built = (
            "engine from the agent's cache"
            if trt.get("engine_cached")
            else f"engine built in {trt['engine_build_ms'] / 1000:.1f} s"
            if trt.get("engine_build_ms")
            else "engine built"
        )
        gpu_layers = trt.get("gpu_layers")
        layers = f"{trt.get('dla_layers') or 0} DLA / {'?' if gpu_layers is None else gpu_layers} GPU layers"
        compute = f", GPU compute p50 {trt['gpu_compute_ms_p50']:.3f} ms" if trt.get("gpu_compute_ms_p50") else ""
        lines.append(f"TensorRT {trt.get('precision')} on {where} ({trt.get('runner')}): {built}, {layers}{compute}")
        if trt.get("int8_scales"):
            lines.append(f"int8 scales: {trt['int8_scales']}")
    jetson = entry.get("jetson")
    if jetson:
        mode = jetson.get("power_mode") or "unknown"
        if jetson.get("power_mode_id") is not None:
            mode += f" ({jetson['power_mode_id']})"
        pinned = {
            True: "clocks pinned",
            False: f"clocks floating ({jetson.get('clocks_floating')})",
            None: "clocks unknown",
        }
        lines.append(f"Jetson power mode {mode}, {pinned[jetson.get('clocks_pinned')]}")
    moved = entry.get("rail_movement")
    if moved:
        parts = [
            f"{r['name']} {r['delta_w']:+.2f} W"
            for r in moved["rails"]
            if r.get("delta_w") is not None and r["role"] != "total"
        ]
        if parts:
            which = ", ".join(moved["moved"]) or "none above idle"
            lines.append(f"rails moved by the work: {which} (measured minus idle: {', '.join(parts)})")
    return lines


def accelerator_lines(document: Mapping[str, Any]) -> list[str]:
    """Per device, its accelerator lines prefixed by its name (printed after the final table)."""
    return [f"{d.get('device', '?')}  {line}" for d in document.get("devices", []) for line in device_lines(d)]
