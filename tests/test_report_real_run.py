"""Every report format on a real result document: the recorded run in tests/fixtures/real_run.

The fixture is a real `host profile example:squeezenet --op-profile --repeat 2`, exported from the store
by tests/fixtures/make_real_run.py. Expected figures are recomputed from its raw arrays with numpy
(percentiles, mean, throughput, counts), or read from the document's own fields (op profile, which has
no raw form), never produced by the report code under test.
"""

from __future__ import annotations

import csv
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from real_run import REAL_RUN, load_real_run, measured_latency_ms
from typer.testing import CliRunner

from host.cli import _register, app
from host.report.formats import render
from host.store.open import open_store
from host.store.rundata import DeviceRaw, RunData


@pytest.fixture(scope="module")
def run() -> RunData:
    return load_real_run()


def _repetitions(raw: DeviceRaw) -> list[np.ndarray]:
    """Each measure phase's inference indices: the repetitions, split by the raw phase spans."""
    return [
        np.flatnonzero((raw.start_ns >= p.start_ns) & (raw.start_ns <= p.end_ns))
        for p in raw.phases
        if p.name == "measure"
    ]


def _expected(raw: DeviceRaw) -> dict[str, float]:
    """Figures recomputed from the raw arrays: pooled percentiles, throughput over the repetitions' spans."""
    lat = measured_latency_ms(raw)
    span_s = sum((raw.end_ns[i].max() - raw.start_ns[i].min()) / 1e9 for i in _repetitions(raw))
    return {
        "n": float(lat.size),
        "p50": float(np.percentile(lat, 50)),
        "p90": float(np.percentile(lat, 90)),
        "p99": float(np.percentile(lat, 99)),
        "mean": float(lat.mean()),
        "std": float(lat.std(ddof=1)),
        "min": float(lat.min()),
        "max": float(lat.max()),
        "throughput": lat.size / span_s,
    }


def _close(text: str, value: float, digits: int = 4) -> bool:
    """A figure shown to `digits` significant digits matches `value` (half a unit of the last digit)."""
    return math.isclose(float(text), value, rel_tol=0.5 * 10.0 ** (1 - digits) * 1.001)


