"""Was the machine quiet while measuring? CPU that other processes used during the measure phase, over time.

The agent samples ``cpu_other_pct`` (agent/sensors/contention.py): the share of all cores that processes
other than the agent and its worker used since the previous read (10 Hz). What matters is whether they took
cores the worker wanted. A worker with T threads on a C-core board needs T cores; when others use O cores'
worth at the same time and O + T > C, the scheduler shares the C cores among everyone runnable, and the
worker's threads lose about 1 - C / (O + T) of their time in that interval ("lost share"). The run is judged
on that loss averaged over the measured window, so a whole-machine job for 40% of the window counts for the
inferences it slowed, where an average of other CPU would call it "40%, a warning".

The rule comes from measurements (bench/bench_contention.py, bench/RESULTS.md (x), squeezenet on the 2-core
dev box, itself shared): at --threads 1, others at 51% of the machine (loss 4%) cost +3% p50, at 61% (loss
10%) +3% and at 65% (loss 13%) +10%; at --threads 2 (all cores, as ONNX Runtime's default) a loop at half a
core (others 34%, loss 24%) cost +174% and one busy core (60%, loss 37%) +313%: a thread pool waits for its
slowest thread, so a small loss is multiplied. (An earlier round on an idle box: --threads 1 next to one
busy core +0%, loss 2%; --threads 2 next to a loop using 20% of the machine +169%, loss 17%.)

Not valid from LOST_SHARE_INVALID (a loss the size of the changes a gate looks for); with the cores unknown,
from a mean of OTHER_CPU_INVALID_PCT. A warning from LOST_SHARE_WARN or a mean of OTHER_CPU_WARN_PCT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from host.store.rundata import PhaseSpan, Series

KIND = "cpu_other_pct"
#: Other processes used at least this share of all cores on average: said as a warning.
OTHER_CPU_WARN_PCT = 10.0
#: At least this share on average: the run is not valid when the board's cores are unknown (else lost share decides).
OTHER_CPU_INVALID_PCT = 50.0
#: Mean share of the worker's time lost to other processes from which the run is not valid / gets a warning.
LOST_SHARE_INVALID = 0.05
LOST_SHARE_WARN = 0.02


def lost_share(other_pct: np.ndarray, threads: int, cores: int) -> np.ndarray:
    """Share of a T-thread worker's time others took in each interval: 1 - C / (O + T) when O + T > C cores.

    ``threads`` 0 means the runtime's default, which takes every core.
    """
    used = cores if threads <= 0 else min(threads, cores)
    demand = np.asarray(other_pct, dtype=np.float64) / 100.0 * cores + used
    return np.clip(1.0 - cores / demand, 0.0, None)


def machine_load(
    series: Sequence[Series], measure: PhaseSpan, threads: int = 0, cores: int = 0
) -> dict[str, Any] | None:
    """{"other_cpu_pct", "samples", "lost_share", "contended_share"} over the measure window; None unsampled.

    Each value covers the interval since the sample before it, so it is weighted by the time of that interval
    inside the window; a value read just after the window ends still covers the window's last moments.
    ``lost_share`` is the time-weighted mean share of the worker's time others took (lost_share()), and
    ``contended_share`` the share of the window in which they took any; both None when the cores are unknown.
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
    lost = contended = None
    if cores > 0:
        per_interval = lost_share(value[1:], threads, cores)
        lost = float((per_interval * inside_ns).sum() / total_ns)
        contended = float(inside_ns[per_interval > 0].sum() / total_ns)
    return {
        "other_cpu_pct": mean_pct,
        "samples": int(np.count_nonzero(inside_ns)),
        "lost_share": lost,
        "contended_share": contended,
    }


def findings(load: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(validity reasons, warnings) about other processes' CPU use during the measurement."""
    if not load or load.get("other_cpu_pct") is None:
        return [], []
    pct = float(load["other_cpu_pct"])
    lost = load.get("lost_share")
    text = f"other processes used {pct:.0f}% of the CPU during the measurement"
    if lost:
        text += (
            f", taking about {100 * lost:.0f}% of the time the worker's threads needed"
            f" ({100 * float(load.get('contended_share') or 0.0):.0f}% of the window contended)"
        )
    text += ": the figures are this machine's under load, not the model's on a quiet board"
    # With the cores known the loss decides (one busy core of two cost a 1-thread worker nothing measurable);
    # without them, only the average can.
    if (lost is None and pct >= OTHER_CPU_INVALID_PCT) or (lost is not None and lost >= LOST_SHARE_INVALID):
        return [text], []
    if pct >= OTHER_CPU_WARN_PCT or (lost is not None and lost >= LOST_SHARE_WARN):
        return [], [text]
    return [], []
