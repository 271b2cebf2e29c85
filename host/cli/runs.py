"""`host runs ls`: the runs in the store."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from host.cli import app
from host.cli.common import open_store

runs_app = typer.Typer(help="stored runs", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("ls")
def runs_ls(
    limit: Annotated[int, typer.Option(min=1, help="how many runs, newest first")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List stored runs, newest first."""
    store = open_store()
    rows = store.runs(limit=limit)
    if as_json:
        print(json.dumps([vars(r) for r in rows], indent=2))
        return
    if not rows:
        print(f"no runs yet in {store.path}")
        return
    print(f"{'run':<26} {'created (UTC)':<26} {'devices':>7} {'ok':>3}  model")
    for r in rows:
        print(f"{r.run_id:<26} {r.created_at:<26} {r.n_devices:>7} {r.n_ok:>3}  {r.model_path}")
