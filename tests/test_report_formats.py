"""Markdown, CSV and JSON reports carry the stored numbers; `host report` writes them from the store."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from host.cli import _register, app
from host.report.fields import CSV_COLUMNS
from host.report.formats import ReportError, render, write_report
from host.report.synthetic import synthetic_run
from host.store.open import open_store


@pytest.fixture
def run():  # type: ignore[no-untyped-def]
    return synthetic_run(n_devices=3, n_inferences=400, unpowered=1, failed=1)


# Where each CSV column's value lives in the result document (DESIGN.md §4), written out here: the
# expected cells must not come from CSV_COLUMNS[].read, the code under test.
CSV_DOCUMENT_PATHS: dict[str, tuple[str | int, ...]] = {
    "device": ("device",),
    "status": ("status",),
    "error": ("error",),
    "profile": ("profile",),
    "runtime": ("runtime",),
    "execution_provider": ("execution_provider",),
    "threads": ("threads",),
    "n_inferences": ("n_inferences",),
    "latency_source": ("latency_source",),
    "latency_p50_ms": ("latency_ms", "p50"),
    "latency_p50_ci95_lo_ms": ("latency_ms", "p50_ci95", 0),
    "latency_p50_ci95_hi_ms": ("latency_ms", "p50_ci95", 1),
    "latency_p90_ms": ("latency_ms", "p90"),
    "latency_p99_ms": ("latency_ms", "p99"),
    "latency_mean_ms": ("latency_ms", "mean"),
    "latency_std_ms": ("latency_ms", "std"),
    "latency_min_ms": ("latency_ms", "min"),
    "latency_max_ms": ("latency_ms", "max"),
    "throughput_ips": ("throughput_ips",),
    "load_time_ms": ("load_time_ms",),
    "peak_rss_mb": ("peak_rss_mb",),
    "energy_method": ("energy", "method"),
    "energy_sensor": ("energy", "sensor"),
    "idle_power_w": ("energy", "idle_power_w"),
    "avg_power_w": ("energy", "avg_power_w"),
    "energy_mj_per_inference": ("energy", "energy_mj_per_inference"),
    "energy_mj_per_inference_ci95_lo": ("energy", "energy_mj_per_inference_ci95", 0),
    "energy_mj_per_inference_ci95_hi": ("energy", "energy_mj_per_inference_ci95", 1),
    "dynamic_energy_mj_per_inference": ("energy", "dynamic_energy_mj_per_inference"),
    "dynamic_energy_mj_per_inference_ci95_lo": ("energy", "dynamic_energy_mj_per_inference_ci95", 0),
    "dynamic_energy_mj_per_inference_ci95_hi": ("energy", "dynamic_energy_mj_per_inference_ci95", 1),
    "max_temp_c": ("thermal", "max_temp_c"),
    "throttled": ("thermal", "throttled"),
    "valid": ("validity", "valid"),
    "validity_reasons": ("validity", "reasons"),  # lists: joined with "; "
    "validity_warnings": ("validity", "warnings"),
}


def _dig(entry: dict, path: tuple[str | int, ...]):  # type: ignore[no-untyped-def,type-arg]
    """The document's value at `path`; None where any step is missing (a failed device has no figures)."""
    value = entry
    for key in path:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return None
    return value


def test_csv_round_trips_every_stored_number_exactly(run) -> None:  # type: ignore[no-untyped-def]
    run.document["devices"][0]["validity"] = {"valid": False, "reasons": ["a", "b"], "warnings": ["w"]}
    run.document["devices"][1]["validity"] = {"valid": True, "reasons": [], "warnings": []}
    text = render(run, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))

    assert text.splitlines()[0].split(",") == ["run_id", *CSV_DOCUMENT_PATHS]
    assert [c.name for c in CSV_COLUMNS] == list(CSV_DOCUMENT_PATHS)
    assert [r["device"] for r in rows] == [d["device"] for d in run.document["devices"]]
    for row, entry in zip(rows, run.document["devices"], strict=True):
        assert row["run_id"] == run.run_id
        for name, path in CSV_DOCUMENT_PATHS.items():
            stored = _dig(entry, path)
            cell = row[name]
            if isinstance(stored, list):
                stored = "; ".join(stored) or None
            if stored is None:
                assert cell == "", name
            elif isinstance(stored, bool):
                assert cell == str(stored).lower(), name
            elif isinstance(stored, float):
                assert float(cell) == stored, name
            else:
                assert cell == str(stored), name


