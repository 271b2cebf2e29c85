"""`host compare BASE CAND`: what changed from a base run to a candidate, and a regression gate for CI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from host.analysis.compare import (
    CompareError,
    compare_runs,
    history_for,
    load_side,
    parse_gate_metrics,
    render_json,
    render_markdown,
    render_text,
)
from host.cli.app import app
from host.cli.common import (
    CompareFormatOption,
    CompareOutputOption,
    FailOnRegressionOption,
    GateMetricsOption,
    JudgeInvalidOption,
    fail,
    text_width,
)
from host.cli.report import default_grid_g_per_kwh
from host.store.open import open_store
from host.store.sqlite import StoreError

_FORMATS = ("text", "md", "json")


@app.command()
def compare(
    base: Annotated[str, typer.Argument(help="base: run id or prefix, or a result .json file")],
    candidate: Annotated[str, typer.Argument(help="candidate: run id or prefix, or a result .json file")],
    fail_on_regression: FailOnRegressionOption = None,
    gate_metrics: GateMetricsOption = None,
    judge_invalid: JudgeInvalidOption = False,
    fmt: CompareFormatOption = "text",
    output: CompareOutputOption = None,
    grid_g_per_kwh: Annotated[
        float | None,
        typer.Option(min=0, help="grid carbon intensity g/kWh for the CO2e estimate (default: config grid_g_per_kwh)"),
    ] = None,
) -> None:
    """Compare CAND against BASE per device and metric, with 95% intervals over repetitions (or the run-to-run
    spread of earlier runs); with --fail-on-regression PCT, exit 1 when a gated metric is worse by more than PCT,
    and exit 3 (NOT JUDGED) when a device's base or candidate result is not valid (unless --judge-invalid) or a
    gated metric worse than PCT has no interval to test it."""
    if fmt not in _FORMATS:
        fail(f"unknown format '{fmt}' (formats: {', '.join(_FORMATS)})")
    store = None
    if not all(Path(s).suffix.lower() == ".json" and Path(s).is_file() for s in (base, candidate)):
        try:
            store = open_store()
        except StoreError as err:
            fail(str(err))
    try:
        gates = parse_gate_metrics(gate_metrics)
        base_run, cand_run = load_side(base, store), load_side(candidate, store)
        result = compare_runs(
            base_run,
            cand_run,
            fail_on_regression,
            grid_g_per_kwh if grid_g_per_kwh is not None else default_grid_g_per_kwh(),
            gate_metrics=gates,
            history=history_for(store, base_run, cand_run),
            judge_invalid=judge_invalid,
        )
    except CompareError as err:
        fail(str(err))
    finally:
        if store is not None:
            store.close()
    if not result.changes:
        fail("no device measured successfully in both runs: " + "; ".join(result.skipped))
    text = {"text": render_text, "md": render_markdown, "json": render_json}[fmt](result)
    print(render_text(result, text_width()) if fmt == "text" else text, end="")
    if output is not None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
        except OSError as err:
            fail(f"cannot write {output}: {err.strerror}")
    raise typer.Exit(result.exit_code)
