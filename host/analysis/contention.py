"""Was the machine quiet while measuring? CPU that other processes used during the measure phase, over time.

The agent samples ``cpu_other_pct`` (agent/sensors/contention.py): the share of all cores that processes
other than the agent and its worker used since the previous read (10 Hz). What matters is whether they took
cores the worker wanted: a worker with T threads on a C-core board leaves (C - T) / C of the machine free,
and other processes beyond that share preempt its threads (ONNX Runtime's pool spins on every thread it
has, so one preempted thread stalls every parallel operator). Each sample interval is "contended" when other
processes used more than that free share plus CONTENDED_MARGIN_PCT, and the run is judged on the share of
the measured window that was contended, not only on the average: a whole-machine job for 40% of the window
averages to 40% but leaves 40% of the inferences measuring that job.

The rule comes from measurements (bench/bench_contention.py, bench/RESULTS.md (o)): on the 2-core dev box, a
2-thread squeezenet under one busy core measured p50 2-3x its quiet figure, and 1-thread under one busy core
within a few percent. Not valid from CONTENDED_SHARE_INVALID of the window contended, or a mean from
OTHER_CPU_INVALID_PCT whatever the threads; a warning from CONTENDED_SHARE_WARN or a mean of
OTHER_CPU_WARN_PCT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from host.store.rundata import PhaseSpan, Series

KIND = "cpu_other_pct"
#: Other processes used at least this share of all cores on average: said as a warning.
OTHER_CPU_WARN_PCT = 10.0
#: At least this share on average: the run is not valid whatever the worker's threads.
OTHER_CPU_INVALID_PCT = 50.0
#: An interval is contended when others used more than the worker left free plus this margin (% of all cores).
CONTENDED_MARGIN_PCT = 5.0
#: Share of the measured window contended from which the run is not valid / gets a warning.
CONTENDED_SHARE_INVALID = 0.10
CONTENDED_SHARE_WARN = 0.02


def free_cpu_pct(threads: int, cores: int) -> float | None:
    """The share of all cores a worker of ``threads`` threads leaves free (None when the cores are unknown).

    ``threads`` 0 means the runtime's default, which takes every core.
    """
    if cores <= 0:
        return None
    used = cores if threads <= 0 else min(threads, cores)
    return 100.0 * (cores - used) / cores


def machine_load(
    series: Sequence[Series], measure: PhaseSpan, threads: int = 0, cores: int = 0
) -> dict[str, Any] | None:
    """{"other_cpu_pct", "samples", "free_cpu_pct", "contended_share"} over the measure window; None unsampled.

    Each value covers the interval since the sample before it, so it is weighted by the time of that interval
    inside the window; a value read just after the window ends still covers the window's last moments.
    ``contended_share`` is the share of the window's time in intervals contended for a worker of ``threads``
    threads on ``cores`` cores (None when the cores are unknown).
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
    free = free_cpu_pct(threads, cores)
    contended = None
    if free is not None:
        contended = float(inside_ns[value[1:] > free + CONTENDED_MARGIN_PCT].sum() / total_ns)
    return {
        "other_cpu_pct": mean_pct,
        "samples": int(np.count_nonzero(inside_ns)),
        "free_cpu_pct": free,
        "contended_share": contended,
    }


def findings(load: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(validity reasons, warnings) about other processes' CPU use during the measurement."""
    if not load or load.get("other_cpu_pct") is None:
        return [], []
    pct = float(load["other_cpu_pct"])
    share = load.get("contended_share")
    text = f"other processes used {pct:.0f}% of the CPU during the measurement"
    if share:
        text += (
            f" and more than the {load['free_cpu_pct']:.0f}% the worker's threads left free for"
            f" {100 * share:.0f}% of it"
        )
    text += ": the figures are this machine's under load, not the model's on a quiet board"
    if pct >= OTHER_CPU_INVALID_PCT or (share is not None and share >= CONTENDED_SHARE_INVALID):
        return [text], []
    if pct >= OTHER_CPU_WARN_PCT or (share is not None and share >= CONTENDED_SHARE_WARN):
        return [], [text]
    return [], []
