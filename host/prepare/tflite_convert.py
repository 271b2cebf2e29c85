"""ONNX → TFLite for TFLite targets: onnx2tf in a child process, the result loaded and checked against ONNX Runtime.

The converter is optional (``pip install 'edgeprof[tflite-convert]'``: onnx2tf and TensorFlow, about 2 GB).
It runs in a child process, not in the host, because onnx2tf:

- imports TensorFlow (~1.5 s, hundreds of MB that stay resident) and sets ``TF_USE_LEGACY_KERAS=1`` in
  ``os.environ`` at import, and keeps Keras graph state between conversions;
- prints pages of progress on stdout and lets TensorFlow's C++ logging write to fd 2, which a
  ``contextlib.redirect_stdout`` in this process cannot silence;
- ends with ``sys.exit(1)`` on a model it cannot convert, and a TensorFlow abort or segfault would take
  down a host that is driving a whole fleet.

The child also runs the checks: the .tflite must load in LiteRT with the ONNX model's number of inputs
and outputs, and (by default) give ONNX Runtime's outputs on the same seeded random inputs. onnx2tf can
convert without complaint and still be wrong (opset < 13 ``Softmax`` without an axis takes the wrong
axis, for one; we upgrade such models to opset 13 first), so a converted model is not trusted unchecked.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import site
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CONVERTER = "onnx2tf"
EXTRA_HINT = (
    "converting ONNX to TFLite needs the converter: pip install 'edgeprof[tflite-convert]' "
    "(or convert the model yourself and profile the .tflite)"
)
#: What the child imports: onnx2tf imports all of these at its top level, the checks use the last three.
_REQUIRED_MODULES = ("onnx2tf", "tensorflow", "tf_keras", "onnx_graphsurgeon", "sng4onnx", "psutil")
_CHECK_MODULES = ("onnx", "onnxruntime", "ai_edge_litert")
#: Below this default-domain opset, models are upgraded before conversion (see the module docstring).
_MIN_OPSET = 13
#: Default bound on |TFLite - ORT|, relative to the largest |ORT output| (at least 1).
DEFAULT_TOLERANCE = 1e-3
_RESULT = "result.json"
_LOG = "convert.log"


class ConversionError(Exception):
    """The model could not be converted, or the conversion is not trustworthy; the message is one line."""


def available() -> bool:
    """Whether the converter and what the checks need are installed (a file-system lookup; imports nothing)."""
    return not _missing_modules()


def _missing_modules() -> list[str]:
    missing = []
    for name in (*_REQUIRED_MODULES, *_CHECK_MODULES):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module already imported without a spec still counts as there
            found = name in sys.modules and sys.modules[name] is not None
        if not found:
            missing.append(name)
    return missing


def converter_recipe(
    *, input_shapes: Mapping[str, Sequence[int]] | None = None, keep_nchw_inputs: bool = True
) -> dict[str, Any]:
    """What a conversion with these options is, as a JSON-able dict for the compile recipe (and its cache key).

    Cheap: versions come from package metadata, nothing is imported. A new onnx2tf or TensorFlow
    changes the dict, so artifacts cached from the old one are not reused.
    """
    options: dict[str, Any] = {"keep_nchw_inputs": keep_nchw_inputs, "min_opset": _MIN_OPSET, "onnxsim": False}
    if input_shapes:
        options["input_shapes"] = {name: [int(d) for d in dims] for name, dims in sorted(input_shapes.items())}
    return {
        "converter": CONVERTER,
        "version": _dist_version("onnx2tf"),
        "tensorflow": _dist_version("tensorflow"),
        "output": "float32",
        "options": options,
    }


def convert_onnx_to_tflite(
    src: Path,
    dst: Path,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    keep_nchw_inputs: bool = True,
    check_outputs: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    timeout_s: float = 1200.0,
) -> dict[str, Any]:
    """Convert ``src`` (ONNX) to a float32 .tflite at ``dst``, written atomically; ConversionError otherwise.

    The .tflite has static input shapes: ``input_shapes`` (ONNX layout, e.g. ``{"data": (1, 3, 224, 224)}``)
    where given, else the declared ones with 1 for each dynamic dim. ``keep_nchw_inputs`` keeps the ONNX
    input layout (names and shapes then match the ONNX model, so ``--input-shape`` means the same for
    both; onnx2tf adds a transpose inside); False gives onnx2tf's channels-last inputs. ``check_outputs``
    compares TFLite with ONNX Runtime on seeded random inputs and fails when
    ``max|tflite - ort| > tolerance * max(1, max|ort|)``.

    Returns ``converter_recipe(...)`` plus ``"check"``: the inputs, outputs and measured error.
    """
    missing = _missing_modules()
    if missing:
        raise ConversionError(f"{EXTRA_HINT}; missing: {', '.join(missing)}")
    shapes = _checked_shapes(input_shapes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Scratch next to dst: os.replace from it is atomic (same file system), and onnx2tf's saved_model,
    # float16 copy and temporary files all go there and are removed with it.
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".tflite-convert-") as scratch:
        work = Path(scratch).resolve()  # the child runs with it as its cwd: no relative paths
        request = {
            "src": str(src.resolve()),
            "out_dir": str(work / "out"),
            "input_shapes": shapes,
            "keep_nchw_inputs": keep_nchw_inputs,
            "check_outputs": check_outputs,
            "tolerance": tolerance,
        }
        (work / "request.json").write_text(json.dumps(request))
        result = _run_child(work, src, timeout_s)
        os.replace(result.pop("tflite"), dst)
    recipe = converter_recipe(input_shapes=shapes, keep_nchw_inputs=keep_nchw_inputs)
    return {**recipe, "check": result}


def _checked_shapes(input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for name, dims in (input_shapes or {}).items():
        values = [int(d) for d in dims]
        if not values or any(d < 1 for d in values):
            raise ConversionError(f"input shape for '{name}' must be positive dimensions, got {list(dims)}")
        shapes[name] = values
    return shapes


def _run_child(work: Path, src: Path, timeout_s: float) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        TF_CPP_MIN_LOG_LEVEL="3",
        # Conversion needs no GPU; without this TensorFlow would reserve the memory of every GPU on the
        # host, where a local agent may be measuring.
        CUDA_VISIBLE_DEVICES="",
        TMPDIR=str(work),
        PYTHONUNBUFFERED="1",
    )
    root = str(Path(__file__).resolve().parents[1])
    if root not in site.getsitepackages():  # a source checkout: the child, started in the scratch dir, needs it
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    log_path = work / _LOG
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "host.prepare.tflite_convert", str(work / "request.json")],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise ConversionError(f"{CONVERTER} did not finish converting {src.name} within {timeout_s:.0f} s") from err
    result_path = work / _RESULT
    result: dict[str, Any] = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if proc.returncode == 0 and result.get("ok"):
        return dict(result["check"], tflite=str(work / "out" / "model_float32.tflite"))
    log_text = _ANSI.sub("", log_path.read_text(errors="replace"))
    reason = result.get("error") or _error_from_log(log_text)
    if not reason:
        reason = f"the converter process ended with status {proc.returncode}"
        if proc.returncode < 0:
            reason = f"the converter process was killed by signal {-proc.returncode}"
    raise ConversionError(_one_line(f"converting {src.name} to TFLite failed{_failing_node(log_text)}: {reason}"))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error_from_log(text: str) -> str:
    """onnx2tf's last ERROR line (it logs one, then calls sys.exit), else a traceback's last line, else ''."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    # After a failing op it also logs where and generic advice about its command-line options: skip those.
    advice = ("The trace log", "input_onnx_file_path", "onnx_op_", "Read this", "Alternatively", "If the", "Also,")
    for line in reversed(errors):
        if not line.startswith(advice):
            return line
    if "Traceback (most recent call last):" in lines:
        return lines[-1]
    return ""


