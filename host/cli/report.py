"""`host report [RUN | --last] --format html|md|csv|json -o PATH`: write a report of a stored run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from host.cli.app import app
from host.cli.common import fail, open_store
from host.fleet.config import ConfigError, load_config
from host.report.formats import FORMATS, ReportError, format_for, write_report
from host.store.sqlite import StoreError


def default_grid_g_per_kwh() -> float | None:
    """The config file's ``grid_g_per_kwh`` (None when unset): the default of --grid-g-per-kwh."""
    try:
        return load_config().grid_g_per_kwh
    except ConfigError as err:
        fail(str(err))


@app.command()
def report(
    run: Annotated[str | None, typer.Argument(help="run id or unique prefix (see `host runs ls`)")] = None,
    last: Annotated[bool, typer.Option("--last", help="report the most recent run")] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help=f"{'|'.join(FORMATS)} (default: from the -o suffix)")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="file to write (default: report.html, report.md, … after the format)"),
    ] = None,
    grid_g_per_kwh: Annotated[
        float | None,
        typer.Option(min=0, help="grid carbon intensity g/kWh for the CO2e estimate (default: config grid_g_per_kwh)"),
    ] = None,
) -> None:
    """Write a report of a stored run: self-contained HTML, Markdown for a PR, CSV, or the JSON document."""
    if run and last:
        fail("give either RUN or --last, not both")
    if not run and not last:
        fail("name a run (see `host runs ls`) or pass --last")
    try:
        # Without -o the file is named after the format, so `-f csv` never overwrites report.html.
        chosen = format_for(output, fmt) if output is not None else format_for(Path("report.html"), fmt)
    except ReportError as err:
        fail(str(err))
    if output is None:
        output = Path(f"report.{chosen}")
    store = open_store()
    try:
        data = store.load_run(run if run else store.last_run_id())
    except StoreError as err:
        fail(str(err))
    finally:
        store.close()
    grid = grid_g_per_kwh if grid_g_per_kwh is not None else default_grid_g_per_kwh()
    try:
        write_report(data, output, chosen, grid_g_per_kwh=grid)
    except ReportError as err:
        fail(str(err))
    print(f"{chosen} report of run {data.run_id} written to {output}")
