"""`host ab BASE CAND`: measure two models interleaved (A B A B …) on each device, store both runs, compare.

Interleaving in one agent job (host/run/sequence.py) means drift, heat and a colleague's job cannot land on one
side only. `host ab M M` is an A/A calibration: it shows what the gate does when nothing changed.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from host.cli.app import app
from host.cli.common import (
    CalibrationOption,
    CompareFormatOption,
    CompareOutputOption,
    DeviceOption,
    FailOnRegressionOption,
    FleetOption,
    GateMetricsOption,
    GenLenOption,
    IdleOption,
    InputShapeOption,
    InputsOption,
    MinDurationOption,
    OpProfileOption,
    PromptFileOption,
    PromptLenOption,
    QuantizeModeOption,
    QuantizeOption,
    QuietOption,
    ReconnectOption,
    RepeatOption,
    RunsOption,
    SampleRateOption,
    SettleTimeoutOption,
    ThreadsOption,
    TimeoutOption,
    TlsCaOption,
    TokenFileOption,
    WarmupOption,
    fail,
    open_store,
)
from host.cli.profile import (
    _input_shapes,
    _prompt_lens,
    _prompt_text,
    load_model,
    make_compiler,
    read_inputs,
    resolve_targets,
)
from host.run.interrupt import EXIT_INTERRUPTED, StopSignal, stop_on_signals
from host.run.profiling import ProfileSettings

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
    timeout: TimeoutOption = 0.0,
    reconnect: ReconnectOption = 300.0,
    prompt_len: PromptLenOption = "128",
    gen_len: GenLenOption = 64,
    prompt_file: PromptFileOption = None,
    token_file: TokenFileOption = None,
    tls_ca: TlsCaOption = None,
    fail_on_regression: FailOnRegressionOption = None,
    gate_metrics: GateMetricsOption = None,
    fmt: CompareFormatOption = "text",
    output: CompareOutputOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run BASE and CANDIDATE interleaved, K repetitions of each per device, store both runs and compare
    them; with --fail-on-regression PCT, exit 1 when the candidate regresses by more than PCT."""
    if fmt not in _FORMATS:
        fail(f"unknown format '{fmt}' (formats: {', '.join(_FORMATS)})")
    from host.analysis.compare import CompareError, parse_gate_metrics

    try:
        gates = parse_gate_metrics(gate_metrics)  # a typo fails now, not after the whole A/B sequence
    except CompareError as err:
        fail(str(err))
    shapes = _input_shapes(input_shape or [])
    models = [load_model(base, shapes), load_model(candidate, shapes)]
    settings = ProfileSettings(
        runs=runs,
        warmup=warmup,
        min_duration_s=min_duration,
        idle_s=idle,
        threads=threads,
        input_shapes=shapes,
        inputs_npz=read_inputs(inputs),
        sample_rate_hz=sample_rate,
        settle_timeout_s=settle_timeout,
        op_profile=op_profile,
        timeout_s=timeout,
        reconnect_s=reconnect,
        prompt_lens=_prompt_lens(prompt_len),
        gen_len=gen_len,
        prompt_text=_prompt_text(prompt_file),
    )
    compiler = make_compiler(quantize, quantize_mode, calibration, shapes, inputs)
    from host.run.progress import make_progress
    from host.run.sequence import ab_order, run_parts

    store = open_store()
    stop = StopSignal()
    with ExitStack() as stack:
        stack.enter_context(stop_on_signals(stop))
        targets = resolve_targets(fleet, device or [], token_file, stack, tls_ca)
        progress = make_progress(quiet)
        try:
            base_run, cand_run = run_parts(
                models,
                ab_order(repeat),
                targets,
                settings,
                store=store,
                progress=progress,
                compile_fn=compiler,
                roles=ROLES,
                stop=stop,
            )
        finally:
            close = getattr(progress, "close", None)
            if close:
                close()
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
        )
    except CompareError as err:
        fail(str(err))
    if not result.changes:
        fail("no device measured both models successfully: " + "; ".join(result.skipped))
    text = {"text": render_text, "md": render_markdown, "json": render_json}[fmt](result)
    print(text, end="")
    if output is not None:
        _write(output, text)
    raise typer.Exit(1 if result.failed or failed else 0)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        fail(f"cannot write {path}: {err.strerror}")
