"""What a newcomer sees in a real terminal (issue 29): every warning, every run's validity, the columns a narrow
terminal left out, and lines that fit the width instead of wrapping mid-word.

Real `host` processes on a pseudo-terminal of a fixed width (tests/terminal.py), profiling SqueezeNet on the
embedded local agent. `--warmup 0` makes a run invalid on any machine ("no warmup inferences") and `--runs 20`
gives a warning on any machine (p99 from too few inferences): no test here depends on how busy the box is.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import console_script
from tests.terminal import Screen, run_in_terminal

INVALID = ["--runs", "20", "--min-duration", "0", "--idle", "0", "--warmup", "0", "--threads", "1", "--quiet"]


def unfolded(screen: Screen) -> list[str]:
    """The screen's lines with the folded continuation lines (a 12-space hanging indent) joined back."""
    lines: list[str] = []
    for line in screen.lines:
        if line.startswith(" " * 12) and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One store and config for the module's runs (the autouse isolation is per test)."""
    root = tmp_path_factory.mktemp("newcomer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPROF_")}
    env.update(
        EDGEPROF_DB=str(root / "runs.sqlite"),
        XDG_CACHE_HOME=str(root / "cache"),
        XDG_DATA_HOME=str(root / "data"),
        XDG_CONFIG_HOME=str(root / "config"),
    )
    yield env


@pytest.fixture(scope="module")
def invalid_at_80(home: dict[str, str], squeezenet: Path) -> Screen:
    return run_in_terminal(
        [console_script("host"), "profile", str(squeezenet), *INVALID, "--fail-on-invalid"], 80, home
    )


def test_an_invalid_run_says_invalid_in_its_row_and_why_below(invalid_at_80: Screen) -> None:
    row = next(line for line in invalid_at_80.lines if line.startswith("│ local"))
    assert row.split("│")[2].strip() == "invalid"
    lines = unfolded(invalid_at_80)
    assert any(line.startswith("invalid     local: result not valid: no warmup inferences") for line in lines), (
        invalid_at_80.text
    )


def test_warnings_are_shown_one_per_line(invalid_at_80: Screen) -> None:
    warnings = [line for line in unfolded(invalid_at_80) if line.startswith("warning     local: ")]
    assert any("p99 from 20 inferences is unreliable" in w for w in warnings), invalid_at_80.text


def test_fail_on_invalid_exits_1_saying_which_device(invalid_at_80: Screen) -> None:
    assert invalid_at_80.returncode == 1
    assert invalid_at_80.lines[-1] == "host: --fail-on-invalid: the result of local is not valid (reasons above)"


def test_at_80_columns_the_columns_left_out_are_named_and_no_line_wraps(invalid_at_80: Screen) -> None:
    dropped = next(line for line in unfolded(invalid_at_80) if line.startswith("columns"))
    assert "left out at 80 columns:" in dropped and "runtime / provider" in dropped and "load ms" in dropped
    assert max(len(line) for line in invalid_at_80.lines) <= 80, invalid_at_80.text


@pytest.fixture(scope="module")
def two_runs(home: dict[str, str], squeezenet: Path, invalid_at_80: Screen) -> tuple[str, str]:
    """The invalid float run above and an int8 run of the same model: (base id, candidate id)."""
    quantized = run_in_terminal(
        [console_script("host"), "profile", str(squeezenet), *INVALID, "--quantize", "int8"], 120, home
    )
    assert quantized.returncode == 0, quantized.text  # invalid, but no --fail-on-invalid
    assert max(len(line) for line in quantized.lines) <= 120, quantized.text
    base, cand = (next(ln.split()[1] for ln in s.lines if ln.startswith("run ")) for s in (invalid_at_80, quantized))
    return base, cand


def test_compare_of_invalid_runs_says_so_refuses_to_judge_and_fits_120_columns(
    home: dict[str, str], two_runs: tuple[str, str]
) -> None:
    base, cand = two_runs

    screen = run_in_terminal([console_script("host"), "compare", base, cand, "--fail-on-regression", "5"], 120, home)

    assert screen.returncode == 3, screen.text
    text = " ".join(line.strip() for line in screen.lines)
    assert f"NOT VALID: local, base run {base}: no warmup inferences" in text
    assert f"NOT VALID: local, candidate run {cand}: no warmup inferences" in text
    assert "DIFFERS: quantize: – (base) vs int8 (candidate)" in screen.text
    assert "NOT JUDGED: the gate does not judge results that are not valid (local)" in text
    assert max(len(line) for line in screen.lines) <= 120, screen.text  # the terminal never wraps one


