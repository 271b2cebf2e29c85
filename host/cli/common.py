"""What every host command shares: the one-line failure exit, the run store, and options to reach agents."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from host.store import open as store_open
from host.store.sqlite import Store, StoreError

#: `--tls-ca PATH` of every command that talks to agents; read by host.fleet.config.credentials_for.
TlsCaOption = Annotated[
    Path | None,
    typer.Option("--tls-ca", help="CA certificate (PEM) the agents' TLS certificates chain to"),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line for a user mistake and exit non-zero: no traceback."""
    print(f"host: {message}", file=sys.stderr)
    raise typer.Exit(code)


def text_width() -> int | None:
    """Columns plain-text output may use: $COLUMNS, else the terminal's; None for a pipe or file (no folding)."""
    import os
    import shutil

    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def open_store() -> Store:
    """The configured run store, or one line saying why it cannot be opened."""
    try:
        return store_open.open_store()
    except StoreError as err:
        fail(str(err))


# -- options of every command that profiles (`host profile`, `host ab`): declared once, here ------------------

FleetOption = Annotated[str | None, typer.Option(help="fleet name from the config file")]
DeviceOption = Annotated[list[str] | None, typer.Option(help="agent address HOST:PORT (repeatable)")]
RunsOption = Annotated[
    int, typer.Option(min=1, help="minimum measured inferences (per repetition; generations per prompt length)")
]
WarmupOption = Annotated[
    int, typer.Option(min=0, help="minimum warmup inferences (warmup goes on until latency is stable)")
]
MinDurationOption = Annotated[float, typer.Option(min=0, help="minimum measured seconds (per repetition)")]
PromptLenOption = Annotated[
    str,
    typer.Option(
        "--prompt-len",
        help="GenAI and GGUF models: prompt length in tokens of synthetic token ids; a comma list sweeps (16,128)",
    ),
]
GenLenOption = Annotated[
    int, typer.Option("--gen-len", min=1, help="GenAI and GGUF models: tokens generated per prompt")
]
PromptFileOption = Annotated[
    Path | None,
    typer.Option(
        "--prompt-file", help="GenAI and GGUF models: a text prompt, tokenized on the board (instead of --prompt-len)"
    ),
]
CtxSizeOption = Annotated[
    int, typer.Option("--ctx-size", min=0, help="GGUF models: llama.cpp context in tokens (0 = min(4096, trained))")
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", min=0, help="GGUF models: llama.cpp prompt batch in tokens (0 = 2048)")
]
GpuLayersOption = Annotated[
    int | None,
    typer.Option(
        "--n-gpu-layers", min=-1, help="GGUF models: layers offloaded to the GPU (a CUDA/Metal/Vulkan llama.cpp)"
    ),
]
IdleOption = Annotated[float, typer.Option(min=0, help="seconds of idle power baseline before warmup")]
ThreadsOption = Annotated[int, typer.Option(min=0, help="intra-op threads (0 = runtime default)")]
InputShapeOption = Annotated[list[str] | None, typer.Option(help="NAME=1x3x224x224 for dynamic inputs (repeatable)")]
InputsOption = Annotated[Path | None, typer.Option(help=".npz of input arrays to use instead of random data")]
SampleRateOption = Annotated[float, typer.Option(min=0, help="sensor sampling rate in Hz (0 = agent default)")]
SettleTimeoutOption = Annotated[
    float,
    typer.Option(min=0, help="max seconds to wait for the board to cool (0 = the board profile's settle_timeout_s)"),
]
OpProfileOption = Annotated[bool, typer.Option("--op-profile", help="collect a per-operator profile")]
QuantizeOption = Annotated[str | None, typer.Option(help="quantize for every target: int8")]
QuantizeModeOption = Annotated[str, typer.Option(help="int8 quantization: dynamic or static")]
CalibrationOption = Annotated[
    Path | None,
    typer.Option(help=".npz of calibration inputs for static int8 (and for --runtime tensorrt --precision int8)"),
]
RuntimeOption = Annotated[
    str | None,
    typer.Option(
        "--runtime",
        metavar="NAME",
        help="onnxruntime, or tensorrt: an engine built on the board (default: each board profile's runtime)",
    ),
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        metavar="P",
        help="--runtime tensorrt: fp32, fp16 (default) or int8 (scales from --calibration, or the model's Q/DQ)",
    ),
]
DlaOption = Annotated[
    int | None,
    typer.Option(
        "--dla", min=0, max=7, metavar="N", help="--runtime tensorrt: run on DLA core N, the GPU taking what it cannot"
    ),
]
TimeoutOption = Annotated[float, typer.Option(min=0, help="per-job timeout in seconds (0 = agent default)")]
ReconnectOption = Annotated[
    float, typer.Option(min=0, help="seconds to keep re-attaching to an agent whose stream broke")
]
TokenFileOption = Annotated[Path | None, typer.Option(help="bearer token for the agents")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="no live progress")]
FailOnInvalidOption = Annotated[
    bool,
    typer.Option(
        "--fail-on-invalid",
        help="exit 1 when a device measured but its result is not valid (for CI: noisy figures never pass quietly)",
    ),
]


#: `--repeat K`: K measure phases per device, each in a fresh worker (the repetition is the unit of evidence).
RepeatOption = Annotated[
    int,
    typer.Option(
        min=1,
        max=100,
        metavar="K",
        help="measure K times per device, each in a fresh worker that loads the model again; figures pooled",
    ),
]


# -- options of every command that compares (`host compare`, `host ab`) -------------------------------------

FailOnRegressionOption = Annotated[
    float | None,
    typer.Option(
        min=0,
        metavar="PCT",
        help="exit 1 when a gated metric is worse by more than PCT percent (one-sided, Holm across gated metrics)",
    ),
]
GateMetricsOption = Annotated[
    str | None,
    typer.Option(
        metavar="LIST",
        help="comma-separated metrics that gate: latency-p50, energy, dynamic-energy, ttft-p50, decode-tokens-per-s"
        " (default: latency-p50,energy and, when both runs are generative, ttft-p50,decode-tokens-per-s)",
    ),
]
JudgeInvalidOption = Annotated[
    bool,
    typer.Option(
        "--judge-invalid",
        help="let the gate judge devices whose base or candidate result is not valid (by default it refuses:"
        " exit 3, NOT JUDGED)",
    ),
]
CompareFormatOption = Annotated[str, typer.Option("--format", "-f", help="text|md|json")]
CompareOutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="also write the comparison here")]
