"""`host compare` on single-run result documents: within-run evidence only, the noise floor, energy, CO2e."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from host.analysis.compare import compare_runs, render_markdown
from host.cli import _register, app
from host.report.synthetic import synthetic_run
from host.store.rundata import RunData


def _hungrier(run: RunData, factor: float) -> RunData:
    """The same run with every measured device's gross energy (and its interval) scaled by ``factor``."""
    doc = copy.deepcopy(run.document)
    doc["run_id"] = "candidate"
    for d in doc["devices"]:
        e = d["energy"]
        if e.get("energy_mj_per_inference") is not None:
            e["energy_mj_per_inference"] *= factor
            e["energy_mj_per_inference_ci95"] = [v * factor for v in e["energy_mj_per_inference_ci95"]]
    return RunData(document=doc, raw=run.raw)


def test_energy_regression_beyond_the_noise_floor_with_co2e_estimate() -> None:
    base = synthetic_run(n_devices=2, n_inferences=600, unpowered=0)

    result = compare_runs(base, _hungrier(base, 1.3), fail_on_regression_pct=10, grid_g_per_kwh=300)
    text = render_markdown(result)

    energy = [c for c in result.changes if c.metric == "energy/inference"]
    assert len(energy) == 2  # both powered devices: all() below is over something
    assert all(c.regression and c.test == "within-run" for c in energy)
    assert all(c.change_pct == pytest.approx(30.0) for c in energy)
    assert result.failed
    assert not any(c.regression for c in result.changes if c.metric == "latency p50")
    assert "CO2e per million inferences (estimate" in text


def test_json_files_without_samples_compare_with_the_within_run_caveat(tmp_path: Path) -> None:
    run = synthetic_run(n_devices=2, n_inferences=400, unpowered=1)
    slow = copy.deepcopy(run.document)
    lat = slow["devices"][0]["latency_ms"]
    lat["p50"] *= 1.5
    lat["p50_ci95"] = [v * 1.5 for v in lat["p50_ci95"]]
    (tmp_path / "base.json").write_text(json.dumps(run.document))
    (tmp_path / "cand.json").write_text(json.dumps(slow))
    _register()
    runner = CliRunner()

    failed = runner.invoke(
        app,
        [
            "compare",
            str(tmp_path / "base.json"),
            str(tmp_path / "cand.json"),
            "--fail-on-regression",
            "20",
            "--format",
            "md",
        ],
    )
    same = runner.invoke(
        app, ["compare", str(tmp_path / "base.json"), str(tmp_path / "base.json"), "--fail-on-regression", "20"]
    )

    assert failed.exit_code == 1, failed.output
    assert "| latency p50 (ms) |" in failed.output and "+50.0%" in failed.output
    assert "❌ regression (within-run evidence only)" in failed.output
    assert "within-run evidence only for" in failed.output and "10.0% noise floor" in failed.output
    assert "no power sensor" in failed.output  # the unpowered device's energy row
    assert same.exit_code == 0, same.output
    assert "PASS: 0 regression(s)" in same.output


def test_unknown_run_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGEPROF_DB", str(tmp_path / "runs.sqlite"))
    _register()

    result = CliRunner().invoke(app, ["compare", "nope", "nada"])

    assert result.exit_code == 1
    assert "no run 'nope'" in result.output


def test_result_files_that_are_not_documents_are_refused_in_one_line(tmp_path: Path) -> None:
    from host.analysis.compare import CompareError, load_side

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    other = tmp_path / "other.JSON"
    other.write_text(json.dumps({"runs": []}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"devices": []}))

    with pytest.raises(CompareError, match=f"^cannot read result file {broken}: "):
        load_side(str(broken), None)
    with pytest.raises(CompareError, match=rf"^{other} is not an edgeprof result document \(no 'devices'\)$"):
        load_side(str(other), None)
    missing = tmp_path / "missing.json"
    with pytest.raises(CompareError, match=f"^'{missing}' is not a result JSON file and there is no run store"):
        load_side(str(missing), None)
    loaded = load_side(str(good), None)
    assert loaded.run_id == "good.json" and loaded.raw == {}  # a document without run_id is named after its file


def test_json_says_whether_the_gate_failed() -> None:
    from host.analysis.compare import render_json

    base = synthetic_run(n_devices=2, n_inferences=600, unpowered=0)

    hungrier = json.loads(render_json(compare_runs(base, _hungrier(base, 1.3), fail_on_regression_pct=10)))
    same = json.loads(render_json(compare_runs(base, _hungrier(base, 1.0), fail_on_regression_pct=10)))

    assert hungrier["failed"] is True and len(hungrier["regressions"]) == 2
    assert same["failed"] is False and same["regressions"] == []


def test_markdown_shows_the_mann_whitney_p_of_the_raw_inferences_beside_the_verdict() -> None:
    base = synthetic_run(n_devices=1, n_inferences=600, unpowered=1)
    cand = copy.deepcopy(base)
    cand.document["run_id"] = "candidate"
    raw = cand.raw["dev00-jetson"]
    raw.end_ns = raw.start_ns + (raw.latency_ns * 1.02).astype(np.int64)  # every inference 2% slower
    cand.document["devices"][0]["latency_ms"]["p50"] *= 1.02

    md = render_markdown(compare_runs(base, cand, noise_floor_pct=5.0))

    p50 = next(r for r in md.splitlines() if r.startswith("| dev00-jetson | latency p50 (ms) |"))
    assert p50 == (
        "| dev00-jetson | latency p50 (ms) | 1.987 | 2.026 | +2.0% | [+0.9%, +3.2%] | within-run "
        "| within-run evidence only: under the 5.00% noise floor | 5.1e-06 |"
    )
