"""What a compile is asked to do (CompileOptions) and how it says it cannot (CompileError), shared by every step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class CompileError(Exception):
    """A model cannot be made into what a device needs; the message is one line for the user."""


@dataclass(frozen=True)
class CompileOptions:
    #: "int8" or None (keep float weights).
    quantize: str | None = None
    #: "dynamic" (weights only, activations quantized at run time) or "static" (calibrated activations).
    quantize_mode: str = "dynamic"
    #: Static calibration inputs (arrays named after the model's inputs); None = random data.
    calibration_npz: Path | None = None
    calibration_samples: int = 16
    #: --input-shape values by input name ("1x3x224x224"), exactly as the agent receives them.
    input_shapes: Mapping[str, str] = field(default_factory=dict)
    #: --inputs: the run feeds this .npz's arrays, so their shapes are the ones dynamic dims are fixed to.
    inputs_npz: Path | None = None
    #: --runtime: "tensorrt" builds its own engine on the board (no ORT-specific optimization on the host).
    runtime: str = ""
    #: --precision for TensorRT: with "int8" and calibration data the host inserts symmetric Q/DQ nodes.
    precision: str = ""

    def __post_init__(self) -> None:
        from protos.inputs import InputError, parse_shape

        for name, text in self.input_shapes.items():
            try:
                parse_shape(text)
            except InputError as err:
                raise CompileError(f"--input-shape {name}={text}: {err}") from err
        if self.quantize not in (None, "int8"):
            raise CompileError(f"unknown quantization '{self.quantize}'; edgeprof supports int8")
        if self.quantize_mode not in ("dynamic", "static"):
            raise CompileError(f"unknown quantization mode '{self.quantize_mode}'; use dynamic or static")
        if self.calibration_samples < 1:
            raise CompileError("calibration samples must be at least 1")


def short_reason(err: BaseException) -> str:
    """The error as one line of at most 200 characters, for a CompileError message."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
