"""A synthetic multi-device run with realistic shapes, for the report benchmark, tests and demos.

The document entries are computed from the raw arrays with the same statistics and energy code a real
run uses, so every figure in a report of it is consistent with its plots.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from host.analysis import energy, stats
from host.store.rundata import DeviceRaw, PhaseSpan, RunData, Series

_BOARDS = ("Jetson Orin Nano", "Raspberry Pi 5", "Coral Dev Board", "Intel NUC 13", "Rock 5B")


def _device(name: str, index: int, n: int, rng: np.random.Generator, powered: bool, rate_hz: float) -> DeviceRaw:
    base_ms = 2.0 + 3.5 * index
    t = 1_000_000_000 * (10 + index)
    idle = PhaseSpan("idle", t, t + 2_000_000_000) if powered else PhaseSpan("idle", t, t, "skipped: no power sensor")
    t = idle.end_ns + 50_000_000

    def windows(count: int, median_ms: float, start: int) -> tuple[np.ndarray, np.ndarray]:
        lat = (rng.lognormal(np.log(median_ms), 0.08, count) * 1e6).astype(np.int64)
        gaps = rng.integers(20_000, 120_000, count)
        starts = start + np.concatenate(([0], np.cumsum(lat + gaps)[:-1]))
        return starts, starts + lat

    w_start, w_end = windows(max(n // 50, 20), base_ms * 1.3, t)
    warmup = PhaseSpan("warmup", t, int(w_end[-1]), "stable", int(w_start.size))
    m_start, m_end = windows(n, base_ms, warmup.end_ns + 100_000)
    measure = PhaseSpan("measure", int(m_start[0]), int(m_end[-1]), "", n)
    raw = DeviceRaw(
        device=name,
        start_ns=m_start,
        end_ns=m_end,
        warmup_start_ns=w_start,
        warmup_end_ns=w_end,
        phases=[PhaseSpan("prepare", idle.start_ns - 300_000_000, idle.start_ns), idle, warmup, measure],
    )
    t_all = np.arange(idle.start_ns, measure.end_ns + 200_000_000, int(1e9 / rate_hz), dtype=np.int64)
    busy = np.zeros(t_all.size, dtype=bool)
    for s, e in ((w_start, w_end), (m_start, m_end)):
        k = np.searchsorted(s, t_all, side="right") - 1
        busy |= (k >= 0) & (t_all <= e[np.clip(k, 0, None)])
    if powered:
        idle_mw, busy_mw = 2500.0 + 600 * index, 4200.0 + 900 * index
        power = np.where(busy, busy_mw, idle_mw) + rng.normal(0, 60, t_all.size)
        raw.series.append(Series("VDD_IN", "power_mw", "total", "ina3221", t_all, power))
    rss_t = t_all[:: max(int(rate_hz // 50), 1)]
    rss = 60e6 + 25e6 * (rss_t >= warmup.start_ns) + rng.normal(0, 3e5, rss_t.size).cumsum().clip(-2e6, 2e6)
    raw.series.append(Series("worker", "rss_bytes", "", "memory", rss_t, rss))
    raw.series.append(Series("cpu", "temp_c", "", "thermal", rss_t, 45 + 10 * (rss_t >= measure.start_ns)))
    return raw


def _entry(raw: DeviceRaw, index: int, powered: bool, rate_hz: float) -> dict[str, Any]:
    lat = stats.latency_stats(raw.start_ns, raw.end_ns)
    measure = raw.phase("measure")
    assert measure is not None
    energy_doc = (
        energy.energy_stats(raw.series, measure, raw.phase("idle"), raw.start_ns, raw.end_ns).to_dict()
        if powered
        else energy.empty()
    )
    board = _BOARDS[index % len(_BOARDS)]
    return {
        "device": raw.device,
        "profile": "jetson-orin" if powered else "generic-linux",
        "status": "ok",
        "error": None,
        "runtime": "onnxruntime 1.19.2",
        "execution_provider": "CPUExecutionProvider",
        "execution_providers": ["CPUExecutionProvider"],
        "threads": 2,
        "n_inferences": int(raw.start_ns.size),
        "n_warmup": int(raw.warmup_start_ns.size),
        "upload_bytes": 5_000_000,
        "latency_ms": lat.to_dict(),
        "throughput_ips": lat.throughput_ips,
        "duration_s": lat.duration_s,
        "load_time_ms": 120.0 + index,
        "peak_rss_mb": float(max(s.value.max() for s in raw.series if s.kind == "rss_bytes")) / 1024**2,
        "energy": energy_doc,
        "thermal": {"max_temp_c": 55.0, "throttled": False, "throttle_reason": None},
        "recipe": {"target_format": "onnx", "steps": ["fix-dims"]},
        "sample_rate_hz": rate_hz,
        "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}],
        "inputs_source": "random",
        "board": {
            "hostname": f"board-{index}",
            "board": board,
            "os": "Ubuntu 22.04",
            "kernel": "5.15.0",
            "machine": "aarch64",
            "cpu_model": "Cortex-A78AE",
            "cpu_cores": 6,
            "ram_mb": 7620.0,
            "agent_version": "0.1.0",
            "runtimes": {"onnxruntime": "1.19.2"},
            "sensors": [{"name": "VDD_IN", "kind": "power_mw", "role": "total", "sensor": "ina3221"}]
            if powered
            else [],
        },
        "phases": [
            {"name": p.name, "start_ns": p.start_ns, "end_ns": p.end_ns, "detail": p.detail, "count": p.count}
            for p in raw.phases
        ],
    }


def synthetic_run(
    n_devices: int = 3,
    n_inferences: int = 1000,
    seed: int = 7,
    unpowered: int = 1,
    failed: int = 0,
    rate_hz: float = 1000.0,
) -> RunData:
    """``n_devices`` devices, the last ``unpowered`` without a power sensor, plus ``failed`` error entries."""
    rng = np.random.default_rng(seed)
    devices, raw = [], {}
    for i in range(n_devices):
        name = f"dev{i:02d}-{_BOARDS[i % len(_BOARDS)].split()[0].lower()}"
        powered = i < n_devices - unpowered
        raw[name] = _device(name, i, n_inferences, rng, powered, rate_hz)
        devices.append(_entry(raw[name], i, powered, rate_hz))
    for k in range(failed):
        devices.append(
            {
                "device": f"broken-{k}",
                "status": "error",
                "error": "UNAVAILABLE: agent unreachable",
                "n_inferences": 0,
                "latency_ms": None,
                "energy": energy.empty(),
                "thermal": {"max_temp_c": None, "throttled": None},
            }
        )
    document = {
        "run_id": f"20260101-000000-{seed:06x}",
        "created_at": "2026-01-01T00:00:00+00:00",
        "host_version": "0.1.0",
        "model": {"path": "models/mobilenet_v2.onnx", "sha256": "ab" * 32},
        "settings": {"runs": n_inferences, "warmup": 10, "min_duration_s": 2.0, "idle_s": 2.0, "threads": 2},
        "devices": devices,
    }
    return RunData(document=document, raw=raw)
