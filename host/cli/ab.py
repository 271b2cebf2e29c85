"""`host ab BASE CAND`: measure two models interleaved (A B A B …) on each device, store both runs, compare.

Interleaving in one agent job (host/run/sequence.py) means drift, heat and a colleague's job cannot land on one
side only. `host ab M M` is an A/A calibration: it shows what the gate does when nothing changed.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from host.cli.app import app
from host.cli.common import (
    BatchSizeOption,
    CalibrationOption,
    CompareFormatOption,
    CompareOutputOption,
    CtxSizeOption,
    DeviceOption,
    DlaOption,
    FailOnInvalidOption,
    FailOnRegressionOption,
    FleetOption,
    GateMetricsOption,
    GenLenOption,
    GpuLayersOption,
    IdleOption,
    InputShapeOption,
    InputsOption,
    JudgeInvalidOption,
    MinDurationOption,
    OpProfileOption,
    PrecisionOption,
    PromptFileOption,
    PromptLenOption,
    QuantizeModeOption,
    QuantizeOption,
    QuietOption,
    ReconnectOption,
    RepeatOption,
    RunsOption,
    RuntimeOption,
    SampleRateOption,
    SettleTimeoutOption,
    ThreadsOption,
    TimeoutOption,
    TlsCaOption,
    TokenFileOption,
    WarmupOption,
    fail,
    open_store,
    text_width,
)
from host.cli.profile_setup import driven, fail_if_invalid, options_from, prepare, write_file
from host.run.interrupt import EXIT_INTERRUPTED

_FORMATS = ("text", "md", "json")
ROLES = ("base", "candidate")


@app.command()
def ab(
    base: Annotated[str, typer.Argument(help="base model: file or example:NAME")],
    candidate: Annotated[str, typer.Argument(help="candidate model: file or example:NAME (the same one for A/A)")],
    fleet: FleetOption = None,
    device: DeviceOption = None,
    runs: RunsOption = 100,
    warmup: WarmupOption = 10,
    min_duration: MinDurationOption = 2.0,
    idle: IdleOption = 3.0,
    threads: ThreadsOption = 0,
    repeat: RepeatOption = 5,
    input_shape: InputShapeOption = None,
    inputs: InputsOption = None,
    sample_rate: SampleRateOption = 0.0,
    settle_timeout: SettleTimeoutOption = 0.0,
    op_profile: OpProfileOption = False,
    quantize: QuantizeOption = None,
    quantize_mode: QuantizeModeOption = "dynamic",
    calibration: CalibrationOption = None,
    runtime: RuntimeOption = None,
    precision: PrecisionOption = None,
    dla: DlaOption = None,
    timeout: TimeoutOption = 0.0,
    reconnect: ReconnectOption = 300.0,
    prompt_len: PromptLenOption = "128",
    gen_len: GenLenOption = 64,
    prompt_file: PromptFileOption = None,
    ctx_size: CtxSizeOption = 0,
    batch_size: BatchSizeOption = 0,
    n_gpu_layers: GpuLayersOption = None,
    token_file: TokenFileOption = None,
    tls_ca: TlsCaOption = None,
    fail_on_regression: FailOnRegressionOption = None,
    gate_metrics: GateMetricsOption = None,
    judge_invalid: JudgeInvalidOption = False,
    fail_on_invalid: FailOnInvalidOption = False,
    fmt: CompareFormatOption = "text",
    output: CompareOutputOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run BASE and CANDIDATE interleaved, K repetitions of each per device, store both runs and compare
    them; with --fail-on-regression PCT, exit 1 when the candidate regresses by more than PCT, and exit 3 (NOT
    JUDGED) when a device's result of either model is not valid (unless --judge-invalid)."""
    if fmt not in _FORMATS:
        fail(f"unknown format '{fmt}' (formats: {', '.join(_FORMATS)})")
    from host.analysis.compare import CompareError, parse_gate_metrics

    try:
        gates = parse_gate_metrics(gate_metrics)  # a typo fails now, not after the whole A/B sequence
    except CompareError as err:
        fail(str(err))
    options = options_from(locals())
    prepared = prepare(options, [base, candidate])
    from host.run.sequence import ab_order, run_parts

    store = open_store()
    with driven(options) as (targets, progress, stop):
        base_run, cand_run = run_parts(
            prepared.models,
            ab_order(repeat),
            targets,
            prepared.settings,
            store=store,
            progress=progress,
            compile_fn=prepared.compiler,
            roles=ROLES,
            stop=stop,
        )
    print(f"host: stored base run {base_run.run_id} and candidate run {cand_run.run_id}", file=sys.stderr)
    if stop.is_set():
        print(f"host: interrupted by {stop.reason}: no comparison of an unfinished A/B sequence", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED)
    failed = [d for run in (base_run, cand_run) for d in run.document["devices"] if d["status"] != "ok"]
    for entry in failed:
        print(f"host: {entry['device']}: {entry.get('error') or 'failed'}", file=sys.stderr)
    from host.analysis.compare import compare_runs, history_for, render_json, render_markdown, render_text
    from host.cli.report import default_grid_g_per_kwh

    try:
        result = compare_runs(
            base_run,
            cand_run,
            fail_on_regression,
            default_grid_g_per_kwh(),
            gate_metrics=gates,
            history=history_for(store, base_run, cand_run),
            judge_invalid=judge_invalid,
        )
    except CompareError as err:
        fail(str(err))
    if not result.changes:
        fail("no device measured both models successfully: " + "; ".join(result.skipped))
    text = {"text": render_text, "md": render_markdown, "json": render_json}[fmt](result)
    print(render_text(result, text_width()) if fmt == "text" else text, end="")
    if output is not None:
        write_file(output, text)
    if result.failed or failed:
        raise typer.Exit(1)
    fail_if_invalid(fail_on_invalid, [base_run.document, cand_run.document])
    raise typer.Exit(result.exit_code)
