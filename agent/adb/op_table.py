"""benchmark_model's operator profile (--enable_op_profiling=true) read into op_by_type and op_top_nodes rows.

The tool prints TensorFlow's stats-calculator tables: a "Profiling Info for Benchmark Initialization" block
(ModifyGraphWithDelegate, AllocateTensors: left out), then under "Operator-wise Profiling Info for Regular
Benchmark Runs" the "Run Order", "Top by Computation Time" and "Summary by node type" tables, each a
"==== Title ====" line, a header of bracketed column names ("[node type]", "[avg ms]", "[times called]",
"[Name]"; older tools also have "[start]") and tab-separated rows, then "Timings (microseconds): count=N"
(the profiled runs). avg ms is per run, times called per run: totals are them × N.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TITLE = re.compile(r"=+ (.+?) =+")
_COLUMN = re.compile(r"\[([^\]]+)\]")
_RUNS = re.compile(r"Timings \(microseconds\): count=(\d+)")
REGULAR_RUNS = "Operator-wise Profiling Info for Regular Benchmark Runs"
#: Rows that are the interpreter's own work, not an operator of the model.
_RUNTIME_ROWS = ("ModifyGraphWithDelegate", "AllocateTensors", "Misc Runtime Ops")


@dataclass(frozen=True)
class OpRow:
    """One row as OpStat wants it: totals over the profiled runs."""

    op_type: str
    node: str
    total_us: float
    calls: int
    provider: str = "tflite"


def _strip(line: str) -> str:
    for marker in ("INFO: ", "I tflite  : "):
        if marker in line:
            return line.split(marker, 1)[1]
    return line


def _tables(lines: list[str]) -> dict[str, list[dict[str, str]]]:
    """Each table after the regular-runs marker: title -> rows as {column: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    columns: list[str] = []
    current: list[dict[str, str]] | None = None
    for line in lines:
        if m := _TITLE.fullmatch(line.strip()):
            current = tables.setdefault(m.group(1), [])
            columns = []
        elif current is not None and not columns and "[" in line:
            columns = [c.lower() for c in _COLUMN.findall(line)]
        elif current is not None and columns and line.strip():
            cells = [c.strip() for c in line.strip().split("\t") if c.strip()]
            if len(cells) < len(columns) - 1:  # the end of the table
                current = None
                continue
            # The name is last and may itself hold spaces or tabs: the rest of the line.
            row = dict(zip(columns[:-1], cells[: len(columns) - 1], strict=True))
            row[columns[-1]] = " ".join(cells[len(columns) - 1 :]) if len(cells) >= len(columns) else ""
            current.append(row)
        elif current is not None and columns and not line.strip():
            current = None
    return tables


def _number(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key, "0").rstrip("%"))
    except ValueError:
        return 0.0


def parse(output: str) -> tuple[list[OpRow], list[OpRow]]:
    """(by op type, top nodes) from the regular runs' tables; ([], []) when the output has none."""
    lines = [_strip(line) for line in output.splitlines()]
    start = next((i for i, line in enumerate(lines) if REGULAR_RUNS in line), None)
    if start is None:
        return [], []
    rest = lines[start + 1 :]
    runs = next((int(m.group(1)) for line in rest if (m := _RUNS.search(line))), 1)
    tables = _tables(rest)
    by_type = [
        OpRow(
            row["node type"],
            "",
            _number(row, "avg ms") * 1000 * runs,
            int(_number(row, "times called") or _number(row, "count")) * runs,
        )
        for row in tables.get("Summary by node type", [])
        if row.get("node type") not in _RUNTIME_ROWS
    ]
    top = [
        OpRow(
            row["node type"],
            row.get("name", ""),
            _number(row, "avg ms") * 1000 * runs,
            int(max(1, _number(row, "times called"))) * runs,
        )
        for row in tables.get("Top by Computation Time", [])
        if row.get("node type") not in _RUNTIME_ROWS
    ]
    by_type.sort(key=lambda r: r.total_us, reverse=True)
    top.sort(key=lambda r: r.total_us, reverse=True)
    return by_type, top