def _failing_node(text: str) -> str:
    """' at <op> node <name>' from onnx2tf's log of the op it failed on, or ''."""
    name = re.findall(r"ERROR:\s*onnx_op_name:\s*(\S+)", text)
    kind = re.findall(r"ERROR:\s*onnx_op_type:\s*(\S+)", text)
    if not name:
        return ""
    return f" at {kind[-1] + ' ' if kind else ''}node '{name[-1]}'"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


# ---------------------------------------------------------------------------------------------------------
# The child process: python -m host.prepare.tflite_convert REQUEST.json (cwd and TMPDIR are the scratch dir)


def _child_main(request_path: str) -> int:
    work = Path(request_path).parent
    request = json.loads(Path(request_path).read_text())
    try:
        check = _child_convert(work, request)
    except ConversionError as err:
        _write_result(work, {"ok": False, "error": str(err)})
        return 1
    except SystemExit:  # onnx2tf logged an ERROR line and exited: the parent reads it from the log
        _write_result(work, {"ok": False})
        return 1
    except Exception as err:
        _write_result(work, {"ok": False, "error": f"{type(err).__name__}: {err}"})
        return 1
    _write_result(work, {"ok": True, "check": check})
    return 0


def _write_result(work: Path, result: dict[str, Any]) -> None:
    sys.stdout.flush()
    (work / _RESULT).write_text(json.dumps(result))