def test_json_report_is_the_result_document(run) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(render(run, "json")) == json.loads(json.dumps(run.document))


def test_markdown_table_shows_stored_numbers_to_four_digits(run) -> None:  # type: ignore[no-untyped-def]
    text = render(run, "md", grid_g_per_kwh=400.0)
    table = [line for line in text.splitlines() if line.startswith("| dev0")]

    assert len(table) == 3
    for line, entry in zip(table, run.document["devices"][:3], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        p50_text = cells[4].split(" ")[0]
        assert math.isclose(float(p50_text), entry["latency_ms"]["p50"], rel_tol=5e-4)
        assert math.isclose(float(cells[7]), entry["throughput_ips"], rel_tol=5e-4)
        mj = entry["energy"]["energy_mj_per_inference"]
        if mj is None:
            assert cells[8] == "no power sensor"
        else:
            assert math.isclose(float(cells[8].split(" ")[0]), mj, rel_tol=5e-4)
    assert "broken-0: UNAVAILABLE" in text
    assert "CO2e" in text and "estimate" in text


def test_unknown_format_is_one_line_report_error(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ReportError, match="unknown report format 'pdf'") as err:
        write_report(run, tmp_path / "x.html", "pdf")
    assert "\n" not in str(err.value)
    with pytest.raises(ReportError, match=r"\.html/\.md/\.csv/\.json"):
        write_report(run, tmp_path / "x.txt")


def test_format_follows_the_suffix(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    for suffix in ("html", "md", "csv", "json"):
        write_report(run, tmp_path / f"r.{suffix}")
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert json.loads((tmp_path / "r.json").read_text())["run_id"] == run.run_id
    assert (tmp_path / "r.csv").read_text().startswith("run_id,device,")


def test_cli_report_last_writes_each_format_from_the_store(tmp_path: Path, monkeypatch, run) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGEPROF_DB", str(tmp_path / "runs.sqlite"))
    monkeypatch.chdir(tmp_path)
    open_store().save_run(run)
    _register()
    runner = CliRunner()

    for fmt in ("html", "md", "csv", "json"):
        out = tmp_path / f"out.{fmt}"
        result = runner.invoke(app, ["report", "--last", "--format", fmt, "-o", str(out)])
        assert result.exit_code == 0, result.output
    html = (tmp_path / "out.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and run.run_id in html
    assert all(f">{d['device']}</td>" in html for d in run.document["devices"])
    md = (tmp_path / "out.md").read_text()
    assert run.run_id in md and len([ln for ln in md.splitlines() if ln.startswith("| dev0")]) == 3
    csv_rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert [(r["run_id"], r["device"]) for r in csv_rows] == [
        (run.run_id, d["device"]) for d in run.document["devices"]
    ]
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(run.document))
    by_prefix = runner.invoke(app, ["report", run.run_id[:18], "-o", str(tmp_path / "p.json")])
    assert by_prefix.exit_code == 0, by_prefix.output
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads((tmp_path / "out.json").read_text())
    bad = runner.invoke(app, ["report", "--last", "--format", "pdf", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1


def test_cli_report_without_output_names_the_file_after_its_format(tmp_path: Path, monkeypatch, run) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGEPROF_DB", str(tmp_path / "runs.sqlite"))
    monkeypatch.chdir(tmp_path)
    open_store().save_run(run)
    _register()
    runner = CliRunner()

    html = runner.invoke(app, ["report", "--last"])
    csv = runner.invoke(app, ["report", "--last", "-f", "csv"])
    md = runner.invoke(app, ["report", "--last", "-f", "md"])

    assert html.exit_code == csv.exit_code == md.exit_code == 0, html.output + csv.output + md.output
    assert "written to report.csv" in csv.output
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert (tmp_path / "report.csv").read_text().startswith("run_id,device,")
    assert (tmp_path / "report.md").read_text().startswith("#")
