"""Other processes' CPU use during the measurement reaches the result and its validity (issue 14, item 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from host.analysis.contention import OTHER_CPU_INVALID_PCT, OTHER_CPU_WARN_PCT, findings, machine_load
from host.store.rundata import PhaseSpan, Series
from tests.conftest import console_script

FAST = ["--runs", "20", "--min-duration", "1.0", "--idle", "0", "--warmup", "2", "--threads", "1", "--quiet"]


def _series(t_s: list[float], pct: list[float]) -> Series:
    return Series("cpu_other", "cpu_other_pct", "", "procstat", np.array(t_s) * 1e9, np.array(pct, dtype=float))


def test_mean_is_weighted_by_the_time_each_value_covers_inside_the_window() -> None:
    # Values at 1..4 s cover (0,1], (1,2], (2,3], (3,4]; the window is 1.5-3.5 s.
    series = _series([0, 1, 2, 3, 4], [0, 90, 10, 30, 50])

    load = machine_load([series], PhaseSpan("measure", int(1.5e9), int(3.5e9)))

    # 0.5 s at 10%, 1 s at 30%, 0.5 s at 50% over 2 s.
    assert load is not None and abs(load["other_cpu_pct"] - (0.5 * 10 + 1 * 30 + 0.5 * 50) / 2) < 1e-9
    assert load["samples"] == 3


def test_no_series_or_no_overlap_is_not_a_figure() -> None:
    assert machine_load([], PhaseSpan("measure", 0, 10)) is None
    assert machine_load([_series([0, 1], [0, 80])], PhaseSpan("measure", int(5e9), int(6e9))) is None


def test_thresholds_make_a_warning_then_a_reason() -> None:
    quiet = findings({"other_cpu_pct": OTHER_CPU_WARN_PCT - 1})
    busy = findings({"other_cpu_pct": OTHER_CPU_WARN_PCT + 1})
    loaded = findings({"other_cpu_pct": OTHER_CPU_INVALID_PCT})

    assert quiet == ([], [])
    assert busy[0] == [] and busy[1] and "other processes used 11% of the CPU" in busy[1][0]
    assert loaded[1] == [] and loaded[0] and "other processes used 50% of the CPU" in loaded[0][0]


def test_a_busy_machine_makes_the_run_not_valid_and_says_how_busy(squeezenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    # Two busy loops per core, each in its own session: the agent starts its worker in a new session, and
    # with the kernel's autogroup scheduling each session gets an equal share of the CPU, so loops sharing the
    # test's session left the worker half the machine: about 50% other CPU, right on the line (it failed in
    # about 1 run of 3).
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(2 * (os.cpu_count() or 1))
    ]
    try:
        proc = subprocess.run(
            [console_script("host"), "profile", str(squeezenet), *FAST, "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=240,
            env=os.environ.copy(),
        )
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    (device,) = json.loads(out.read_text())["devices"]
    assert device["status"] == "ok", proc.stderr
    assert device["machine_load"]["other_cpu_pct"] >= OTHER_CPU_INVALID_PCT
    assert device["validity"]["valid"] is False
    assert any("other processes used" in r for r in device["validity"]["reasons"])
    assert "other processes used" in proc.stdout  # the final table's "result not valid" line
