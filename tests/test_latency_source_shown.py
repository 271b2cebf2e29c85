"""A phone's latency is block means, and every place that shows a latency says so (DESIGN.md §7).

The terminal table, Markdown, HTML and CSV reports and the dashboard's run list and trend all read one
result document; here one device's figures are a phone's (latency_source block_means, p90/p99 null).
"""

from __future__ import annotations

import csv
import io

import numpy as np

from host.analysis import stats
from host.dashboard.runs_view import RunFilter, render_runs
from host.dashboard.trend import render_trend, trend_points
from host.report.formats import render
from host.report.synthetic import synthetic_run
from host.run.final_table import final_table
from host.store.rundata import RunData


def _phone_run() -> RunData:
    run = synthetic_run(n_devices=2)
    phone = run.document["devices"][1]
    starts = np.arange(10, dtype=np.int64) * 1_000_000_000
    blocks = stats.latency_stats(starts, starts + np.linspace(4.1e6, 4.4e6, 10).astype(np.int64))
    phone.update(latency_source="block_means", latency_ms=blocks.to_dict(block_means=10), n_inferences=400)
    return run


def test_block_means_are_named_in_the_terminal_table_and_every_report() -> None:
    run = _phone_run()
    out = io.StringIO()

    final_table(run.document, out)
    markdown = render(run, "md")
    html = render(run, "html")
    rows = list(csv.DictReader(io.StringIO(render(run, "csv"))))

    assert "400 in 10 block means" in out.getvalue()
    assert "400 in 10 block means" in markdown and "400 in 10 block means" in html
    assert [r["latency_source"] for r in rows] == ["", "block_means"]  # the synthetic worker run predates the field
    assert rows[1]["latency_p90_ms"] == "" and rows[1]["latency_p99_ms"] == ""


def test_block_means_are_named_on_the_dashboard() -> None:
    run = _phone_run()
    phone = run.document["devices"][1]["device"]

    listing = render_runs([run.document], set(), RunFilter(), "store")
    trend = render_trend(trend_points([run.document], "mobilenet_v2.onnx", phone), "mobilenet_v2.onnx", phone, 5.0)

    assert "(median of block means)" in listing
    assert trend.count("(median of block means)") == 1


def test_block_means_latency_says_what_p50_estimates_and_has_no_tails() -> None:
    starts = np.arange(10, dtype=np.int64) * 1_000_000_000
    blocks = stats.latency_stats(starts, starts + np.linspace(4.1e6, 4.4e6, 10).astype(np.int64))

    as_blocks, as_inferences = blocks.to_dict(block_means=10), blocks.to_dict()

    assert as_blocks["p90"] is None and as_blocks["p99"] is None and as_blocks["p90_ci95"] is None
    assert "median of 10 block means" in as_blocks["estimates"] and "mean latency" in as_blocks["estimates"]
    assert as_inferences["p90"] is not None and "block" not in as_inferences["estimates"]
    # Ten values are too few to check their correlation: the interval says it assumes independence.
    assert as_blocks["p50_ci95"] is None and as_blocks["p50_ci"] is not None
    assert as_blocks["ci_assumes"] == "independent values"
