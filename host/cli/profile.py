"""`host profile MODEL`: profile a model on a fleet, some agents, or the embedded local agent."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from host import examples
from host.cli import app
from host.cli.common import TlsCaOption, fail, open_store
from host.config import ConfigError, credentials_for, load_config
from host.modelfile import ModelFileError, check_input_shapes, inspect
from host.profiling import ProfileSettings, Target, run_profile


def _input_shapes(flags: list[str]) -> dict[str, str]:
    from agent.errors import InvalidInput
    from agent.inputs import parse_input_shape_flags

    try:
        return parse_input_shape_flags(flags)
    except InvalidInput as err:
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
            return [Target(name=addr, address=addr, credentials=creds) for addr in devices]
        name = fleet or config.default_fleet
        if name:
            if name not in config.fleets:
                known = ", ".join(sorted(config.fleets)) or "none"
                where = config.path or "no config file found"
                fail(f"no fleet named '{name}' (fleets: {known}; config: {where})")
            from host.fleet import fleet_targets

            targets = fleet_targets(config.fleets[name], token_file, tls_ca)
            if not targets:
                fail(
                    f"fleet '{name}' has no agents:"
                    f" none listed and none discovered with tags {config.fleets[name].tags}"
                )
            return targets
    except ConfigError as err:
        fail(str(err))
    from host.local_agent import LocalAgent, LocalAgentError

    local = LocalAgent()
    try:
        address = local.start()
    except LocalAgentError as err:
        fail(str(err))
    stack.callback(local.stop)
    return [Target(name="local", address=address, credentials=local.credentials)]


@app.command()
def profile(
    model: Annotated[
        str, typer.Argument(help="model file (.onnx, .ort, .tflite) or example:NAME (e.g. example:squeezenet)")
    ],
    fleet: Annotated[str | None, typer.Option(help="fleet name from the config file")] = None,
    device: Annotated[list[str] | None, typer.Option(help="agent address HOST:PORT (repeatable)")] = None,
    runs: Annotated[int, typer.Option(min=1, help="minimum measured inferences")] = 100,
    warmup: Annotated[
        int, typer.Option(min=0, help="minimum warmup inferences (warmup goes on until latency is stable)")
    ] = 10,
    min_duration: Annotated[float, typer.Option(min=0, help="minimum measured seconds")] = 2.0,
    idle: Annotated[float, typer.Option(min=0, help="seconds of idle power baseline before warmup")] = 3.0,
    threads: Annotated[int, typer.Option(min=0, help="intra-op threads (0 = runtime default)")] = 0,
    input_shape: Annotated[
        list[str] | None, typer.Option(help="NAME=1x3x224x224 for dynamic inputs (repeatable)")
    ] = None,
    inputs: Annotated[Path | None, typer.Option(help=".npz of input arrays to use instead of random data")] = None,
    sample_rate: Annotated[float, typer.Option(min=0, help="sensor sampling rate in Hz (0 = agent default)")] = 0.0,
    settle_timeout: Annotated[float, typer.Option(min=0, help="max seconds to wait for the board to cool")] = 0.0,
    op_profile: Annotated[bool, typer.Option("--op-profile", help="collect a per-operator profile")] = False,
    quantize: Annotated[str | None, typer.Option(help="quantize for every target: int8")] = None,
    quantize_mode: Annotated[str, typer.Option(help="int8 quantization: dynamic or static")] = "dynamic",
    calibration: Annotated[Path | None, typer.Option(help=".npz of calibration inputs for static int8")] = None,
    timeout: Annotated[float, typer.Option(min=0, help="per-job timeout in seconds (0 = agent default)")] = 0.0,
    reconnect: Annotated[
        float, typer.Option(min=0, help="seconds to keep re-attaching to an agent whose stream broke")
    ] = 300.0,
    token_file: Annotated[Path | None, typer.Option(help="bearer token for the agents")] = None,
    tls_ca: TlsCaOption = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the result document here")] = None,
    report: Annotated[
        Path | None, typer.Option(help="also write a report: .html, .md, .csv or .json by suffix")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live progress")] = False,
) -> None:
    """Profile MODEL: latency, throughput, memory, power and energy on every device."""
    try:
        model_file = inspect(examples.resolve(model))
        shapes = _input_shapes(input_shape or [])
        check_input_shapes(model_file, shapes)
    except ModelFileError as err:
        fail(str(err))
    if report is not None:
        from host.report import ReportError, format_for

        try:
            format_for(report)  # a bad name fails now, not after the whole profile has run
        except ReportError as err:
            fail(str(err))
    npz = b""
    if inputs is not None:
        try:
            npz = inputs.read_bytes()
        except OSError as err:
            fail(f"cannot read --inputs {inputs}: {err.strerror}")
    settings = ProfileSettings(
        runs=runs,
        warmup=warmup,
        min_duration_s=min_duration,
        idle_s=idle,
        threads=threads,
        input_shapes=shapes,
        inputs_npz=npz,
        sample_rate_hz=sample_rate,
        settle_timeout_s=settle_timeout,
        op_profile=op_profile,
        timeout_s=timeout,
        reconnect_s=reconnect,
    )
    from host.compile import Compiler
    from host.compile_options import CompileError, CompileOptions
    from host.progress import final_table, make_progress

    try:
        # The run's shapes (--input-shape, or the --inputs arrays) are what compile fixes dynamic dims to.
        options = CompileOptions(
            quantize=quantize,
            quantize_mode=quantize_mode,
            calibration_npz=calibration,
            input_shapes=shapes,
            inputs_npz=inputs,
        )
        compiler = Compiler(options)
    except CompileError as err:
        fail(str(err))

    store = open_store()
    with ExitStack() as stack:
        targets = resolve_targets(fleet, device or [], token_file, stack, tls_ca)
        progress = make_progress(quiet)
        try:
            run = run_profile(model_file, targets, settings, store=store, progress=progress, compile_fn=compiler)
        finally:
            close = getattr(progress, "close", None)
            if close:
                close()
    document = run.document
    final_table(document)
    if json_path is not None:
        _write(json_path, json.dumps(document, indent=2) + "\n")
    if report is not None:
        from host.report import ReportError, write_report

        try:
            write_report(run, report, grid_g_per_kwh=load_config().grid_g_per_kwh)
        except (ReportError, ConfigError, OSError) as err:
            fail(f"cannot write the report {report}: {err}")
    failed = [d for d in document["devices"] if d["status"] != "ok"]
    raise typer.Exit(1 if failed else 0)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        print(f"host: cannot write {path}: {err.strerror}", file=sys.stderr)
        raise typer.Exit(1) from err