def _child_convert(work: Path, request: dict[str, Any]) -> dict[str, Any]:
    try:
        import onnx2tf  # type: ignore[import-not-found]
    except ImportError as err:  # installed, but one of its own imports is missing or broken
        raise ConversionError(f"{EXTRA_HINT}; {CONVERTER} cannot be imported: {err}") from err
    import onnx

    src = Path(request["src"])
    try:
        model = onnx.load(str(src))
    except Exception as err:
        raise ConversionError(f"cannot read {src.name} as ONNX: {_one_line(str(err), 150)}") from err
    initializers = {init.name for init in model.graph.initializer}
    onnx_inputs = [value for value in model.graph.input if value.name not in initializers]
    shapes = _static_shapes(src, onnx_inputs, request["input_shapes"])
    prepared = work / "model.onnx"  # onnx2tf names its outputs after this file, and may rewrite it in place
    onnx.save(_prepared(model, shapes), str(prepared))
    channel_first = [name for name, dims in shapes.items() if 3 <= len(dims) <= 5]
    # onnx2tf fetches sample images from GitHub for its per-op layout checks when inputs look like NHWC
    # images; a host offline (CI, a lab network) would fail. Seeded data in its working dir is used instead.
    _write_sample_images(work)
    try:
        onnx2tf.convert(
            input_onnx_file_path=str(prepared),
            output_folder_path=request["out_dir"],
            non_verbose=True,
            # onnxsim is a separate tool that onnx2tf runs by subprocess; the shapes are made static here.
            not_use_onnxsim=True,
            keep_ncw_or_nchw_or_ncdhw_input_names=(channel_first or None) if request["keep_nchw_inputs"] else None,
        )
    except ModuleNotFoundError as err:
        # onnx2tf imports onnx2tf.ops.<OpType> for every node: a missing one is an op it cannot convert.
        if not (err.name or "").startswith("onnx2tf.ops."):
            raise
        op = (err.name or "").rsplit(".", 1)[-1]
        raise ConversionError(f"{CONVERTER} {_dist_version('onnx2tf')} cannot convert ONNX op {op}") from err
    tflite = Path(request["out_dir"]) / "model_float32.tflite"
    if not tflite.is_file():
        raise ConversionError(f"{CONVERTER} wrote no float32 .tflite for {src.name}")
    return _check_tflite(src, tflite, model, onnx_inputs, shapes, request)


