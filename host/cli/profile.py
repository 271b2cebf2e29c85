"""`host profile MODEL`: profile a model on a fleet, some agents, or the embedded local agent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from host.cli.app import app
from host.cli.common import (
    BatchSizeOption,
    CalibrationOption,
    CtxSizeOption,
    DeviceOption,
    DlaOption,
    FailOnInvalidOption,
    FleetOption,
    GenLenOption,
    GpuLayersOption,
    IdleOption,
    InputShapeOption,
    InputsOption,
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
)
from host.cli.profile_setup import driven, fail_if_invalid, options_from, prepare, write_file
from host.fleet.config import ConfigError, load_config
from host.run.interrupt import EXIT_INTERRUPTED
from host.run.profiling import run_profile
from host.store.strict_json import dumps as strict_dumps


@app.command()
def profile(
    model: Annotated[
        str,
        typer.Argument(
            help="model file (.onnx, .ort, .tflite, .gguf), a GenAI model directory (genai_config.json), "
            "or example:NAME"
        ),
    ],
    fleet: FleetOption = None,
    device: DeviceOption = None,
    runs: RunsOption = 100,
    warmup: WarmupOption = 10,
    min_duration: MinDurationOption = 2.0,
    idle: IdleOption = 3.0,
    threads: ThreadsOption = 0,
    repeat: RepeatOption = 1,
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
    token_file: TokenFileOption = None,
    tls_ca: TlsCaOption = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the result document here")] = None,
    report: Annotated[
        Path | None, typer.Option(help="also write a report: .html, .md, .csv or .json by suffix")
    ] = None,
    quiet: QuietOption = False,
    fail_on_invalid: FailOnInvalidOption = False,
    prompt_len: PromptLenOption = "128",
    gen_len: GenLenOption = 64,
    prompt_file: PromptFileOption = None,
    ctx_size: CtxSizeOption = 0,
    batch_size: BatchSizeOption = 0,
    n_gpu_layers: GpuLayersOption = None,
) -> None:
    """Profile MODEL: latency, throughput, memory, power and energy on every device.

    A GenAI model directory or a GGUF file (llama.cpp) is profiled by generation: time to first token,
    inter-token latency, prefill and decode tokens/s and energy per token, per prompt length (--prompt-len,
    --gen-len).
    """
    if report is not None:
        from host.report.formats import ReportError, format_for

        try:
            format_for(report)  # a bad name fails now, not after the whole profile has run
        except ReportError as err:
            fail(str(err))
    options = options_from(locals())
    prepared = prepare(options, [model])
    store = open_store()
    with driven(options) as (targets, progress, stop):
        if repeat > 1:
            from host.run.sequence import repeat_order, run_parts

            run = run_parts(
                prepared.models,
                repeat_order(repeat),
                targets,
                prepared.settings,
                store=store,
                progress=progress,
                compile_fn=prepared.compiler,
                stop=stop,
            )[0]
        else:
            run = run_profile(
                prepared.models[0],
                targets,
                prepared.settings,
                store=store,
                progress=progress,
                compile_fn=prepared.compiler,
                stop=stop,
            )
    document = run.document
    from host.run.final_table import final_table

    final_table(document)
    from host.analysis.generation import generation_lines

    for line in generation_lines(document):
        print(line)
    from host.analysis.accelerator import accelerator_lines

    for line in accelerator_lines(document):  # TensorRT engine, Jetson power mode, rails that moved
        print(line)
    if json_path is not None:
        write_file(json_path, strict_dumps(document, indent=2) + "\n")
    if report is not None:
        from host.report.formats import ReportError, write_report

        try:
            write_report(run, report, grid_g_per_kwh=load_config().grid_g_per_kwh)
        except (ReportError, ConfigError, OSError) as err:
            fail(f"cannot write the report {report}: {err}")
    if stop.is_set():
        print(f"host: interrupted by {stop.reason}: run {run.run_id} stored with what was measured", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED)
    failed = [d for d in document["devices"] if d["status"] != "ok"]
    if failed:
        raise typer.Exit(1)
    fail_if_invalid(fail_on_invalid, [document])
