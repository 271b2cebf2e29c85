"""`host runs export` / `host runs import`: runs move between a SQLite store and PostgreSQL, samples included."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from host.report.synthetic import synthetic_run
from host.store.open import open_store
from host.store.rundata import RunData
from tests.conftest import console_script


def host(*args: str, db: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("host"), "runs", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "EDGEPROF_DB": db},
        timeout=120,
    )


def _runs() -> list[RunData]:
    runs = []
    for day, failed in ((1, 0), (2, 1), (3, 0)):
        run = synthetic_run(n_devices=2, n_inferences=500, seed=day, failed=failed)
        run.document.update(run_id=f"2026030{day}-000000-00000{day}", created_at=f"2026-03-0{day}T10:00:00+00:00")
        run.document["model"]["path"] = "models/resnet.onnx" if day == 3 else "models/mobilenet_v2.onnx"
        runs.append(run)
    runs[1].document["devices"][-1]["error"] = '=HYPERLINK("http://x")'  # an agent's text, in a CSV cell
    return runs


def _same_samples(a: RunData, b: RunData) -> None:
    assert a.document == b.document
    assert set(a.raw) <= set(b.raw)  # a loaded run also has an empty entry for each failed device
    assert all(len(b.raw[d].end_ns) == 0 for d in set(b.raw) - set(a.raw))
    for device, raw in a.raw.items():
        other = b.raw[device]
        for name in ("start_ns", "end_ns", "warmup_start_ns", "warmup_end_ns"):
            assert np.array_equal(getattr(raw, name), getattr(other, name)), (device, name)
        mine, theirs = sorted(raw.series, key=lambda s: s.name), sorted(other.series, key=lambda s: s.name)
        assert [(s.name, s.kind, s.role, s.sensor) for s in mine] == [
            (s.name, s.kind, s.role, s.sensor) for s in theirs
        ]
        for x, y in zip(mine, theirs, strict=True):
            assert np.array_equal(x.t_ns, y.t_ns) and np.array_equal(x.value, y.value)


def test_runs_round_trip_from_sqlite_through_postgresql_and_back(tmp_path: Path, pg_url: str) -> None:
    laptop, back = str(tmp_path / "laptop.sqlite"), str(tmp_path / "back.sqlite")
    runs = _runs()
    store = open_store(laptop)
    for run in runs:
        store.save_run(run)
    exported = tmp_path / "runs.jsonl"

    out = host("export", "--all", "-o", str(exported), db=laptop)
    assert out.returncode == 0, out.stderr
    assert len(exported.read_text().splitlines()) == 3
    imported = host("import", str(exported), db=pg_url)
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 run(s)" in imported.stdout
    again = host("export", "--all", db=pg_url)  # to stdout
    into_sqlite = host("import", "-", db=back, stdin=again.stdout)

    assert again.stdout == exported.read_text()  # byte for byte, oldest first
    assert into_sqlite.returncode == 0, into_sqlite.stderr
    for run in runs:
        _same_samples(run, open_store(pg_url).load_run(run.run_id))
        _same_samples(run, open_store(back).load_run(run.run_id))


def test_import_skips_runs_already_stored_unless_replace(tmp_path: Path) -> None:
    source, target = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    runs = _runs()
    for run in runs:
        open_store(source).save_run(run)
    line = host("export", runs[0].run_id, db=source).stdout
    changed = runs[0]
    changed.document["settings"]["threads"] = 99
    open_store(target).save_run(changed)

    skipped = host("import", "-", db=target, stdin=line)
    assert skipped.returncode == 0 and "imported 0 run(s)" in skipped.stdout and "skipped 1" in skipped.stdout
    assert open_store(target).load_run(changed.run_id).document["settings"]["threads"] == 99
    replaced = host("import", "-", "--replace", db=target, stdin=line)
    assert replaced.returncode == 0 and "imported 1 run(s)" in replaced.stdout
    assert open_store(target).load_run(changed.run_id).document["settings"]["threads"] == 2


def test_export_selects_by_date_and_model(tmp_path: Path) -> None:
    db = str(tmp_path / "a.sqlite")
    for run in _runs():
        open_store(db).save_run(run)

    by_date = host("export", "--since", "2026-03-02", "--until", "2026-03-02", db=db)
    by_model = host("export", "--model", "mobilenet", db=db)
    nothing = host("export", db=db)

    assert [line[:120].count("20260302-000000-000002") for line in by_date.stdout.splitlines()] == [1]
    assert len(by_model.stdout.splitlines()) == 2 and "resnet" not in by_model.stdout
    assert nothing.returncode == 1 and nothing.stderr.count("\n") == 1 and "--all" in nothing.stderr


def test_csv_export_has_a_row_per_device_with_formulas_defused(tmp_path: Path) -> None:
    db = str(tmp_path / "a.sqlite")
    for run in _runs():
        open_store(db).save_run(run)

    out = host("export", "--all", "--format", "csv", db=db)

    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert out.returncode == 0 and len(rows) == 2 + 3 + 2
    assert [r["run_id"] for r in rows][:2] == ["20260301-000000-000001"] * 2
    assert rows[0]["created_at"] == "2026-03-01T10:00:00+00:00" and rows[0]["model_path"] == "models/mobilenet_v2.onnx"
    error = next(r["error"] for r in rows if r["error"])
    assert not error.startswith("=")  # never a spreadsheet formula


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not JSON"),
        ('{"format": "other"}', "line 2: not an exported run"),
        ('{"format": "edgeprof-run", "version": 9}', "line 2: export version 9"),
    ],
)
def test_a_bad_line_is_one_line_and_nothing_is_imported(tmp_path: Path, line: str, message: str) -> None:
    source, target = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    open_store(source).save_run(_runs()[0])
    good = host("export", "--all", db=source).stdout

    out = host("import", "-", db=target, stdin=good + line + "\n")

    assert out.returncode == 1 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert open_store(target).runs() == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda devices: devices[0].pop("device"), "line 1: device entry 1 of the document has no device name"),
        (lambda devices: devices.append("pi"), "line 1: device entry 3 of the document has no device name"),
        (lambda devices: devices[1].update(device=devices[0]["device"]), "appears twice in the document"),
    ],
    ids=["no name", "not an object", "a name twice"],
)
def test_a_device_entry_without_a_unique_name_is_refused(
    tmp_path: Path, damage: Callable[[list[Any]], Any], message: str
) -> None:
    # Stored, such a run could not be loaded again: its arrays are kept by device name.
    source, target = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    open_store(source).save_run(_runs()[0])
    line = json.loads(host("export", "--all", db=source).stdout)
    assert len(line["document"]["devices"]) == 2
    damage(line["document"]["devices"])

    out = host("import", "-", db=target, stdin=json.dumps(line) + "\n")

    assert out.returncode == 1 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert open_store(target).runs() == []


def test_damaged_arrays_are_refused(tmp_path: Path) -> None:
    source, target = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    open_store(source).save_run(_runs()[0])
    good = host("export", "--all", db=source).stdout
    line = json.loads(good)
    device = next(iter(line["raw"].values()))
    device["end_ns"] = base64.b64encode(base64.b64decode(device["end_ns"]) + bytes(8)).decode()  # one value more
    damaged = json.dumps(line)

    out = host("import", "-", db=target, stdin=damaged)

    assert out.returncode == 1 and "start and end arrays differ in length" in out.stderr