def _static_shapes(src: Path, onnx_inputs: list[Any], given: dict[str, list[int]]) -> dict[str, list[int]]:
    """Every input's shape with no dynamic dim: ``given`` where named, else the declared dims with 1 for dynamic.

    onnx2tf (without onnxsim) fails on many models with a dynamic dim, and a profile needs fixed shapes anyway.
    """
    unknown = sorted(set(given) - {value.name for value in onnx_inputs})
    if unknown:
        raise ConversionError(f"{src.name} has no input named {', '.join(unknown)}")
    shapes = {}
    for value in onnx_inputs:
        ttype = value.type.tensor_type
        if not ttype.HasField("shape") and value.name not in given:
            raise ConversionError(f"input '{value.name}' of {src.name} declares no shape: give it one")
        declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim]
        dims = given.get(value.name)
        if dims is None:
            shapes[value.name] = [d or 1 for d in declared]
            continue
        clash = len(dims) != len(declared) or any(
            d is not None and d != g for d, g in zip(declared, dims, strict=False)
        )
        if ttype.HasField("shape") and clash:
            shown = ["?" if d is None else d for d in declared]
            raise ConversionError(f"input shape {dims} for '{value.name}' does not fit its declared shape {shown}")
        shapes[value.name] = list(dims)
    return shapes


def _prepared(model: Any, shapes: dict[str, list[int]]) -> Any:
    """The model as onnx2tf converts it right: opset >= 13 (it misreads some older ops), static input shapes."""
    import onnx
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), _MIN_OPSET)
    if opset < _MIN_OPSET:
        try:
            model = version_converter.convert_version(model, _MIN_OPSET)
        except Exception as err:
            raise ConversionError(
                f"cannot upgrade the model from opset {opset} to {_MIN_OPSET} for {CONVERTER} "
                f"(which misreads some older ops): {_one_line(str(err), 150)}"
            ) from err
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's copy stays as it was
    for value in model.graph.input:
        if value.name in shapes:
            value.type.tensor_type.ClearField("shape")
            for dim in shapes[value.name]:
                value.type.tensor_type.shape.dim.add().dim_value = dim
    # Shapes inferred from the dynamic inputs would contradict the static ones: infer them anew.
    del model.graph.value_info[:]
    for value in model.graph.output:
        if not all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim):
            value.type.tensor_type.ClearField("shape")
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:
        raise ConversionError(f"shape inference with inputs {shapes} failed: {_one_line(str(err), 150)}") from err


def _write_sample_images(work: Path) -> None:
    import numpy as np

    # The file name onnx2tf looks for in its working directory before downloading (20 images, 128x128 RGB).
    name = "calibration_image_sample_data_20x128x128x3_float32.npy"
    np.save(work / name, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))


