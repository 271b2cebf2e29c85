"""`host runs ls` tells runs apart at a glance; `host runs rm` gives up a run, pending jobs included."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from host.cli import _register, app
from host.report.synthetic import synthetic_run
from host.store.open import open_store
from host.store.sqlite import PendingJob

PENDING_ONLY = "20260102-000000-dead01"


def _store_runs() -> tuple[str, str]:
    store = open_store()
    first = synthetic_run(n_devices=2, seed=0x100001)
    first.document["model"]["path"] = "/very/long/site-packages/onnx/backend/test/data/light/light_squeezenet.onnx"
    first.document.setdefault("settings", {})["threads"] = 1
    second = synthetic_run(n_devices=1, seed=2)
    store.save_run(first)
    store.save_run(second)
    store.add_pending(PendingJob(PENDING_ONLY, "local", "127.0.0.1:41449", "a" * 32, {"runs": 10}))
    store.close()
    return first.run_id, second.run_id


def test_runs_ls_shows_model_name_devices_p50_and_settings() -> None:
    first, _ = _store_runs()
    doc = open_store().load_run(first).document
    p50 = doc["devices"][0]["latency_ms"]["p50"]
    _register()

    result = CliRunner().invoke(app, ["runs", "ls"])

    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith(first))
    assert "light_squeezenet.onnx" in line and "site-packages" not in line
    assert f"{doc['devices'][0]['device']} {p50:.3g}" in line
    assert "threads=1" in line
    assert f"not stored yet, jobs still to collect: {PENDING_ONLY}" in result.output


def test_runs_rm_removes_a_run_by_prefix_and_gives_up_pending_jobs() -> None:
    first, second = _store_runs()
    _register()
    runner = CliRunner()

    removed = runner.invoke(app, ["runs", "rm", first[:17], PENDING_ONLY])
    unknown = runner.invoke(app, ["runs", "rm", "nosuchrun"])

    assert removed.exit_code == 0, removed.output
    assert f"removed run {first}" in removed.output
    assert f"removed run {PENDING_ONLY} and 1 job(s) still to collect" in removed.output
    store = open_store()
    assert [r.run_id for r in store.runs()] == [second]
    assert store.pending() == []
    assert unknown.exit_code == 1
    assert "no run 'nosuchrun'" in unknown.output
    fetched = runner.invoke(app, ["runs", "fetch", "--all"])
    assert fetched.exit_code == 0, fetched.output


def test_store_delete_keeps_other_runs_raw_samples(tmp_path: Path) -> None:
    first, second = _store_runs()
    store = open_store()
    before = store.load_run(second)

    store.delete_run(first)

    after = store.load_run(second)
    device = next(iter(before.raw))
    assert (after.raw[device].end_ns == before.raw[device].end_ns).all() and len(after.raw[device].end_ns) > 0
