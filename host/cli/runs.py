"""`host runs ls|rm|export|import`: the runs in the store told apart at a glance, removed, and moved between stores."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path, PurePath
from typing import Annotated, Any

import typer

from host.cli.app import app
from host.cli.common import fail, open_store
from host.report.escape import terminal_text
from host.report.flat import write_summary_csv
from host.store.sqlite import Store, StoreError
from host.store.transfer import TransferError, read_runs, run_line

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
    malformed = {r.run_id: store.malformed[r.run_id] for r in rows if r.run_id in store.malformed}
    if as_json:
        listed = [{**vars(r), "pending_jobs": r.run_id in pending} for r in rows]
        print(json.dumps([{**row, "malformed": malformed[row["run_id"]]} if row["run_id"] in malformed else row
                          for row in listed], indent=2))  # fmt: skip
        return
    if not rows and not pending:
        print(f"no runs yet in {store.path}")
        return
    print(f"{'run':<23} {'created (UTC)':<19} {'model':<28} {'ok':>5}  {'p50 ms':<24} settings")
    for r in rows:
        if r.run_id in malformed:  # one line, never a traceback: the rest of the store is listed
            print(f"{r.run_id:<23} skipped: stored malformed ({terminal_text(malformed[r.run_id])[:160]});"
                  f" `host runs rm {r.run_id}` removes it")  # fmt: skip
            continue
        doc = documents.get(r.run_id, {})
        ok = f"{r.n_ok}/{r.n_devices}" + ("*" if r.run_id in pending else "")
        print(
            f"{r.run_id:<23} {r.created_at[:19].replace('T', ' '):<19} {model_name(r.model_path)[:28]:<28}"
            f" {ok:>5}  {_p50_cell(doc)[:24]:<24} {_settings_cell(doc)}"
        )
    if pending & {r.run_id for r in rows}:
        print("* jobs still to collect: `host runs fetch RUN`, or `host runs rm RUN` to give them up")
    unsaved = sorted(pending - set(documents) - set(malformed))
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


def _selected_run_ids(
    store: Store, run_ids: list[str], all_runs: bool, since: str, until: str, model: str
) -> list[str]:
    """The runs named (prefixes allowed), or those created in [since, until] whose model path contains `model`."""
    if run_ids:
        return [store.resolve_run_id(r) for r in run_ids]
    if not (all_runs or since or until or model):
        fail("give RUN ids, --all, or a selection (--since, --until, --model)")
    try:
        end = (dt.date.fromisoformat(until) + dt.timedelta(days=1)).isoformat() if until else ""
        start = dt.date.fromisoformat(since).isoformat() if since else ""
    except ValueError:
        fail(f"--since and --until are dates like 2026-03-01, not '{since or until}'")
    docs = store.documents_between(start, end, limit=1 << 31)
    return [d["run_id"] for d in reversed(docs) if model in str((d.get("model") or {}).get("path", ""))]


@runs_app.command("export")
def runs_export(
    run_ids: Annotated[list[str] | None, typer.Argument(help="run ids or unique prefixes")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="every stored run")] = False,
    since: Annotated[str, typer.Option(help="runs created on or after this date (YYYY-MM-DD)")] = "",
    until: Annotated[str, typer.Option(help="runs created on or before this date (YYYY-MM-DD)")] = "",
    model: Annotated[str, typer.Option(help="runs whose model path contains this")] = "",
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="jsonl (whole runs, raw arrays) | csv (summary)")
    ] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """Write runs out: JSON lines (one run per line, raw arrays included: `host runs import` reads them) or CSV."""
    if fmt not in ("jsonl", "csv"):
        fail(f"--format must be jsonl or csv, not '{fmt}'")
    store = open_store()
    try:
        try:
            selected = _selected_run_ids(store, run_ids or [], all_runs, since, until, model)
        except StoreError as err:
            fail(str(err))
        out = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            runs = (store.load_run(run_id) for run_id in selected)
            if fmt == "csv":
                write_summary_csv(runs, out)
            else:
                for run in runs:
                    out.write(run_line(run) + "\n")
        except ValueError as err:  # a stored NaN cannot be strict JSON
            fail(f"cannot export: {err}")
        finally:
            if output:
                out.close()
    finally:
        store.close()
    if output:
        print(f"exported {len(selected)} run(s) to {output}", file=sys.stderr)


@runs_app.command("import")
def runs_import(
    path: Annotated[Path, typer.Argument(help="a `host runs export` JSON-lines file ('-' for stdin)")],
    replace: Annotated[bool, typer.Option("--replace", help="overwrite runs already stored")] = False,
) -> None:
    """Store the runs of an export (from another store: a laptop's SQLite, the team's PostgreSQL)."""
    try:
        source = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror or err}")
    try:
        runs = list(read_runs(source))  # every line checked before anything is stored
    except TransferError as err:
        fail(f"{path}: {err}")
    finally:
        if source is not sys.stdin:
            source.close()
    store = open_store()
    try:
        present = store.documents([run.run_id for run in runs])
        kept = [run for run in runs if replace or run.run_id not in present]
        for run in kept:
            store.save_run(run)
    finally:
        store.close()
    skipped = len(runs) - len(kept)
    note = f", skipped {skipped} already stored (--replace overwrites them)" if skipped else ""
    print(f"imported {len(kept)} run(s) into {store.path}{note}")
