"""`host runs ls|rm|export|import`: the runs in the store told apart at a glance, removed, and moved between stores."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path, PurePath
from typing import Annotated, Any

import typer

from host.analysis.variant import variant_parts
from host.cli.app import app
from host.cli.common import fail, open_store, text_width
from host.report.escape import terminal_text
from host.report.flat import write_summary_csv
from host.store.sqlite import Store, StoreError
from host.store.transfer import TransferError, read_runs, run_line

runs_app = typer.Typer(help="stored runs", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

#: Settings shown in `runs ls` when they differ from `host profile`'s defaults, besides those that change what
#: runs (host/analysis/variant.py).
_SETTING_LABELS = (("runs", "runs", 100), ("repeat", "repeat", 1))


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


def _valid_cell(document: dict[str, Any]) -> str:
    """yes / no for the devices that measured, `k/n` when some are valid; `-` when none measured (or unknown)."""
    verdicts = [
        (d.get("validity") or {}).get("valid") for d in document.get("devices") or [] if d.get("status") == "ok"
    ]
    known = [v for v in verdicts if isinstance(v, bool)]
    if not known:
        return "-"
    valid = sum(known)
    return "yes" if valid == len(known) else "no" if valid == 0 else f"{valid}/{len(known)}"


def _settings_cell(document: dict[str, Any]) -> str:
    settings = document.get("settings") or {}
    shown = [terminal_text(part) for part in variant_parts(document)]
    shown += [
        f"{label}={settings[key]}" for key, label, default in _SETTING_LABELS if settings.get(key, default) != default
    ]
    return " ".join(shown)


_LS_HEADER = ("run", "created (UTC)", "model", "ok", "valid", "p50 ms", "settings")


def _ls_lines(cells: list[tuple[str, ...]], width: int | None) -> list[str]:
    """Columns as wide as their widest cell (no name or figure cut). On a terminal too narrow for them, the
    created column goes first (the run id starts with the same UTC time) and a last line says so; the
    settings are folded at word boundaries under their column, or onto lines of their own."""
    import textwrap

    rows = [_LS_HEADER, *cells]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_LS_HEADER) - 1)]
    shown = list(range(len(_LS_HEADER) - 1))
    dropped = False
    if width is not None and sum(widths) + 2 * len(widths) > width:
        shown.remove(1)
        dropped = True
    lines = []
    for row in rows:
        front = "  ".join(row[i].rjust(widths[i]) if i == 3 else row[i].ljust(widths[i]) for i in shown)
        settings, indent = row[-1], len(front) + 2
        longest = max((len(word) for word in settings.split()), default=0)
        if width is None or not settings or indent + len(settings) <= width:
            lines.append(f"{front}  {settings}".rstrip())
        elif width - indent >= max(20, longest):
            folded = textwrap.wrap(settings, width - indent, break_long_words=False, break_on_hyphens=False)
            lines += [f"{front}  {folded[0]}", *(" " * indent + part for part in folded[1:])]
        else:  # too narrow beside the other columns: the settings on lines of their own
            lines.append(front.rstrip())
            lines += textwrap.wrap(
                settings, width, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
            )  # a single word longer than the whole width is the only thing ever split
    if dropped:
        lines.append(f"(created (UTC) left out at {width} columns: a run id starts with it, YYYYMMDD-HHMMSS)")
    return lines


@runs_app.command("ls")
def runs_ls(
    limit: Annotated[int, typer.Option(min=1, help="how many runs, newest first")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List stored runs, newest first: model, devices ok/all, whether their results are valid, p50 ms per device,
    and the settings that differ from the defaults (quantization, calibration, inputs, threads, ...)."""
    store = open_store()
    try:
        rows = store.runs(limit=limit)
        documents = store.documents([r.run_id for r in rows])
        pending = {job.run_id for job in store.pending()}
    finally:
        store.close()
    malformed = {r.run_id: store.malformed[r.run_id] for r in rows if r.run_id in store.malformed}
    if as_json:
        listed = [
            {
                **vars(r),
                "pending_jobs": r.run_id in pending,
                "valid": _valid_cell(documents.get(r.run_id, {})),
                "settings": variant_parts(documents.get(r.run_id, {})),
            }
            for r in rows
        ]
        print(json.dumps([{**row, "malformed": malformed[row["run_id"]]} if row["run_id"] in malformed else row
                          for row in listed], indent=2))  # fmt: skip
        return
    if not rows and not pending:
        print(f"no runs yet in {store.path}")
        return
    cells: list[tuple[str, ...]] = []
    skipped: list[str] = []
    for r in rows:
        if r.run_id in malformed:  # one line, never a traceback: the rest of the store is listed
            skipped.append(f"{r.run_id:<23} skipped: stored malformed ({terminal_text(malformed[r.run_id])[:160]});"
                           f" `host runs rm {r.run_id}` removes it")  # fmt: skip
            continue
        doc = documents.get(r.run_id, {})
        ok = f"{r.n_ok}/{r.n_devices}" + ("*" if r.run_id in pending else "")
        created = r.created_at[:19].replace("T", " ")
        cells.append(
            (r.run_id, created, model_name(r.model_path), ok, _valid_cell(doc), _p50_cell(doc), _settings_cell(doc))
        )
    for line in [*_ls_lines(cells, text_width()), *skipped]:
        print(line)
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
