"""The recorded real run (tests/fixtures/real_run, made by tests/fixtures/make_real_run.py) as a RunData.

`load_real_run` rebuilds exactly what the store held: the document, and each device's raw arrays with
its phases taken from the document. `measured_latency_ms` and friends recompute figures from the raw
arrays with plain numpy, so the tests' expected values never come from the code that made the document.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from host.store.rundata import DeviceRaw, PhaseSpan, RunData, Series

REAL_RUN = Path(__file__).parent / "fixtures" / "real_run"


def load_real_run() -> RunData:
    document = json.loads((REAL_RUN / "document.json").read_text())
    stored = json.loads((REAL_RUN / "raw.json").read_text())
    arrays = {
        key: np.asarray(values, dtype=np.float64 if key.endswith("/value") else np.int64)
        for key, values in stored["arrays"].items()
    }
    raw: dict[str, DeviceRaw] = {}
    for entry in document["devices"]:
        raw[entry["device"]] = DeviceRaw(
            device=entry["device"],
            phases=[
                PhaseSpan(p["name"], p["start_ns"], p["end_ns"], p.get("detail", ""), p.get("count", 0))
                for p in entry.get("phases", [])
            ],
        )
    for item in stored["manifest"]:
        dev = raw[item["device"]]
        prefix = f"{item['index']}/{item['name']}/"
        if item["kind"] == "latency_ns":
            start, end = arrays[prefix + "start_ns"], arrays[prefix + "end_ns"]
            if item["name"] == "measure":
                dev.start_ns, dev.end_ns = start, end
            else:
                dev.warmup_start_ns, dev.warmup_end_ns = start, end
        else:
            series = Series(item["name"], item["kind"], item["role"], item["sensor"])
            series.t_ns, series.value = arrays[prefix + "t_ns"], arrays[prefix + "value"]
            dev.series.append(series)
    return RunData(document=document, raw=raw)


def measured_latency_ms(raw: DeviceRaw) -> np.ndarray:
    """Every measured inference's latency in ms, all repetitions pooled."""
    return (raw.end_ns - raw.start_ns).astype(np.float64) / 1e6


def measure_seconds(raw: DeviceRaw) -> float:
    """The measure phases' total length (one per repetition), in seconds."""
    return sum(p.end_ns - p.start_ns for p in raw.phases if p.name == "measure") / 1e9
