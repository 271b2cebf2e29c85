"""One declared schema for the result document: import refuses what breaks it (naming the field), and a run an
older store already holds malformed is skipped with one line by `runs ls`, reports, export and the dashboard."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from host.report.synthetic import synthetic_run
from host.store.open import open_store
from host.store.rundata import RunData
from host.store.transfer import TransferError, read_runs, run_line
from tests.conftest import console_script

GOOD, BAD = "20260301-000000-000001", "20260302-000000-000002"


def host(*args: str, db: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("host"), *args], input=stdin, capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "EDGEPROF_DB": db}, timeout=120,
    )  # fmt: skip


def _run(run_id: str, day: int) -> RunData:
    run = synthetic_run(n_devices=2, n_inferences=200, seed=day)
    run.document.update(run_id=run_id, created_at=f"2026-03-0{day}T10:00:00+00:00")
    return run


def _line(damage: Callable[[dict[str, Any]], Any]) -> str:
    line = json.loads(run_line(_run(BAD, 2)))
    damage(line["document"])
    return json.dumps(line)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d["devices"][0]["latency_ms"].update(p50="zzz"), "document.devices.0.latency_ms.p50: Input should"),
        (lambda d: d["devices"][1].update(status=["ok"]), "document.devices.1.status: Input should be 'ok' or 'error'"),
        (lambda d: d["devices"][0]["energy"].update(avg_power_w=True), "document.devices.0.energy.avg_power_w"),
        (lambda d: d["devices"][0].update(validity={"valid": True, "reasons": "not a list"}), "validity.reasons"),
        (lambda d: d["model"].update(size_bytes=-1), "document.model.size_bytes: Input should be greater than"),
    ],
    ids=["latency text", "status list", "power bool", "reasons text", "negative size"],
)
def test_import_refuses_a_field_off_the_schema_naming_its_path(damage: Callable[[Any], Any], message: str) -> None:
    with pytest.raises(TransferError) as refused:
        list(read_runs([run_line(_run(GOOD, 1)), _line(damage)]))

    assert str(refused.value).startswith("line 2: ") and message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_import_refuses_nan_infinity_deep_nesting_and_a_run_id_twice_each_in_one_line(tmp_path: Path) -> None:
    db = str(tmp_path / "runs.sqlite")
    good = run_line(_run(GOOD, 1))
    nan = good.replace('"p50":', '"p50":NaN,"was":', 1)
    infinite = good.replace('"p90":', '"p90":-Infinity,"was":', 1)
    deep = good[:-1] + ',"x":' + "[" * 200_000 + "]" * 200_000 + "}"
    twice = good + "\n" + run_line(_run(GOOD, 1))

    results = {name: host("runs", "import", "-", db=db, stdin=text + "\n")
               for name, text in [("nan", nan), ("inf", infinite), ("deep", deep), ("twice", twice)]}  # fmt: skip

    for name, out in results.items():
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, (name, out)
    assert "line 1: holds NaN: not strict JSON" in results["nan"].stderr
    assert "line 1: holds -Infinity" in results["inf"].stderr
    assert "line 1: nested too deep" in results["deep"].stderr
    assert f"line 2: run {GOOD} is also on line 1" in results["twice"].stderr  # was "imported 2", one replaced
    assert open_store(db).runs() == []


@pytest.fixture
def store_with_a_malformed_run(tmp_path: Path) -> str:
    """A store from before the schema: one good run, one whose document an old import let through."""
    db = str(tmp_path / "runs.sqlite")
    store = open_store(db)
    store.save_run(_run(GOOD, 1))
    store.save_run(_run(BAD, 2))
    bad = _run(BAD, 2).document
    bad["devices"][0]["latency_ms"]["p50"] = "zzz"
    bad["devices"][1]["status"] = ["ok"]
    store._run("UPDATE runs SET document = ? WHERE run_id = ?", (json.dumps(bad), BAD))
    store.close()
    return db


def test_runs_ls_report_and_export_skip_a_malformed_stored_run_with_one_line(
    store_with_a_malformed_run: str, tmp_path: Path
) -> None:
    db = store_with_a_malformed_run

    listed = host("runs", "ls", db=db)
    report_bad = host("report", BAD, "-o", str(tmp_path / "bad.html"), db=db)
    report_good = host("report", GOOD, "-o", str(tmp_path / "good.md"), db=db)
    exported = host("runs", "export", "--all", db=db)

    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr  # crashed before
    lines = {ln.split()[0]: ln for ln in listed.stdout.splitlines()[1:] if ln.strip()}
    assert "skipped: stored malformed (devices.0.latency_ms.p50: Input should be a valid number" in lines[BAD]
    assert f"`host runs rm {BAD}` removes it" in lines[BAD] and "1/2" not in lines[BAD]
    assert "2/2" in lines[GOOD]
    assert report_bad.returncode == 1 and report_bad.stderr.count("\n") == 1 and "Traceback" not in report_bad.stderr
    assert f"run {BAD} in" in report_bad.stderr and "is malformed (devices.0.latency_ms.p50" in report_bad.stderr
    assert report_good.returncode == 0 and (tmp_path / "good.md").exists()
    assert exported.returncode == 0
    assert [json.loads(ln)["document"]["run_id"] for ln in exported.stdout.splitlines()] == [GOOD]


def test_dashboard_index_lists_the_good_runs_and_one_line_for_the_malformed(store_with_a_malformed_run: str) -> None:
    from host.dashboard.serve import Dashboard, ServeOptions

    store = open_store(store_with_a_malformed_run)
    try:
        dashboard = Dashboard(store, ServeOptions(listen="127.0.0.1:0"))
        index = dashboard.render("/", {})
        trends = dashboard.render("/trends", {})
        run_page = dashboard.render(f"/runs/{BAD}", {})
    finally:
        store.close()

    assert index[0] == 200 and GOOD in index[1] and f"{BAD} (devices.0.latency_ms.p50" in index[1]  # 500 before
    assert trends[0] == 200
    assert run_page[0] == 404 and "is malformed" in run_page[1]


def test_every_document_the_host_writes_follows_the_schema() -> None:
    from host.store.result_schema import check_document

    fixture = json.loads((Path(__file__).parent / "fixtures" / "real_run" / "document.json").read_text())
    for document in (fixture, _run(GOOD, 1).document, synthetic_run(failed=2).document):
        assert check_document(document) is document
