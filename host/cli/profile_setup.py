"""What `host profile` and `host ab` share: their options turned into settings, the model and the targets
checked, the run driven under Ctrl-C with live progress, files written; one line on every user mistake.

A new profiling option is declared once in host/cli/common.py, read once here (ProfileOptions), and
tests/test_cli_help.py checks that both commands offer it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.cli.common import fail
from host.fleet.config import ConfigError, agent_address, credentials_for, load_config
from host.fleet.target import Target
from host.prepare import examples
from host.prepare.modelfile import ModelFile, ModelFileError, check_input_shapes, inspect
from host.run.interrupt import StopSignal, stop_on_signals
from host.run.profiling import ProfileSettings

if TYPE_CHECKING:
    from host.prepare.compile import Compiler


@dataclass
class ProfileOptions:
    """The options every profiling command takes, as the user gave them (host/cli/common.py declares them)."""

    fleet: str | None = None
    device: list[str] = field(default_factory=list)
    runs: int = 100
    warmup: int = 10
    min_duration: float = 2.0
    idle: float = 3.0
    threads: int = 0
    input_shape: list[str] = field(default_factory=list)
    inputs: Path | None = None
    sample_rate: float = 0.0
    settle_timeout: float = 0.0
    op_profile: bool = False
    quantize: str | None = None
    quantize_mode: str = "dynamic"
    calibration: Path | None = None
    runtime: str | None = None
    precision: str | None = None
    dla: int | None = None
    timeout: float = 0.0
    reconnect: float = 300.0
    prompt_len: str = "128"
    gen_len: int = 64
    prompt_file: Path | None = None
    ctx_size: int = 0
    batch_size: int = 0
    n_gpu_layers: int | None = None
    token_file: Path | None = None
    tls_ca: Path | None = None
    quiet: bool = False


def options_from(params: dict[str, Any]) -> ProfileOptions:
    """The shared options out of a command's parameters (pass its `locals()`): one place reads them all."""
    names = {f.name for f in fields(ProfileOptions)}
    given = {name: value for name, value in params.items() if name in names}
    for name in ("device", "input_shape"):  # repeatable options arrive as None when not given
        given[name] = given.get(name) or []
    return ProfileOptions(**given)


@dataclass
class Prepared:
    """The checked models, the settings every device gets and the per-target compiler."""

    models: list[ModelFile]
    settings: ProfileSettings
    compiler: Compiler


def prepare(options: ProfileOptions, model_specs: list[str]) -> Prepared:
    """Everything that can fail on the user's input, checked before any agent is contacted."""
    shapes = input_shapes(options.input_shape)
    models = [load_model(spec, shapes) for spec in model_specs]
    settings = ProfileSettings(
        runs=options.runs,
        warmup=options.warmup,
        min_duration_s=options.min_duration,
        idle_s=options.idle,
        threads=options.threads,
        input_shapes=shapes,
        inputs_npz=read_inputs(options.inputs),
        sample_rate_hz=options.sample_rate,
        settle_timeout_s=options.settle_timeout,
        op_profile=options.op_profile,
        timeout_s=options.timeout,
        reconnect_s=options.reconnect,
        prompt_lens=prompt_lens(options.prompt_len),
        gen_len=options.gen_len,
        prompt_text=prompt_text(options.prompt_file),
        options=runtime_options(options),
        llama_options=llama_options(options),
        quantize=options.quantize,
        quantize_mode=options.quantize_mode if options.quantize else None,
        calibration_sha256=file_sha256(options.calibration, "--calibration"),
    )
    compiler = make_compiler(
        options.quantize,
        options.quantize_mode,
        options.calibration,
        shapes,
        options.inputs,
        runtime=options.runtime or "",
        precision=options.precision or "",
    )
    return Prepared(models, settings, compiler)


RUNTIMES = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


def runtime_options(options: ProfileOptions) -> dict[str, str]:
    """--runtime/--precision/--dla as the job options every agent gets; one line on a bad combination."""
    if options.runtime is not None and options.runtime not in RUNTIMES:
        fail(f"--runtime takes {' or '.join(RUNTIMES)}, not '{options.runtime}'")
    tensorrt = options.runtime == "tensorrt"
    if options.precision is not None and options.precision not in PRECISIONS:
        fail(f"--precision takes {', '.join(PRECISIONS)}, not '{options.precision}'")
    if not tensorrt and (options.precision is not None or options.dla is not None):
        fail("--precision and --dla choose how TensorRT builds its engine: give them with --runtime tensorrt")
    if options.dla is not None and options.precision == "fp32":
        fail("the DLA runs fp16 or int8 only: give --precision fp16 or int8 with --dla")
    if tensorrt and options.quantize:
        fail("--runtime tensorrt quantizes through --precision int8 (with --calibration): leave --quantize out")
    out: dict[str, str] = {}
    if options.runtime:
        out["runtime"] = options.runtime
    if options.precision:
        out["tensorrt.precision"] = options.precision
    if options.dla is not None:
        out["tensorrt.dla_core"] = str(options.dla)
    return out