def _check_tflite(
    src: Path, tflite: Path, model: Any, onnx_inputs: list[Any], shapes: dict[str, list[int]], request: dict[str, Any]
) -> dict[str, Any]:
    """Load the .tflite in LiteRT, compare input/output counts and (if asked) outputs with ONNX Runtime."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]

    try:
        interpreter = Interpreter(model_path=str(tflite), num_threads=1)
        interpreter.allocate_tensors()
    except Exception as err:
        raise ConversionError(f"the converted model does not load in LiteRT: {_one_line(str(err), 150)}") from err
    tfl_inputs = interpreter.get_input_details()
    tfl_outputs = interpreter.get_output_details()
    n_outputs = len(model.graph.output)
    if len(tfl_inputs) != len(onnx_inputs) or len(tfl_outputs) != n_outputs:
        raise ConversionError(
            f"the converted model has {len(tfl_inputs)} input(s) and {len(tfl_outputs)} output(s); "
            f"{src.name} has {len(onnx_inputs)} and {n_outputs}"
        )
    check: dict[str, Any] = {
        "inputs": [{"name": d["name"], "shape": [int(x) for x in d["shape_signature"]]} for d in tfl_inputs],
        "outputs": [{"name": d["name"], "shape": [int(x) for x in d["shape_signature"]]} for d in tfl_outputs],
    }
    if not request["check_outputs"]:
        return check
    import onnxruntime as ort

    feeds = _random_feeds(onnx_inputs, shapes)
    from host.prepare.ort_session import quiet_session_options

    session = ort.InferenceSession(str(src), quiet_session_options(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    names = list(feeds)
    for position, detail in enumerate(tfl_inputs):
        # onnx2tf keeps plain input names; names it had to change are matched by position.
        array = feeds[detail["name"] if detail["name"] in feeds else names[position]]
        shape = tuple(int(x) for x in detail["shape"])
        if array.shape != shape and array.ndim >= 3:
            array = array.transpose(0, *range(2, array.ndim), 1).copy()  # channels-last input
        if array.shape != shape:
            raise ConversionError(f"converted input '{detail['name']}' has shape {list(shape)}, not that of {src.name}")
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    actual = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    error = compare_outputs([np.asarray(e) for e in expected], actual)
    check.update(
        {
            "data": "seeded standard normal",
            "max_abs_error": error["max_abs_error"],
            "max_rel_error": error["max_rel_error"],
            "tolerance": request["tolerance"],
        }
    )
    if error["max_rel_error"] > request["tolerance"]:
        raise ConversionError(
            f"the converted model's outputs differ from ONNX Runtime's on the same input "
            f"(max error {error['max_rel_error']:.3g} of the output's scale, tolerance {request['tolerance']:g})"
        )
    return check


def _random_feeds(onnx_inputs: list[Any], shapes: dict[str, list[int]]) -> dict[str, Any]:
    import numpy as np
    from onnx import helper

    rng = np.random.default_rng(0)
    feeds = {}
    for value in onnx_inputs:
        dims = shapes[value.name]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        if dtype.kind == "f":
            feeds[value.name] = rng.standard_normal(dims).astype(dtype)
        else:
            feeds[value.name] = np.zeros(dims, dtype=dtype)
    return feeds


def compare_outputs(expected: list[Any], actual: list[Any]) -> dict[str, float]:
    """Worst disagreement between ORT's outputs and TFLite's, each TFLite output taken as is or channels-first.

    Each ONNX output is paired with the TFLite output at its position when the shapes fit, else with the
    closest unpaired one of a fitting shape (onnx2tf does not promise ONNX's output order).
    ``max_rel_error`` is relative to max(1, the largest |expected| value) of each output.
    """
    import numpy as np

    unpaired = list(range(len(actual)))
    worst_abs = worst_rel = 0.0
    for position, want in enumerate(expected):
        fits = {i: _layouts(np.asarray(actual[i]), want.shape) for i in unpaired}
        fits = {i: views for i, views in fits.items() if views}
        if not fits:
            have = [list(np.shape(actual[i])) for i in unpaired]
            raise ConversionError(
                f"no converted output fits ONNX output {position} of shape {list(want.shape)} ({have})"
            )
        choices = [position] if position in fits else list(fits)
        diff, chosen = min((min(_max_abs_diff(want, view) for view in fits[i]), i) for i in choices)
        unpaired.remove(chosen)
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0))) if want.dtype.kind in "fiu" else 1.0
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / scale)
    return {"max_abs_error": worst_abs, "max_rel_error": worst_rel}


def _layouts(array: Any, shape: tuple[int, ...]) -> list[Any]:
    """``array`` in the views that have ``shape``: as is, and channels-last moved back to channels-first."""
    views = [array] if array.shape == tuple(shape) else []
    if array.ndim >= 3:
        back = array.transpose(0, array.ndim - 1, *range(1, array.ndim - 1))
        if back.shape == tuple(shape):
            views.append(back)
    return views


def _max_abs_diff(want: Any, got: Any) -> float:
    """max |want - got| over finite values; inf when non-finite values or non-float values differ."""
    import numpy as np

    if want.dtype.kind not in "fc" or got.dtype.kind not in "fc":
        return 0.0 if np.array_equal(want, got) else float("inf")
    w, g = want.astype(np.float64), got.astype(np.float64)
    finite = np.isfinite(w)
    if not np.array_equal(finite, np.isfinite(g)) or not np.array_equal(w[~finite], g[~finite], equal_nan=True):
        return float("inf")
    return float(np.max(np.abs(w[finite] - g[finite]), initial=0.0))


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
