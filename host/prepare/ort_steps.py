"""ONNX Runtime steps for compile: offline optimisation, the .ort format, int8 quantisation with calibration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from host.prepare.compile_options import CompileError, CompileOptions, short_reason
from host.prepare.modelfile import InputDecl
from host.prepare.onnx_passes import conform_ir3_inputs
from host.prepare.ort_session import quiet_session_options


def _session_options(dst: Path, basic: bool = False) -> Any:
    import onnxruntime as ort

    options = quiet_session_options()
    # EXTENDED, not ALL: layout (NCHWc) rewrites at ALL are tied to the host CPU and may not load on the board.
    # BASIC keeps to standard ONNX ops (constant folding, redundant nodes): for graphs another tool reads next.
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_BASIC if basic else level.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    return options


def ort_optimize(src: Path, dst: Path) -> None:
    """ONNX Runtime offline optimisation: the graph a CPU session would build, saved as ONNX."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(src), _session_options(dst), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
        raise CompileError(f"ONNX Runtime cannot optimise {src.name}: {short_reason(err)}") from err


def fold_constants(src: Path, dst: Path) -> None:
    """Weights computed in the graph (ConstantOfShape, Range...) become initializers, by ONNX Runtime at BASIC.

    The graph stays standard ONNX: what converters such as onnx2tf need, which cannot take generated weights.
    """
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(src), _session_options(dst, basic=True), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise CompileError(f"ONNX Runtime cannot fold the constants of {src.name}: {short_reason(err)}") from err


def ort_format(src: Path, dst: Path) -> None:
    """ONNX Runtime format (.ort) for minimal-build runtimes, saved by a session at the EXTENDED level.

    Not through onnxruntime.tools.convert_onnx_models_to_ort: it optimises at the ALL level, whose
    layout rewrites belong to the host's CPU, not the board's.
    """
    import onnxruntime as ort

    options = _session_options(dst)
    try:
        options.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise CompileError(
            f"this onnxruntime cannot save {src.name} in ORT format ({short_reason(err)}); "
            "install the full onnxruntime package on the host"
        ) from err
    if not dst.is_file():
        raise CompileError(f"onnxruntime {ort.__version__} wrote no ORT-format model for {src.name}")


def quantize_int8(
    src: Path, dst: Path, options: CompileOptions, inputs: tuple[InputDecl, ...], for_tensorrt: bool = False
) -> None:
    """int8 with onnxruntime.quantization: constants folded first so generated weights are quantized too.

    `for_tensorrt`: static Q/DQ with symmetric scales (zero points 0), the only int8 TensorRT's explicit
    quantization accepts."""
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise CompileError("--quantize needs onnxruntime.quantization on the host: pip install onnxruntime") from err
    prepared = dst.with_name(dst.stem + "-prep.onnx")
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        conform_ir3_inputs(prepared)
        if for_tensorrt:
            reader = _CalibrationReader(_calibration_samples(options, inputs))
            quantize_static(
                str(prepared),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                # TensorRT's explicit quantization: int8 with zero points 0, biases left float (it fuses them).
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
        elif options.quantize_mode == "dynamic":
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8)
        else:
            reader = _CalibrationReader(_calibration_samples(options, inputs))
            quantize_static(
                str(prepared),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
            )
    except CompileError:
        raise
    except Exception as err:
        raise CompileError(
            f"int8 {options.quantize_mode} quantization of {src.name} failed: {short_reason(err)}"
        ) from err


def _fits(shape: tuple[int, ...], declared: tuple[Any, ...]) -> bool:
    """Whether an array shape is one the model takes (its dynamic dims take any size)."""
    return len(shape) == len(declared) and all(
        not (isinstance(want, int) and want > 0) or got == want for got, want in zip(shape, declared, strict=True)
    )


def calibration_split(name: str, array: Any, declared: tuple[Any, ...]) -> list[Any]:
    """One input's calibration samples from its .npz array, in the layouts docs/calibration.md describes.

    The array is one sample when the model takes its shape; a stack of samples when it has one axis more
    (axis 0 indexes them); and a batch to split when its first axis is a multiple of a fixed batch dimension:
    (8, 3, 224, 224) for an input fixed at (1, 3, 224, 224) is 8 samples, for (2, 3, 224, 224) it is 4.
    Anything else is a CompileError saying which shapes fit.
    """
    shape = tuple(int(n) for n in array.shape)
    if _fits(shape, declared):
        return [array]
    if len(shape) == len(declared) + 1 and _fits(shape[1:], declared):
        return list(array)
    batch = declared[0] if declared else None
    if (
        isinstance(batch, int)
        and batch > 0
        and len(shape) == len(declared)
        and shape[0] % batch == 0
        and _fits((batch, *shape[1:]), declared)
    ):
        return [array[i : i + batch] for i in range(0, shape[0], batch)]
    want = "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in declared)
    raise CompileError(
        f"calibration data for input '{name}' has shape {'x'.join(map(str, shape))}; the model takes {want}:"
        f" give one sample of that shape, a stack of samples (an extra leading axis), or a batch whose first"
        f" axis is a multiple of {batch if isinstance(batch, int) and batch > 0 else 'the batch size'}"
        " (see docs/calibration.md)"
    )


def _calibration_samples(options: CompileOptions, inputs: tuple[InputDecl, ...]) -> list[dict[str, Any]]:
    """Calibration feeds: from the npz (calibration_split: one sample, a stack, or a batch to split), else
    seeded random data."""
    import numpy as np

    count = options.calibration_samples
    if options.calibration_npz is not None:
        try:
            with np.load(options.calibration_npz) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as err:
            raise CompileError(f"cannot read calibration data {options.calibration_npz}: {short_reason(err)}") from err
        missing = [d.name for d in inputs if d.name not in arrays]
        if missing:
            raise CompileError(f"calibration data {options.calibration_npz} lacks input(s): {', '.join(missing)}")
        per_input = {d.name: calibration_split(d.name, arrays[d.name], d.shape) for d in inputs}
        count = min([count, *(len(v) for v in per_input.values())])
        return [{d.name: per_input[d.name][i].astype(d.dtype) for d in inputs} for i in range(count)]
    # Seeded: the same recipe must give the same artifact, whichever host builds it.
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(count):
        feed = {}
        for decl in inputs:
            shape = tuple(dim if isinstance(dim, int) and dim > 0 else 1 for dim in decl.shape)
            if decl.dtype.startswith("float"):
                feed[decl.name] = rng.standard_normal(shape).astype(decl.dtype)
            else:
                feed[decl.name] = np.zeros(shape, dtype=decl.dtype)
        samples.append(feed)
    return samples


class _CalibrationReader:
    """An onnxruntime.quantization CalibrationDataReader over prepared feeds (duck-typed: get_next/rewind)."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self._samples = samples
        self._iter: Iterator[dict[str, Any]] = iter(samples)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._samples)
