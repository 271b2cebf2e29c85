"""Every output escapes text that agents (or imported documents) supply: HTML, Markdown, CSV, terminal.

Each text field gets its own marker tag, so a field that one format forgets to escape is named by the test.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from host.report.escape import csv_cell, markdown_text, terminal_text
from host.report.formats import ReportError, render
from host.report.synthetic import synthetic_run
from host.run.final_table import final_table
from host.run.profiling import DeviceProgress
from host.run.progress import PlainProgress
from host.store.rundata import RunData


def tag(field: str) -> str:
    return f'<b id="{field}">'


def hostile_run() -> RunData:
    """A stored run whose every text field carries markup an agent could have sent."""
    run = synthetic_run(n_devices=2, n_inferences=200, unpowered=1, failed=1)
    ok, unpowered, failed = run.document["devices"]
    for entry in (ok, unpowered):
        raw = run.raw.pop(entry["device"])
        entry["device"] = raw.device = tag("device") + entry["device"]
        run.raw[entry["device"]] = raw
    failed["device"] = tag("failed-device")
    failed["error"] = tag("error") + "\n# heading | cell"
    run.document["model"]["path"] = f"models/{tag('model')}.onnx"
    ok["runtime"] = tag("runtime")
    ok["execution_provider"] = tag("provider")
    ok["execution_providers"] = [tag("provider")]
    ok["profile"] = tag("profile")
    ok["address"] = tag("address")
    ok["validity"] = {"valid": False, "reasons": [tag("reason")], "warnings": [tag("warning")]}
    ok["thermal"]["throttled"] = True
    ok["thermal"]["throttle_reason"] = tag("throttle")
    ok["board"].update(hostname=tag("hostname"), board=tag("board"), os=tag("os"), cpu_model=tag("cpu"))
    ok["board"]["runtimes"] = {tag("rt-name"): tag("rt-version")}
    ok["board"]["sensors"] = [{"name": tag("sensor"), "kind": "power_mw", "role": "total", "sensor": "ina3221"}]
    ok["inputs"] = [{"name": tag("input"), "dtype": "float32", "shape": [1, 3]}]
    ok["recipe"] = {"target_format": tag("format"), "steps": [tag("step")]}
    ok["op_profile"] = {
        "by_type": [{"op_type": tag("op-type"), "node": None, "total_us": 10.0, "calls": 1, "provider": "cpu"}],
        "top_nodes": [{"op_type": "Conv", "node": tag("node"), "total_us": 10.0, "calls": 1, "provider": "cpu"}],
    }
    return run


HTML_FIELDS = (
    "device",
    "failed-device",
    "error",
    "model",
    "runtime",
    "provider",
    "profile",
    "address",
    "reason",
    "warning",
    "throttle",
    "board",
    "os",
    "cpu",
    "rt-name",
    "rt-version",
    "sensor",
    "input",
    "format",
    "step",
    "op-type",
    "node",
)


@pytest.mark.parametrize("field", HTML_FIELDS)
def test_html_report_escapes_every_text_field(field: str) -> None:
    html = render(hostile_run(), "html")

    assert tag(field) not in html
    assert f"&lt;b id=&quot;{field}&quot;&gt;" in html


MARKDOWN_FIELDS = ("device", "failed-device", "error", "runtime", "provider", "reason", "op-type")


@pytest.mark.parametrize("field", MARKDOWN_FIELDS)
def test_markdown_report_escapes_every_text_field(field: str) -> None:
    md = render(hostile_run(), "md")

    assert tag(field) not in md
    assert f'&lt;b id="{field}"&gt;' in md


def test_markdown_keeps_agent_text_inside_its_line_and_cell() -> None:
    md = render(hostile_run(), "md")

    assert not [line for line in md.splitlines() if line.startswith("# heading")]
    error_line = next(line for line in md.splitlines() if "❌" in line)
    assert "# heading \\| cell" in error_line
    assert f"`{tag('model')}.onnx`" in md  # a code span shows markup as text
    assert markdown_text("a`b*c*_d_[e](f)~g~|h") == "a\\`b\\*c\\*\\_d\\_\\[e\\](f)\\~g\\~\\|h"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_text_that_would_be_a_formula_gets_an_apostrophe(start: str) -> None:
    run = hostile_run()
    entry = run.document["devices"][0]
    entry["runtime"] = f'{start}HYPERLINK("http://evil.example","x")'
    entry["energy"]["idle_power_w"] = -0.25  # a number of ours stays a number

    rows = list(csv.DictReader(io.StringIO(render(run, "csv"))))

    assert rows[0]["runtime"] == f'\'{start}HYPERLINK("http://evil.example","x")'
    assert rows[0]["idle_power_w"] == "-0.25"
    assert csv_cell("plain") == "plain"


def test_json_report_refuses_a_stored_document_with_nan() -> None:
    run = hostile_run()
    assert json.loads(render(run, "json"), parse_constant=pytest.fail)["devices"][0]["device"] == tag("device") + (
        "dev00-jetson"
    )
    run.document["devices"][0]["latency_ms"]["p50"] = float("nan")

    with pytest.raises(ReportError, match="not finite") as err:
        render(run, "json")
    assert "\n" not in str(err.value)


HOSTILE_TERMINAL = "\x1b]0;pwned\x07\x1b[2J[red]boom[/red]\x9b31m\u202egnp.exe\nsecond line\x00"


def test_terminal_text_strips_escape_sequences_and_shows_control_characters() -> None:
    assert terminal_text(HOSTILE_TERMINAL) == "[red]boom[/red]\\u202egnp.exe second line\\u0000"


def test_final_table_prints_agent_text_inert() -> None:
    document: dict[str, Any] = {
        "run_id": "r1",
        "model": {"path": "m.onnx"},
        "devices": [
            {"device": "[bold]board[/bold]", "status": "error", "error": HOSTILE_TERMINAL},
            {
                "device": "ok-board",
                "status": "ok",
                "runtime": "[link=http://evil.example]ort[/link]",
                "n_inferences": 1,
            },
        ],
    }
    out = io.StringIO()

    final_table(document, out)

    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text and "\x00" not in text
    assert "│ [bold]board[" in text and "│ [link=http:/" in text  # markup shown as text (cut to the column)
    error_lines = [line for line in text.splitlines() if line.startswith("error")]
    assert error_lines == ["error       [bold]board[/bold]: [red]boom[/red]\\u202egnp.exe second line\\u0000"]


def test_plain_progress_prints_agent_errors_inert() -> None:
    out = io.StringIO()
    progress = PlainProgress(out)

    progress(DeviceProgress("board\x1b[31m", phase="failed", status="error", error=HOSTILE_TERMINAL))

    assert out.getvalue() == "board: failed: [red]boom[/red]\\u202egnp.exe second line\\u0000\n"
