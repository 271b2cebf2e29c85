"""What a newcomer sees in a real terminal (issue 29): every warning, every run's validity, the columns a narrow
terminal left out, and lines that fit the width instead of wrapping mid-word.

Real `host` processes on a pseudo-terminal of a fixed width (tests/terminal.py), profiling SqueezeNet on the
embedded local agent. `--warmup 0` makes a run invalid on any machine ("no warmup inferences") and `--runs 20`
gives a warning on any machine (p99 from too few inferences): no test here depends on how busy the box is.
"""

from __future__ import annotations

import os
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
    assert any(
        line.startswith("invalid     local: result not valid: no warmup inferences") for line in lines
    ), invalid_at_80.text


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
