"""The table after a run fits the terminal it is printed on and never cuts a device name or a figure."""

from __future__ import annotations

import io

import pytest

from host.report.synthetic import synthetic_run
from host.run.final_table import PIPE_WIDTH, final_table, significant

NAMES = [f"jetson-orin-nano-lab-{i:02d}.local:50051" for i in range(3)]


def _document() -> dict:  # type: ignore[type-arg]
    doc = synthetic_run(n_devices=3).document
    for name, device in zip(NAMES, doc["devices"], strict=True):
        device["device"] = name
    doc["devices"][0]["latency_ms"]["p50"] = 0.0061234  # a fast model: 3 decimals would print 0.006
    return doc


@pytest.mark.parametrize("width", [80, 100, 120])
def test_table_fits_the_terminal_width(width: int) -> None:
    out = io.StringIO()

    final_table(_document(), out, width=width)

    lines = out.getvalue().splitlines()
    assert lines and max(len(line) for line in lines) <= width
    assert "0.006123" in out.getvalue()


def test_device_names_are_whole_at_100_columns_and_never_cut_at_80() -> None:
    wide, narrow = io.StringIO(), io.StringIO()

    final_table(_document(), wide, width=100)
    final_table(_document(), narrow, width=80)

    for name in NAMES:
        assert any(name in line for line in wide.getvalue().splitlines())
    # At 80 columns a name may fold onto a second line of its cell: every character is still there.
    device_cells = "".join(
        line.split("│")[1].strip() for line in narrow.getvalue().splitlines() if line.startswith("│")
    )
    assert device_cells == "".join(NAMES)


def test_pipes_get_every_column() -> None:
    out = io.StringIO()  # not a terminal, as in CI logs

    final_table(_document(), out)

    header = next(line for line in out.getvalue().splitlines() if "device" in line)
    assert "load ms" in header and "runtime / provider" in header and "max °C" in header
    assert max(len(line) for line in out.getvalue().splitlines()) <= PIPE_WIDTH


@pytest.mark.parametrize(
    ("value", "text"), [(0.0061234, "0.006123"), (2.11, "2.110"), (296.938, "296.9"), (12345.6, "12346"), (0, "0")]
)
def test_significant_digits(value: float, text: str) -> None:
    assert significant(value) == text
