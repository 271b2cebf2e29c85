"""`host profile MODEL`: profile a model on a fleet, some agents, or the embedded local agent."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from host.cli.app import app
from host.cli.common import (
    CalibrationOption,
    DeviceOption,
    FleetOption,
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
from host.fleet.config import ConfigError, agent_address, credentials_for, load_config
from host.fleet.target import Target
from host.prepare import examples
from host.prepare.modelfile import ModelFile, ModelFileError, check_input_shapes, inspect
from host.run.interrupt import EXIT_INTERRUPTED, StopSignal, stop_on_signals
from host.run.profiling import ProfileSettings, run_profile
from host.store.strict_json import dumps as strict_dumps

if TYPE_CHECKING:
    from host.prepare.compile import Compiler


def _input_shapes(flags: list[str]) -> dict[str, str]:
    from protos.inputs import InputError, parse_input_shape_flags

    try:
        return parse_input_shape_flags(flags)
    except InputError as err:
        fail(str(err))


def resolve_targets(
    fleet: str | None, devices: list[str], token_file: Path | None, stack: ExitStack, tls_ca: Path | None = None
) -> list[Target]:
    """--device list, else the named (or default) fleet, else a local agent started for this run.

    `tls_ca` (--tls-ca) is trusted for --device agents and overrides a fleet's own tls_ca, as in `host runs fetch`;
    the local agent started for the run has credentials of its own.
    """
    try:
        config = load_config()
        if devices:
            if fleet:
                fail("give either --fleet or --device, not both")
            creds = credentials_for(None, token_file, tls_ca)
            addresses = [agent_address(text) for text in devices]
            return [Target(name=addr, address=addr, credentials=creds) for addr in addresses]
        name = fleet or config.default_fleet
        if name:
            if name not in config.fleets:
                known = ", ".join(sorted(config.fleets)) or "none"
                where = config.path or "no config file found"
                fail(f"no fleet named '{name}' (fleets: {known}; config: {where})")
            from host.fleet.members import fleet_targets

            targets = fleet_targets(config.fleets[name], token_file, tls_ca)
            if not targets:
                fail(
                    f"fleet '{name}' has no agents:"
                    f" none listed and none discovered with tags {config.fleets[name].tags}"
                )
            return targets
    except ConfigError as err:
        fail(str(err))
    from host.fleet.local_agent import LocalAgent, LocalAgentError

    local = LocalAgent()
    try:
        address = local.start()
    except LocalAgentError as err:
        fail(str(err))
    stack.callback(local.stop)
    return [Target(name="local", address=address, credentials=local.credentials, ephemeral=True)]


def load_model(spec: str, shapes: dict[str, str]) -> ModelFile:
    """MODEL argument (a file or example:NAME) inspected, its --input-shape names checked; one line on error."""
    try:
        model_file = inspect(examples.resolve(spec))
        check_input_shapes(model_file, shapes)
    except ModelFileError as err:
        fail(str(err))
    return model_file


def read_inputs(inputs: Path | None) -> bytes:
    if inputs is None:
        return b""
    try:
        return inputs.read_bytes()
    except OSError as err:
        fail(f"cannot read --inputs {inputs}: {err.strerror}")


def make_compiler(
    quantize: str | None, quantize_mode: str, calibration: Path | None, shapes: dict[str, str], inputs: Path | None
) -> Compiler:
    from host.prepare.compile import Compiler
    from host.prepare.compile_options import CompileError, CompileOptions

    try:
        # The run's shapes (--input-shape, or the --inputs arrays) are what compile fixes dynamic dims to.
        options = CompileOptions(
            quantize=quantize,
            quantize_mode=quantize_mode,
            calibration_npz=calibration,
            input_shapes=shapes,
            inputs_npz=inputs,
        )
        return Compiler(options)
    except CompileError as err:
        fail(str(err))


@app.command()
def profile(
    model: Annotated[
        str,
        typer.Argument(
            help="model file (.onnx, .ort, .tflite), a GenAI model directory (genai_config.json), or example:NAME"
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
    timeout: TimeoutOption = 0.0,
    reconnect: ReconnectOption = 300.0,
    token_file: TokenFileOption = None,
    tls_ca: TlsCaOption = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the result document here")] = None,
    report: Annotated[
        Path | None, typer.Option(help="also write a report: .html, .md, .csv or .json by suffix")
    ] = None,
    quiet: QuietOption = False,
    prompt_len: PromptLenOption = "128",
    gen_len: GenLenOption = 64,
    prompt_file: PromptFileOption = None,
) -> None:
    """Profile MODEL: latency, throughput, memory, power and energy on every device.

    A GenAI model directory is profiled by generation: time to first token, inter-token latency, prefill and
    decode tokens/s and energy per token, per prompt length (--prompt-len, --gen-len).
    """
    shapes = _input_shapes(input_shape or [])
    model_file = load_model(model, shapes)
    prompt_lens = _prompt_lens(prompt_len)
    prompt_text = _prompt_text(prompt_file)
    if report is not None:
        from host.report.formats import ReportError, format_for

        try:
            format_for(report)  # a bad name fails now, not after the whole profile has run
        except ReportError as err:
            fail(str(err))
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
        prompt_lens=prompt_lens,
        gen_len=gen_len,
        prompt_text=prompt_text,
    )
    from host.run.progress import final_table, make_progress

    compiler = make_compiler(quantize, quantize_mode, calibration, shapes, inputs)
    store = open_store()
    stop = StopSignal()
    with ExitStack() as stack:
        stack.enter_context(stop_on_signals(stop))  # before the local agent starts: Ctrl-C there is handled too
        targets = resolve_targets(fleet, device or [], token_file, stack, tls_ca)
        progress = make_progress(quiet)
        try:
            if repeat > 1:
                from host.run.sequence import repeat_order, run_parts

                run = run_parts(
                    [model_file],
                    repeat_order(repeat),
                    targets,
                    settings,
                    store=store,
                    progress=progress,
                    compile_fn=compiler,
                    stop=stop,
                )[0]
            else:
                run = run_profile(
                    model_file, targets, settings, store=store, progress=progress, compile_fn=compiler, stop=stop
                )
        finally:
            close = getattr(progress, "close", None)
            if close:
                close()
    document = run.document
    final_table(document)
    from host.analysis.generation import generation_lines

    for line in generation_lines(document):
        print(line)
    if json_path is not None:
        _write(json_path, strict_dumps(document, indent=2) + "\n")
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
    raise typer.Exit(1 if failed else 0)


def _prompt_lens(text: str) -> tuple[int, ...]:
    """--prompt-len "16,128" as token counts; one line on a bad list."""
    try:
        lens = tuple(int(part) for part in text.split(","))
    except ValueError:
        fail(f"--prompt-len takes token counts separated by commas (e.g. 16,128), not '{text}'")
    if not lens or any(n < 1 for n in lens) or len(lens) > 64:
        fail(f"--prompt-len takes 1 to 64 positive token counts, not '{text}'")
    return lens


def _prompt_text(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot read --prompt-file {path}: {getattr(err, 'strerror', None) or err}")
    if not text.strip():
        fail(f"--prompt-file {path} is empty")
    return text


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        print(f"host: cannot write {path}: {err.strerror}", file=sys.stderr)
        raise typer.Exit(1) from err