class _Tables(HTMLParser):
    """Every table row's cell texts, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_the_fixture_is_a_small_real_run_with_repetitions_and_an_op_profile(run: RunData) -> None:
    assert sum(p.stat().st_size for p in REAL_RUN.iterdir()) < 300 * 1024
    doc = run.document
    assert doc["settings"]["repeat"] == 2 and doc["settings"]["op_profile"] is True
    assert doc["model"]["path"].endswith("light_squeezenet.onnx")
    (entry,) = doc["devices"]
    raw = run.raw[entry["device"]]
    assert entry["status"] == "ok" and entry["runtime"].startswith("onnxruntime")
    assert len(entry["repetitions"]) == 2 and [r["n"] for r in entry["repetitions"]] == [
        i.size for i in _repetitions(raw)
    ]
    assert raw.start_ns.size == entry["n_inferences"] > 0 and raw.warmup_start_ns.size == entry["n_warmup"] > 0
    assert entry["op_profile"]["by_type"] and entry["op_profile"]["top_nodes"]
    assert {s.kind for s in raw.series} >= {"rss_bytes"}


def test_the_document_agrees_with_its_raw_arrays(run: RunData) -> None:
    (entry,) = run.document["devices"]
    want = _expected(run.raw[entry["device"]])
    lat = entry["latency_ms"]
    assert entry["n_inferences"] == want["n"]
    for key in ("p50", "p90", "p99", "mean", "std", "min", "max"):
        assert lat[key] == pytest.approx(want[key], rel=1e-9), key
    assert entry["throughput_ips"] == pytest.approx(want["throughput"], rel=1e-9)


def test_json_report_is_the_stored_document(run: RunData) -> None:
    assert json.loads(render(run, "json")) == run.document


def test_csv_report_carries_the_real_figures(run: RunData) -> None:
    (entry,) = run.document["devices"]
    want = _expected(run.raw[entry["device"]])
    (row,) = csv.DictReader(io.StringIO(render(run, "csv")))

    assert row["run_id"] == run.run_id and row["device"] == entry["device"] and row["status"] == "ok"
    assert row["runtime"] == entry["runtime"] and row["execution_provider"] == entry["execution_provider"]
    assert int(row["n_inferences"]) == want["n"]
    for column, key in (
        ("latency_p50_ms", "p50"),
        ("latency_p90_ms", "p90"),
        ("latency_p99_ms", "p99"),
        ("latency_mean_ms", "mean"),
        ("latency_std_ms", "std"),
        ("latency_min_ms", "min"),
        ("latency_max_ms", "max"),
        ("throughput_ips", "throughput"),
    ):
        assert float(row[column]) == pytest.approx(want[key], rel=1e-9), column
    low, high = (float(row["latency_p50_ci95_lo_ms"]), float(row["latency_p50_ci95_hi_ms"]))
    assert [low, high] == entry["latency_ms"]["p50_ci95"] and low <= want["p50"] <= high
    assert float(row["load_time_ms"]) == entry["load_time_ms"] and float(row["peak_rss_mb"]) == entry["peak_rss_mb"]
    # No power sensor on the recording machine: every energy cell is empty, none is a made-up zero.
    energy_columns = [c for c in row if "energy" in c or c.endswith("power_w")]
    assert energy_columns and all(row[c] == "" for c in energy_columns)


def test_markdown_report_shows_the_real_figures(run: RunData) -> None:
    (entry,) = run.document["devices"]
    raw = run.raw[entry["device"]]
    want = _expected(raw)
    text = render(run, "md")

    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| {entry['device']} |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "ok" and int(cells[3]) == want["n"]
    assert (
        _close(cells[4].split(" ")[0], want["p50"]) and _close(cells[5], want["p90"]) and _close(cells[6], want["p99"])
    )
    assert _close(cells[7], want["throughput"]) and cells[8] == "no power sensor"
    # Per repetition: n and p50 from the raw split.
    reps = [ln for ln in text.splitlines() if ln.startswith(("| 1 |", "| 2 |"))]
    assert len(reps) == 2
    for rep_line, index in zip(reps, _repetitions(raw), strict=True):
        rep = [c.strip() for c in rep_line.strip("|").split("|")]
        assert int(rep[1]) == index.size
        assert _close(rep[2], float(np.percentile(measured_latency_ms(raw)[index], 50)))
    # The op profile (no raw form): every op type and its call count, as the document holds them.
    for op in entry["op_profile"]["by_type"]:
        (op_line,) = [ln for ln in text.splitlines() if ln.startswith(f"| {op['op_type']} |")]
        assert op_line.rstrip(" |").endswith(str(op["calls"])), op_line
    assert run.run_id in text


def test_html_report_shows_the_real_figures(run: RunData) -> None:
    (entry,) = run.document["devices"]
    raw = run.raw[entry["device"]]
    want = _expected(raw)
    page = render(run, "html")
    tables = _Tables()
    tables.feed(page)

    assert page.startswith("<!DOCTYPE html>") and run.run_id in page
    (summary,) = [r for r in tables.rows if r and r[0] == entry["device"]]
    assert summary[1] == "ok" and summary[2] in ("valid", "not valid") and int(summary[4]) == want["n"]
    assert _close(summary[5].split(" ")[0], want["p50"]) and _close(summary[6], want["p90"])
    assert _close(summary[7], want["p99"]) and _close(summary[8], want["throughput"])
    reps = [r for r in tables.rows if len(r) == 10 and r[0] in ("1", "2")]
    assert [int(r[1]) for r in reps] == [i.size for i in _repetitions(raw)]
    for rep, index in zip(reps, _repetitions(raw), strict=True):
        assert _close(rep[2], float(np.percentile(measured_latency_ms(raw)[index], 50)))
    for op in entry["op_profile"]["by_type"]:
        (op_row,) = [r for r in tables.rows if len(r) == 4 and r[0] == op["op_type"]]
        assert int(op_row[3]) == op["calls"] and abs(float(op_row[1]) - op["total_us"] / 1e3) <= 0.005 + 1e-9
    n_warmup = int(entry["n_warmup"])
    assert f"{n_warmup} / {int(want['n'])} inferences" in page


def test_host_report_writes_every_format_of_the_real_run_from_the_store(
    run: RunData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEPROF_DB", str(tmp_path / "runs.sqlite"))
    monkeypatch.chdir(tmp_path)
    open_store().save_run(run)
    _register()
    runner = CliRunner()
    (entry,) = run.document["devices"]
    p50 = _expected(run.raw[entry["device"]])["p50"]

    for fmt in ("html", "md", "csv", "json"):
        result = runner.invoke(app, ["report", "--last", "--format", fmt, "-o", str(tmp_path / f"out.{fmt}")])
        assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out.json").read_text()) == run.document
    (row,) = csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text()))
    assert float(row["latency_p50_ms"]) == pytest.approx(p50, rel=1e-9)
    assert f"| {entry['device']} | ok |" in (tmp_path / "out.md").read_text()
    tables = _Tables()
    tables.feed((tmp_path / "out.html").read_text())
    (summary,) = [r for r in tables.rows if r and r[0] == entry["device"]]
    assert _close(summary[5].split(" ")[0], p50)
