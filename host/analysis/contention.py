"""Was the machine quiet while measuring? CPU that other processes used during the measure phase.

The agent samples ``cpu_other_pct`` (agent/sensors/contention.py): the share of all cores that processes
other than the agent and its worker used since the previous read. Its time-weighted mean over the measure
window goes into the result as ``machine_load.other_cpu_pct``, and into validity: a warning from
OTHER_CPU_WARN_PCT, a reason (the run is not valid) from OTHER_CPU_INVALID_PCT, where other processes held
at least half the machine (a whole core of a 2-core laptop: the newcomer's 19.5 ms against 5.4-7.0 ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from host.store.rundata import PhaseSpan, Series

KIND = "cpu_other_pct"
#: Other processes used at least this share of all cores: said as a warning.
OTHER_CPU_WARN_PCT = 10.0
#: At least this share: the run is not valid (its latency and energy are the machine's, not the model's).
OTHER_CPU_INVALID_PCT = 50.0


def machine_load(series: Sequence[Series], measure: PhaseSpan) -> dict[str, Any] | None:
    """{"other_cpu_pct": time-weighted mean over the measure window, "samples": n}; None when not sampled.

    Each value covers the interval since the sample before it, so it is weighted by that interval; a
    value read just after the window ends still covers the window's last moments and is included.
    """
    found = next((s for s in series if s.kind == KIND), None)
    if found is None or found.t_ns.size < 2:
        return None
    t_ns = np.asarray(found.t_ns, dtype=np.int64)
    value = np.asarray(found.value, dtype=np.float64)
    begins, ends = t_ns[:-1], t_ns[1:]
    # The share of each interval that lies inside the measure window.
    inside_ns = np.clip(np.minimum(ends, measure.end_ns) - np.maximum(begins, measure.start_ns), 0, None)
    total_ns = float(inside_ns.sum())
    if total_ns <= 0:
        return None
    mean_pct = float((value[1:] * inside_ns).sum() / total_ns)
    return {"other_cpu_pct": mean_pct, "samples": int(np.count_nonzero(inside_ns))}


def findings(load: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(validity reasons, warnings) about other processes' CPU use during the measurement."""
    if not load or load.get("other_cpu_pct") is None:
        return [], []
    pct = float(load["other_cpu_pct"])
    text = (
        f"other processes used {pct:.0f}% of the CPU during the measurement: the figures are this machine's"
        " under load, not the model's on a quiet board"
    )
    if pct >= OTHER_CPU_INVALID_PCT:
        return [text], []
    if pct >= OTHER_CPU_WARN_PCT:
        return [], [text]
    return [], []