@contextmanager
def driven(options: ProfileOptions) -> Iterator[tuple[list[Target], Any, StopSignal]]:
    """The targets to run on, the live progress and the stop signal, for the length of one profile.

    Ctrl-C/SIGTERM are caught before the local agent starts (so its start is covered too); the progress
    display is closed and the local agent stopped however the block ends.
    """
    from host.run.progress import make_progress

    stop = StopSignal()
    with ExitStack() as stack:
        stack.enter_context(stop_on_signals(stop))
        targets = resolve_targets(options.fleet, options.device, options.token_file, stack, options.tls_ca)
        progress = make_progress(options.quiet)
        close: Callable[[], None] | None = getattr(progress, "close", None)
        if close is not None:
            stack.callback(close)
        yield targets, progress, stop


def llama_options(options: ProfileOptions) -> dict[str, str]:
    """--ctx-size, --batch-size and --n-gpu-layers as the request options llama.cpp reads (unset ones left out)."""
    found = {"n_ctx": options.ctx_size, "n_batch": options.batch_size}
    chosen = {key: str(value) for key, value in found.items() if value}
    if options.n_gpu_layers is not None:
        chosen["n_gpu_layers"] = str(options.n_gpu_layers)
    return chosen


def input_shapes(flags: list[str]) -> dict[str, str]:
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

            if not fleet:  # the config chose: said first, so a plain `host profile` never goes elsewhere silently
                print(
                    f"host: profiling on fleet '{name}', the default_fleet of {config.path}"
                    " (--device or --fleet choose otherwise)",
                    file=sys.stderr,
                    flush=True,
                )
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


def file_sha256(path: Path | None, flag: str) -> str | None:
    """The sha256 of a file the user named (what a run records of it); one line when it cannot be read."""
    if path is None:
        return None
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        fail(f"cannot read {flag} {path}: {err.strerror}")


def read_inputs(inputs: Path | None) -> bytes:
    if inputs is None:
        return b""
    try:
        return inputs.read_bytes()
    except OSError as err:
        fail(f"cannot read --inputs {inputs}: {err.strerror}")


def make_compiler(
    quantize: str | None,
    quantize_mode: str,
    calibration: Path | None,
    shapes: dict[str, str],
    inputs: Path | None,
    runtime: str = "",
    precision: str = "",
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
            runtime=runtime,
            precision=precision,
        )
        return Compiler(options)
    except CompileError as err:
        fail(str(err))


def prompt_lens(text: str) -> tuple[int, ...]:
    """--prompt-len "16,128" as token counts; one line on a bad list."""
    try:
        lens = tuple(int(part) for part in text.split(","))
    except ValueError:
        fail(f"--prompt-len takes token counts separated by commas (e.g. 16,128), not '{text}'")
    if not lens or any(n < 1 for n in lens) or len(lens) > 64:
        fail(f"--prompt-len takes 1 to 64 positive token counts, not '{text}'")
    return lens


def prompt_text(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot read --prompt-file {path}: {getattr(err, 'strerror', None) or err}")
    if not text.strip():
        fail(f"--prompt-file {path} is empty")
    return text


def fail_if_invalid(fail_on_invalid: bool, documents: list[dict[str, Any]]) -> None:
    """With --fail-on-invalid, one line and exit 1 when a device measured a result that is not valid."""
    invalid = [
        d["device"]
        for document in documents
        for d in document["devices"]
        if d.get("status") == "ok" and (d.get("validity") or {}).get("valid") is False
    ]
    if fail_on_invalid and invalid:
        fail(f"--fail-on-invalid: the result of {', '.join(dict.fromkeys(invalid))} is not valid (reasons above)")


def write_file(path: Path, text: str) -> None:
    """Write an output file the user named (--json, -o); one line and exit 1 when it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        fail(f"cannot write {path}: {err.strerror}")
