"""`host compare` of single runs whose noise wanders beyond what they resolve (issue 24's withheld intervals).

A run whose latency steps or drifts more slowly than it can resolve gets no 95% interval of its own. Such a run
is still judged, against the figure on its contiguous segments (within-run evidence, labelled so), and a gate
with no interval at all to test a change worse than it says NOT JUDGED instead of PASS.
"""

from __future__ import annotations

import copy
import json

import numpy as np

from host.analysis.compare import EXIT_NOT_JUDGED, compare_runs, render_json, render_text
from host.analysis.compare_metrics import MetricChange
from host.analysis.intervals import quantile_interval
from host.report.synthetic import synthetic_run
from host.store.rundata import RunData

N = 600


def _wandering(run_id: str, scale: float, seed: int) -> RunData:
    """A one-device run of N inferences around 4 ms with 3% AR(0.5) jitter and a +8% step at 70% of the run."""
    run = synthetic_run(n_devices=1, n_inferences=N, seed=seed, unpowered=1)
    run.document["run_id"] = run_id
    entry = run.document["devices"][0]
    raw = run.raw[entry["device"]]
    rng = np.random.default_rng(seed)
    jitter = np.zeros(N)
    for i in range(1, N):
        jitter[i] = 0.5 * jitter[i - 1] + rng.normal(0.0, 0.03 * np.sqrt(1 - 0.25))
    level = np.where(np.arange(N) < 0.7 * N, 1.0, 1.08)
    latency_ms = 4.0 * scale * level * np.exp(jitter)
    order = np.argsort(raw.start_ns, kind="stable")
    raw.end_ns[order] = raw.start_ns[order] + (latency_ms * 1e6).astype(np.int64)
    entry["latency_ms"]["p50"] = float(np.median(latency_ms))
    entry["latency_ms"]["p50_ci95"] = None
    return run


def _p50(result_changes: list[MetricChange]) -> MetricChange:
    return next(c for c in result_changes if c.metric == "latency p50")


def test_a_run_that_steps_has_no_interval_of_its_own() -> None:
    """The premise: the step outlasts what 600 inferences resolve, so no 95% p50 interval is claimed."""
    run = _wandering("base-01", 1.0, seed=3)
    raw = next(iter(run.raw.values()))
    order = np.argsort(raw.start_ns, kind="stable")

    assert quantile_interval(raw.latency_ns[order] / 1e6, 0.5).as_ci95() is None


def test_a_slower_candidate_is_judged_on_the_runs_segments_and_fails_the_gate() -> None:
    base, cand = _wandering("base-01", 1.0, seed=3), _wandering("cand-02", 1.5, seed=4)

    result = compare_runs(base, cand, fail_on_regression_pct=15)

    p50 = _p50(result.changes)
    assert p50.test == "within-run" and p50.ci_pct is not None and p50.change_pct is not None, p50
    assert 35.0 < p50.ci_pct[0] < p50.change_pct < p50.ci_pct[1] < 65.0, p50
    assert "6 + 6 segments" in p50.note and "no interval of its own" in p50.note
    assert p50.regression and result.failed and result.exit_code == 1
    assert "❌ regression (within-run evidence only: no interval of its own" in render_text(result)


def test_an_a_a_pair_of_wandering_runs_passes() -> None:
    base, cand = _wandering("base-01", 1.0, seed=3), _wandering("cand-02", 1.0, seed=5)

    result = compare_runs(base, cand, fail_on_regression_pct=5)

    p50 = _p50(result.changes)
    assert p50.ci_pct is not None and p50.ci_pct[0] < 0.0 < p50.ci_pct[1], p50
    assert not result.failed and not result.refused and result.exit_code == 0


def _no_raw(run: RunData) -> RunData:
    """The same run as a result file: the document without raw inferences (compare a.json b.json)."""
    return RunData(copy.deepcopy(run.document))


def test_a_change_worse_than_the_gate_with_no_interval_to_test_is_not_judged() -> None:
    base, cand = _no_raw(_wandering("base-01", 1.0, seed=3)), _no_raw(_wandering("cand-02", 1.5, seed=4))

    result = compare_runs(base, cand, fail_on_regression_pct=15)
    text, as_json = render_text(result), json.loads(render_json(result))

    assert _p50(result.changes).ci_pct is None
    assert not result.failed and result.refused and result.exit_code == EXIT_NOT_JUDGED
    last = text.splitlines()[-1]
    assert last.startswith("NOT JUDGED: worse than the 15.0% gate with no interval to test it")
    assert "latency p50 +" in last and "host ab" in last
    device = base.document["devices"][0]["device"]
    assert as_json["refused"] is True and as_json["untested"] == [f"{device} latency p50"]


def test_no_interval_for_an_improvement_or_a_change_within_the_gate_still_passes() -> None:
    base = _no_raw(_wandering("base-01", 1.0, seed=3))
    faster, slightly = _no_raw(_wandering("cand-02", 0.6, seed=4)), _no_raw(_wandering("cand-03", 1.03, seed=4))

    for cand in (faster, slightly):
        result = compare_runs(base, cand, fail_on_regression_pct=15)
        assert not result.refused and result.exit_code == 0, render_text(result)
        assert render_text(result).splitlines()[-1].startswith("PASS")
