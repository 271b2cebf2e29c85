"""`host runs ls|rm`: the runs in the store, told apart at a glance, and removing one."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Annotated, Any

import typer

from host.cli import app
from host.cli.common import fail, open_store
from host.report.escape import terminal_text
from host.store import StoreError

runs_app = typer.Typer(help="stored runs", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

#: Settings shown in `runs ls` when they differ from `host profile`'s defaults (what tells runs apart).
_SETTING_LABELS = (("threads", "threads", 0), ("runs", "runs", 100), ("repeat", "repeat", 1))


def model_name(path: str) -> str:
    """`light_squeezenet.onnx`, not the site-packages path it came from."""
    return terminal_text(PurePath(path).name or path)  # paths come from documents imported from elsewhere too


def _p50_cell(document: dict[str, Any]) -> str:
    """p50 per ok device, `name 2.11` each; `-` when none succeeded."""
    cells = []
    for device in document.get("devices", []):
        p50 = (device.get("latency_ms") or {}).get("p50")
        if device.get("status") == "ok" and isinstance(p50, int | float):
            cells.append(f"{terminal_text(device.get('device', '?'))} {p50:.3g}")
    return ", ".join(cells) or "-"


def _settings_cell(document: dict[str, Any]) -> str:
    settings = document.get("settings") or {}
    shown = [
        f"{label}={settings[key]}" for key, label, default in _SETTING_LABELS if settings.get(key, default) != default
    ]
    if settings.get("inputs_npz"):
        shown.append("inputs=npz")
    return " ".join(shown)


@runs_app.command("ls")
def runs_ls(
    limit: Annotated[int, typer.Option(min=1, help="how many runs, newest first")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List stored runs, newest first: model, devices ok/all, p50 ms per device, non-default settings."""
    store = open_store()
    try:
        rows = store.runs(limit=limit)
        documents = store.documents([r.run_id for r in rows])
        pending = {job.run_id for job in store.pending()}
    finally:
        store.close()
    if as_json:
        print(json.dumps([{**vars(r), "pending_jobs": r.run_id in pending} for r in rows], indent=2))
        return
    if not rows and not pending:
        print(f"no runs yet in {store.path}")
        return
    print(f"{'run':<23} {'created (UTC)':<19} {'model':<28} {'ok':>5}  {'p50 ms':<24} settings")
    for r in rows:
        doc = documents.get(r.run_id, {})
        ok = f"{r.n_ok}/{r.n_devices}" + ("*" if r.run_id in pending else "")
        print(
            f"{r.run_id:<23} {r.created_at[:19].replace('T', ' '):<19} {model_name(r.model_path)[:28]:<28}"
            f" {ok:>5}  {_p50_cell(doc)[:24]:<24} {_settings_cell(doc)}"
        )
    if pending & {r.run_id for r in rows}:
        print("* jobs still to collect: `host runs fetch RUN`, or `host runs rm RUN` to give them up")
    unsaved = sorted(pending - set(documents))
    if unsaved:  # a host that died before it could store the run: only its pending jobs are known
        print(f"not stored yet, jobs still to collect: {', '.join(unsaved)} (`host runs fetch` or `host runs rm`)")


@runs_app.command("rm")
def runs_rm(
    run_ids: Annotated[list[str], typer.Argument(help="run ids or unique prefixes (see `host runs ls`)")],
) -> None:
    """Remove runs from the store: documents, raw samples and jobs still to collect."""
    store = open_store()
    try:
        for run_id in run_ids:
            try:
                removed, pending = store.delete_run(run_id)
            except StoreError as err:
                fail(str(err))
            extra = f" and {pending} job(s) still to collect" if pending else ""
            print(f"removed run {removed}{extra}")
    finally:
        store.close()