def test_runs_ls_shows_validity_and_what_ran_without_cutting_at_150_columns(
    home: dict[str, str], two_runs: tuple[str, str]
) -> None:
    base, cand = two_runs

    screen = run_in_terminal([console_script("host"), "runs", "ls"], 150, home)

    header = screen.lines[0].split()
    assert header[:2] == ["run", "created"] and "valid" in header and "settings" in header
    rows = {line.split()[0]: line for line in screen.lines if line.split() and line.split()[0] in two_runs}
    for run_id in two_runs:
        assert "light_squeezenet.onnx" in rows[run_id] and " no " in rows[run_id]
        assert re.search(r"local \d+(\.\d+)?", rows[run_id]), rows[run_id]  # the p50, whole
    assert "quantize=int8-dynamic" in rows[cand] and "quantize" not in rows[base]
    assert "threads=1" in rows[base] and "runs=20" in rows[base]
    assert max(len(line) for line in screen.lines) <= 150, screen.text
    narrow = run_in_terminal([console_script("host"), "runs", "ls"], 80, home)
    assert max(len(line) for line in narrow.lines) <= 80, narrow.text
    assert narrow.lines[-1].startswith("(created (UTC) left out at 80 columns"), narrow.text
    assert any(line.startswith(cand) and "light_squeezenet.onnx" in line for line in narrow.lines), narrow.text


def test_csv_and_html_reports_and_the_csv_export_carry_validity_and_settings(
    home: dict[str, str], two_runs: tuple[str, str], tmp_path: Path
) -> None:
    base, cand = two_runs
    host = console_script("host")

    report = subprocess.run([host, "report", cand, "-f", "csv", "-o", str(tmp_path / "r.csv")], env=home)
    html = subprocess.run([host, "report", cand, "-f", "html", "-o", str(tmp_path / "r.html")], env=home)
    export = subprocess.run([host, "runs", "export", base, cand, "-f", "csv"], env=home, capture_output=True, text=True)

    assert report.returncode == html.returncode == export.returncode == 0
    (row,) = csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text()))
    assert row["valid"] == "false" and row["validity_reasons"].startswith("no warmup inferences")
    assert "p99 from 20 inferences is unreliable" in row["validity_warnings"]
    exported = list(csv.DictReader(io.StringIO(export.stdout)))
    assert [r["valid"] for r in exported] == ["false", "false"]
    assert [r["settings"] for r in exported] == ["threads=1", "quantize=int8-dynamic threads=1"]
    page = (tmp_path / "r.html").read_text()
    assert "<th>validity</th>" in page and '<td class="text invalid">not valid</td>' in page


def test_a_device_that_could_not_be_reached_is_stored_not_valid_saying_why(
    home: dict[str, str], squeezenet: Path, tmp_path: Path
) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    out = tmp_path / "r.json"

    proc = subprocess.run(
        [console_script("host"), "profile", str(squeezenet), *INVALID, "--device", address, "--json", str(out)],
        env=home,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 1
    (device,) = json.loads(out.read_text())["devices"]
    assert device["validity"]["valid"] is False and device["validity"]["reasons"] == [device["error"]]
    assert device["error"]  # the dashboard's validity cell shows this reason, not nothing


def test_a_default_fleet_in_the_working_directory_is_named_in_the_first_line(
    home: dict[str, str], squeezenet: Path, tmp_path: Path
) -> None:
    (tmp_path / "edgeprof.toml").write_text('default_fleet = "lab"\n[fleets.lab]\nagents = ["127.0.0.1:1"]\n')

    proc = subprocess.run(
        [console_script("host"), "profile", str(squeezenet), *INVALID],
        env=home,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    first = proc.stderr.splitlines()[0]
    assert first == (
        f"host: profiling on fleet 'lab', the default_fleet of {tmp_path / 'edgeprof.toml'}"
        " (--device or --fleet choose otherwise)"
    ), proc.stderr
