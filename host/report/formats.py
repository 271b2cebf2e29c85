"""A stored run as a report file: the format from a flag or the file's suffix, rendered by its module."""

from __future__ import annotations

import json
from pathlib import Path

from host.report.errors import ReportError
from host.store.result_schema import SchemaError, check_document
from host.store.rundata import RunData

FORMATS = ("html", "md", "csv", "json")
_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json"}


def format_for(path: Path, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format the suffix of ``path`` names; ReportError otherwise."""
    if fmt is not None:
        chosen = fmt.lower().lstrip(".")
        chosen = {"markdown": "md", "htm": "html"}.get(chosen, chosen)
        if chosen not in FORMATS:
            raise ReportError(f"unknown report format '{fmt}' (formats: {', '.join(FORMATS)})")
        return chosen
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ReportError(
            f"cannot tell the report format from '{path.name}': use a .html/.md/.csv/.json name or --format"
        )
    return _SUFFIXES[suffix]


def render(run: RunData, fmt: str, grid_g_per_kwh: float | None = None) -> str:
    """The report as text in one of FORMATS; ReportError (one line) for a document off the result schema."""
    try:  # whatever a report reads has the types the schema declares (host/store/result_schema.py), as stored
        check_document(json.loads(json.dumps(run.document)))  # a fresh run's document holds tuples where JSON has lists
    except (SchemaError, TypeError) as err:
        raise ReportError(f"cannot report run {run.document.get('run_id', '?')}: malformed ({err})") from err
    if fmt == "html":
        from host.report.html import render_html

        return render_html(run, grid_g_per_kwh)
    if fmt == "md":
        from host.report.markdown import render_markdown

        return render_markdown(run, grid_g_per_kwh)
    if fmt == "csv":
        from host.report.flat import render_csv

        return render_csv(run, grid_g_per_kwh)
    if fmt == "json":
        from host.report.flat import render_json

        return render_json(run)
    raise ReportError(f"unknown report format '{fmt}' (formats: {', '.join(FORMATS)})")


def write_report(run: RunData, path: Path, fmt: str | None = None, *, grid_g_per_kwh: float | None = None) -> None:
    """Write ``run`` to ``path`` as ``fmt``, or as the format its suffix names (.html/.md/.csv/.json).

    ``grid_g_per_kwh`` adds a CO2e estimate (energy x grid carbon intensity) where energy was measured.
    """
    chosen = format_for(Path(path), fmt)
    text = render(run, chosen, grid_g_per_kwh)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as err:
        raise ReportError(f"cannot write {path}: {err.strerror}") from err


__all__ = ["FORMATS", "ReportError", "format_for", "render", "write_report"]
