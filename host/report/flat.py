"""The run as CSV (one row per device, full precision) and as JSON (the result document itself)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any, TextIO

from host.analysis.variant import variant_label
from host.report import fields as f
from host.report import generation
from host.report.errors import ReportError
from host.report.escape import csv_cell
from host.store.rundata import RunData
from host.store.strict_json import dumps


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    if isinstance(value, int):
        return str(value)
    return csv_cell(str(value))  # text can come from an agent: never a spreadsheet formula


def csv_header(grid_g_per_kwh: float | None, generative: bool = False) -> list[str]:
    extra = ["co2e_g_per_1m_inferences_estimate", "grid_g_per_kwh"] if grid_g_per_kwh is not None else []
    gen = [name for name, _ in generation.CSV_COLUMNS] if generative else []
    return ["run_id", *(c.name for c in f.CSV_COLUMNS), *extra, *gen]


def render_csv(run: RunData, grid_g_per_kwh: float | None = None) -> str:
    """Header plus one row per device; empty cells for null (no power sensor, failed device).

    A run with a generative model gets the generation columns too, and one row per device and prompt length
    (the device's own columns repeated on each), so every figure of the generation section has its cell.
    """
    devices = run.document.get("devices") or []
    generative = any(generation.rows(entry) for entry in devices)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header(grid_g_per_kwh, generative))
    for entry in devices:
        row = [run.run_id, *(_csv_value(c.read(entry)) for c in f.CSV_COLUMNS)]
        if grid_g_per_kwh is not None:
            row += [_csv_value(f.co2e_g_per_1m_inferences(entry, grid_g_per_kwh)), _csv_value(grid_g_per_kwh)]
        if not generative:
            writer.writerow(row)
            continue
        for gen_row in generation.rows(entry) or [{}]:
            writer.writerow(row + [_csv_value(f.get(gen_row, *path)) for _, path in generation.CSV_COLUMNS])
    return buffer.getvalue()


def render_json(run: RunData) -> str:
    """The stored result document, unchanged, as strict JSON (a non-finite number is a one-line ReportError)."""
    try:
        return dumps(run.document) + "\n"
    except ValueError as err:
        raise ReportError(
            f"run {run.run_id} holds a number that is not finite ({err}): strict JSON cannot carry it"
        ) from err


_FRONT = ("created_at", "model_path", "model_sha256", "settings")


def write_summary_csv(runs: Iterable[RunData], out: TextIO) -> int:
    """One row per device of every run (`host report --format csv`'s columns, plus when and which model)."""
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    for run in runs:
        rows = list(csv.reader(io.StringIO(render_csv(run))))
        if count == 0:
            writer.writerow([rows[0][0], *_FRONT, *rows[0][1:]])
        model = run.document.get("model") or {}
        front = [
            str(run.document.get("created_at", "")),
            str(model.get("path", "")),
            str(model.get("sha256", "")),
            variant_label(run.document),  # what ran: quantization, calibration, inputs, threads
        ]
        for row in rows[1:]:
            writer.writerow([row[0], *(csv_cell(v) for v in front), *row[1:]])
        count += 1
    return count
