"""benchmark_model's operator profile (--enable_op_profiling=true) read into op_by_type and op_top_nodes rows.

The tool prints TensorFlow's stats-calculator tables: a "Profiling Info for Benchmark Initialization" block
(ModifyGraphWithDelegate, AllocateTensors: left out), then under "Operator-wise Profiling Info for Regular
Benchmark Runs" the "Run Order", "Top by Computation Time" and "Summary by node type" tables, each a
"==== Title ====" line, a header of bracketed column names ("[node type]", "[avg ms]", "[times called]",
"[Name]"; older tools also have "[start]") and tab-separated rows, then "Timings (microseconds): count=N"
(the profiled runs). avg ms is per run, times called per run: totals are them × N. Tools before TF 2.3 print
the tables without the section titles. Read back from logcat or copied from a terminal, the tabs are spaces
and every line may carry a log prefix (agent/adb/log_lines.py): both read the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.adb import log_lines

_TITLE = re.compile(r"=+ (.+?) =+")
_COLUMN = re.compile(r"\[([^\]]+)\]")
_RUNS = re.compile(r"Timings \(microseconds\): count=(\d+)")
_NUMERIC = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?")
REGULAR_RUNS = "Operator-wise Profiling Info for Regular Benchmark Runs"
INITIALIZATION = "Profiling Info for Benchmark Initialization"
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


def _cells(line: str, columns: list[str]) -> list[str] | None:
    """A row's cells: tab-separated as the tool prints it, or space-aligned as a terminal or logcat shows it.

    Space-aligned, the first column (the node type, which may hold spaces: "Misc Runtime Ops") runs up to the
    first number, the numeric columns follow one word each, and the last column (the name) is the rest.
    None where the line is not a row of this table (its end).
    """
    if "\t" in line:
        cells = [c.strip() for c in line.strip().split("\t") if c.strip()]
        if len(cells) < len(columns) - 1:
            return None
        named = len(cells) >= len(columns)
        return [*cells[: len(columns) - 1], " ".join(cells[len(columns) - 1 :]) if named else ""]
    words = line.split()
    first_number = next((i for i, w in enumerate(words) if _NUMERIC.fullmatch(w)), None)
    if not first_number:
        return None
    numeric = len(columns) - (2 if columns[-1] == "name" else 1)
    values = words[first_number : first_number + numeric]
    if len(values) < numeric or not all(_NUMERIC.fullmatch(v) for v in values):
        return None
    cells = [" ".join(words[:first_number]), *values]
    if columns[-1] == "name":
        cells.append(" ".join(words[first_number + numeric :]))
    return cells


def tables(output: str) -> dict[str, list[dict[str, str]]]:
    """Every table in the output, by title: rows as {column: cell}, column names lower-cased ("avg ms")."""
    return _tables([log_lines.message(line) for line in output.splitlines()])


def _tables(lines: list[str]) -> dict[str, list[dict[str, str]]]:
    """Each table in ``lines``: title -> rows as {column: cell}; a later table of the same title replaces it."""
    tables: dict[str, list[dict[str, str]]] = {}
    columns: list[str] = []
    current: list[dict[str, str]] | None = None
    for line in lines:
        if m := _TITLE.fullmatch(line.strip()):
            current = tables[m.group(1)] = []
            columns = []
        elif current is not None and not columns and "[" in line:
            columns = [c.lower() for c in _COLUMN.findall(line)]
        elif current is not None and columns and line.strip():
            cells = _cells(line, columns)
            if cells is None:  # the end of the table
                current = None
                continue
            current.append(dict(zip(columns, cells, strict=False)))
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
    lines = [log_lines.message(line) for line in output.splitlines()]
    start = next((i for i, line in enumerate(lines) if REGULAR_RUNS in line), None)
    if start is None and any(INITIALIZATION in line for line in lines):
        return [], []  # only the initialization's tables: the profiled runs are missing
    rest = lines if start is None else lines[start + 1 :]  # tools before TF 2.3 print no section titles
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
