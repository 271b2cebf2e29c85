"""Per-target compile on the host: the device profile's [compile] recipe applied to a model, cached by content."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.profiles import GENERIC_PROFILE, DeviceProfile, load_profile
from host.modelfile import InputDecl, ModelFile, ModelFileError, inspect
from protos import agent_pb2 as pb

#: File suffix of each target format's artifact.
_EXTENSIONS = {"onnx": "onnx", "ort": "ort", "tflite": "tflite"}


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

    def __post_init__(self) -> None:
        from agent.errors import InvalidInput
        from agent.inputs import parse_shape

        for name, text in self.input_shapes.items():
            try:
                parse_shape(text)
            except InvalidInput as err:
                raise CompileError(f"--input-shape {name}={text}: {err}") from err
        if self.quantize not in (None, "int8"):
            raise CompileError(f"unknown quantization '{self.quantize}'; edgeprof supports int8")
        if self.quantize_mode not in ("dynamic", "static"):
            raise CompileError(f"unknown quantization mode '{self.quantize_mode}'; use dynamic or static")
        if self.calibration_samples < 1:
            raise CompileError("calibration samples must be at least 1")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeprof" / "compiled"


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "none"
    return str(onnxruntime.__version__)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class Compiler:
    """A CompileFn: ``compiler(model, info)`` returns the artifact for that device and the recipe it received.

    Thread-safe: devices sharing a recipe wait on one lock per cache key, so each artifact is built once.
    """

    def __init__(self, options: CompileOptions, cache_dir: Path | None = None) -> None:
        self.options = options
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._opsets: dict[str, int] = {}  # model sha256 -> default-domain opset, read once per model

    def __call__(self, model: ModelFile, info: pb.DeviceInfo) -> tuple[ModelFile, dict[str, Any]]:
        recipe = self.recipe(model, info)
        if not recipe["steps"]:
            return model, recipe
        key = self.cache_key(model, recipe)
        path = self.cache_dir / f"{key}.{_EXTENSIONS[recipe['target_format']]}"
        with self._lock_for(key):
            cached = path.is_file()
            if not cached:
                self._build(model, recipe, path)
            try:
                artifact = inspect(path)
            except ModelFileError as err:
                path.unlink(missing_ok=True)  # a damaged artifact must not be served again
                raise CompileError(f"compiled model for {_device(info)} is invalid: {err}") from err
        return artifact, {**recipe, "cached": cached}

    def recipe(self, model: ModelFile, info: pb.DeviceInfo) -> dict[str, Any]:
        """What this device gets: the profile's [compile] table and the options, as a JSON-able dict."""
        profile = _profile(info.profile)
        hints = profile.compile
        optimize = str(hints.get("optimize", ""))
        target = str(hints.get("format", "tflite" if profile.runtime == "tflite" else "onnx"))
        if optimize == "ort-format":
            target = "ort"
        if target not in _EXTENSIONS:
            raise CompileError(f"profile {profile.name}: unknown compile format '{target}' (onnx, ort or tflite)")
        max_opset = _max_opset(profile)
        recipe: dict[str, Any] = {"target_format": target, "steps": [], "profile": profile.name}
        if model.format in ("tflite", "ort"):
            self._check_passthrough(model, info, profile, target)
            return recipe
        if target == "tflite":
            raise CompileError(
                f"device {_device(info)} (profile {profile.name}) needs a .tflite model: edgeprof does not convert "
                "ONNX to TFLite; convert it first (e.g. with onnx2tf) and profile the .tflite file"
            )
        steps: list[str] = []
        if max_opset is not None and self._default_opset(model) > max_opset:
            steps.append(f"opset-{max_opset}")
        shapes = self._run_shapes(model)
        if shapes:
            # The shapes are part of the recipe, hence of the cache key and of each device's result.
            steps.append("fix-dims")
            recipe["input_shapes"] = {name: list(dims) for name, dims in shapes.items()}
        if self.options.quantize:
            steps.append(f"quantize-{self.options.quantize}-{self.options.quantize_mode}")
            if self.options.quantize_mode == "static":
                recipe["calibration"] = self._calibration_doc()
        if target == "ort":
            steps += ["ort-optimize", "ort-format"]
        elif optimize == "ort-offline":
            steps.append("ort-optimize")
        elif optimize:
            raise CompileError(f"profile {profile.name}: unknown optimize '{optimize}' (ort-offline or ort-format)")
        if steps:
            recipe["steps"] = ["check", *steps]
        return recipe

    def cache_key(self, model: ModelFile, recipe: dict[str, Any]) -> str:
        # The profile's name does not change the artifact: boards with the same recipe share one.
        content = {k: v for k, v in recipe.items() if k not in ("profile", "cached")}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{model.sha256}\n{canonical}\n{_ort_version()}".encode()).hexdigest()

    def _default_opset(self, model: ModelFile) -> int:
        with self._locks_guard:
            opset = self._opsets.get(model.sha256)
        if opset is None:
            import onnx

            opset = default_opset(onnx.load(str(model.path), load_external_data=False))
            with self._locks_guard:
                self._opsets[model.sha256] = opset
        return opset

    def _run_shapes(self, model: ModelFile) -> dict[str, tuple[int, ...]]:
        """The input shapes the agent will run with, by the agent's own rules; {} when the model's dims are static.

        Fixing dynamic dims to exactly these shapes is what keeps host and agent from disagreeing: the agent
        resolves --input-shape (or reads the .npz) against the fixed model and gets the same shapes back.
        """
        from agent.errors import InvalidInput
        from agent.inputs import load_npz, resolve_shapes
        from agent.runtimes.base import TensorSpec

        specs = [TensorSpec(d.name, d.dtype, d.shape) for d in model.inputs]
        dynamic = any(not _is_fixed(dim) for decl in model.inputs for dim in decl.shape)
        try:
            if not dynamic:
                resolve_shapes(specs, self.options.input_shapes)  # --input-shape may restate static dims, no more
                return {}
            if self.options.inputs_npz is not None:
                feeds = load_npz(_read_npz(self.options.inputs_npz), specs)
                shapes = {name: tuple(int(d) for d in array.shape) for name, array in feeds.items()}
            else:
                shapes = resolve_shapes(specs, self.options.input_shapes)
        except InvalidInput as err:
            raise CompileError(f"{model.path.name}: {err}") from err
        _check_shared_dims(model.inputs, shapes)
        return shapes

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _check_passthrough(self, model: ModelFile, info: pb.DeviceInfo, profile: DeviceProfile, target: str) -> None:
        if self.options.quantize:
            raise CompileError(
                f"device {_device(info)}: --quantize works on ONNX models only; {model.path.name} is already "
                f"a {model.format} model"
            )
        if model.format == "tflite" and target != "tflite":
            runtimes = {r.name for r in info.runtimes}
            if "tflite" not in runtimes:
                found = ", ".join(sorted(runtimes)) or "none"
                raise CompileError(
                    f"device {_device(info)} (profile {profile.name}) has no tflite runtime (it reports: {found}); "
                    "install tflite-runtime on the agent or send an ONNX model"
                )
        if model.format == "ort" and target == "tflite":
            raise CompileError(f"device {_device(info)} (profile {profile.name}) needs a .tflite model, not .ort")

    def _calibration_doc(self) -> dict[str, Any]:
        npz = self.options.calibration_npz
        doc: dict[str, Any] = {"samples": self.options.calibration_samples}
        if npz is None:
            doc["data"] = "random"
        else:
            try:
                doc["data"] = "npz:" + hashlib.sha256(npz.read_bytes()).hexdigest()
            except OSError as err:
                raise CompileError(f"cannot read calibration data {npz}: {err.strerror or err}") from err
        return doc

    def _build(self, model: ModelFile, recipe: dict[str, Any], path: Path) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix=".build-") as scratch:
            current = model.path
            for index, step in enumerate(recipe["steps"]):
                out = Path(scratch) / f"{index}-{step}.{'ort' if step == 'ort-format' else 'onnx'}"
                if step == "check":
                    check_onnx(current, out)
                elif step == "fix-dims":
                    fix_dims(current, out, recipe["input_shapes"], model.path.name)
                elif step.startswith("opset-"):
                    convert_opset(current, out, int(step.removeprefix("opset-")), recipe["profile"], model.path.name)
                elif step == "ort-optimize":
                    ort_optimize(current, out)
                elif step == "ort-format":
                    ort_format(current, out)
                elif step.startswith("quantize-int8-"):
                    # After fix-dims the graph takes only the fixed shapes: calibration feeds get them too.
                    fixed = recipe.get("input_shapes", {})
                    inputs = tuple(replace(d, shape=tuple(fixed.get(d.name, d.shape))) for d in model.inputs)
                    quantize_int8(current, out, self.options, inputs)
                if out.suffix == ".onnx" and step != "check":
                    conform_ir3_inputs(out)
                current = out
            # Atomic: other processes sharing the cache never see a half-written artifact.
            os.replace(current, path)


def _profile(name: str) -> DeviceProfile:
    try:
        return load_profile(name or GENERIC_PROFILE)
    except ValueError:
        return load_profile(GENERIC_PROFILE)


def _device(info: pb.DeviceInfo) -> str:
    return info.hostname or "?"


def _max_opset(profile: DeviceProfile) -> int | None:
    value = profile.compile.get("max_opset")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CompileError(
            f"profile {profile.name}: [compile] max_opset must be a positive integer (an ONNX opset, e.g. 13), "
            f"not {value!r}"
        )
    return value


def _is_fixed(dim: int | str | None) -> bool:
    # The agent's rule (agent.inputs.resolve_shapes): only a positive integer is a fixed dim.
    return isinstance(dim, int) and dim > 0


def _read_npz(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CompileError(f"cannot read --inputs {path}: {err.strerror or err}") from err


def _check_shared_dims(inputs: Sequence[InputDecl], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """A symbolic dim named in several inputs (a shared batch "N") must get one size in all of them."""
    sizes: dict[str, tuple[str, int]] = {}
    for decl in inputs:
        for axis, dim in enumerate(decl.shape):
            if not isinstance(dim, str) or decl.name not in shapes:
                continue
            size = shapes[decl.name][axis]
            first = sizes.setdefault(dim, (decl.name, size))
            if first[1] != size:
                raise CompileError(
                    f"inputs '{first[0]}' and '{decl.name}' share the dynamic dim '{dim}' but would run with "
                    f"{first[1]} and {size}: give both with --input-shape"
                )


def check_onnx(src: Path, dst: Path) -> None:
    """onnx.checker, then shape inference written out, so later steps see typed intermediate values."""
    import onnx

    try:
        onnx.checker.check_model(str(src))
        onnx.shape_inference.infer_shapes_path(str(src), str(dst))
    except Exception as err:  # ValidationError, InferenceError, protobuf decode errors
        raise CompileError(f"{src.name} fails the ONNX checks: {_short(err)}") from err


def _show_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    return ", ".join(f"{name}={'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def fix_dims(src: Path, dst: Path, shapes: Mapping[str, Sequence[int]], name: str) -> None:
    """Dynamic input dims fixed to the run's shapes, then checked and shape-inferred, so every intermediate
    value whose shape follows from the inputs becomes static as well (what TensorRT and NPU compilers want)."""
    import onnx

    model = onnx.load(str(src))
    for value in model.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name], strict=True):
                dim.dim_value = size  # dim_value and dim_param are a oneof: this clears the symbol
    del model.graph.value_info[:]  # annotations written for symbolic dims; inference writes them again
    fixed = dst.with_name(dst.stem + "-inputs.onnx")
    onnx.save(model, str(fixed))
    try:
        onnx.checker.check_model(str(fixed))
        # Strict: a shape the graph cannot take (e.g. a spatial size a Reshape or Gemm rejects) fails here,
        # in one line on the host, not on every board.
        onnx.shape_inference.infer_shapes_path(str(fixed), str(dst), strict_mode=True, data_prop=True)
    except Exception as err:
        raise CompileError(
            f"{name} with inputs fixed to {_show_shapes(shapes)} fails the ONNX checks: {_short(err)}"
        ) from err


def default_opset(model: Any) -> int:
    """The model's ai.onnx opset (0 when it imports none)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Op versions that onnx's version converter declares compatible with the version before (CompatibleAdapter in
#: onnx/version_converter/convert.h, 13 -> 23): a node of that version that is also a valid node of the older
#: version means the same there. The converter has no downward adapters for most of them (Relu 14 -> 13 among
#: them), so it refuses almost every model exported at opset 14 or later; these nodes are carried across instead.
_COMPATIBLE_SINCE: dict[int, frozenset[str]] = {
    # BatchNormalization 14 added training_mode, default 0: an inference node is a valid opset-9 node.
    14: _names("Add BatchNormalization CumSum Div Identity Mul Relu Reshape Sub"),
    15: _names("BatchNormalization Pow Shape"),
    16: _names("GreaterOrEqual Identity If LeakyRelu LessOrEqual Loop PRelu Scan ScatterElements ScatterND Where"),
    18: _names("OptionalGetElement OptionalHasElement Pad Resize ScatterElements ScatterND"),
    19: _names(
        "AveragePool Cast CastLike Constant DequantizeLinear Equal Identity If Loop Pad QuantizeLinear Reshape "
        "Resize Scan Shape Size"
    ),
    20: _names("ConstantOfShape IsInf IsNaN ReduceMax ReduceMin"),
    21: _names(
        "Cast CastLike Constant ConstantOfShape DequantizeLinear Flatten Identity If Loop Pad QLinearMatMul "
        "QuantizeLinear Reshape Scan Shape Size Squeeze Transpose Unsqueeze"
    ),
    22: _names(
        "Acos Acosh Asin Asinh Atan Atanh AveragePool Bernoulli Conv ConvTranspose Cos Cosh DeformConv Det Dropout "
        "Elu EyeLike GRU GlobalAveragePool GlobalLpPool GlobalMaxPool GridSample HardSigmoid HardSwish "
        "InstanceNormalization LSTM LpNormalization LpPool MaxPool MaxRoiPool MaxUnpool Mish Multinomial "
        "NegativeLogLikelihoodLoss RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike RoiAlign Round "
        "Selu Sin Sinh Softplus Softsign Tan ThresholdedRelu"
    ),
    23: _names(
        "Cast CastLike Constant ConstantOfShape DequantizeLinear Flatten Identity If Loop Pad QuantizeLinear "
        "Reshape Scan Shape Size Squeeze Transpose Unsqueeze"
    ),
}
#: String attribute values those versions added; the older schema's form check cannot see them.
_NEWER_VALUES = {
    ("Pad", "mode"): {"wrap"},
    ("Resize", "coordinate_transformation_mode"): {"half_pixel_symmetric"},
    ("ScatterElements", "reduction"): {"max", "min"},
    ("ScatterND", "reduction"): {"max", "min"},
}
_CARRIED = "edgeprof.carried"  # a domain the converter passes by; carried nodes return to ai.onnx after it


def _carry_compatible_nodes(model: Any, current: int, target: int) -> None:
    """Move nodes whose changes since `target` are all compatible, and that are valid `target` nodes, out of the
    converter's way (it would stop at them for want of an adapter); the rest is left to the converter."""
    import onnx
    from onnx import defs

    context = onnx.checker.C.CheckerContext()
    context.ir_version = model.ir_version
    context.opset_imports = {"": target}
    changed_at: dict[str, set[int]] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain == "" and target < schema.since_version <= current:
            changed_at.setdefault(schema.name, set()).add(schema.since_version)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or any(a.type in (5, 10) for a in node.attribute):  # GRAPH(S)
            continue  # control flow (If, Loop, Scan): carried, its bodies would escape conversion
        try:
            newer = defs.get_schema(node.op_type, current, "")
            older = defs.get_schema(node.op_type, target, "")
        except defs.SchemaError:
            continue  # no such op at the target opset: the converter says so
        changes = changed_at.get(node.op_type, set())
        if not changes or not all(node.op_type in _COMPATIBLE_SINCE.get(v, ()) for v in changes):
            continue  # unchanged since the target opset (nothing to do), or a change only the converter can adapt
        candidate = onnx.NodeProto()
        candidate.CopyFrom(node)
        del candidate.attribute[:]
        for attr in node.attribute:
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes) and value.decode(errors="replace") in _NEWER_VALUES.get(
                (node.op_type, attr.name), ()
            ):
                break
            if attr.name not in older.attributes and _is_default(newer, attr):
                continue  # an attribute added later, set to the default that reproduces the old behaviour
            candidate.attribute.append(attr)
        else:
            try:
                onnx.checker.check_node(candidate, context)
            except onnx.checker.ValidationError:
                continue
            candidate.domain = _CARRIED
            node.CopyFrom(candidate)
    model.opset_import.append(onnx.helper.make_opsetid(_CARRIED, 1))


def _is_default(schema: Any, attr: Any) -> bool:
    import onnx

    default = schema.attributes[attr.name].default_value if attr.name in schema.attributes else None
    if default is None or default.type == 0:  # no default: any value is a choice the old op cannot express
        return False
    return bool(onnx.helper.get_attribute_value(default) == onnx.helper.get_attribute_value(attr))


def convert_opset(src: Path, dst: Path, target: int, profile: str, name: str) -> None:
    """onnx.version_converter down to `target`, checked in full (types included) and loaded by ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import version_converter

    model = onnx.load(str(src))
    current = default_opset(model)
    _carry_compatible_nodes(model, current, target)
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as err:  # RuntimeError from the converter's C++ asserts ("No Adapter From Version $16 for If")
        reason = _short(err).rsplit("failed: ", 1)[-1]  # past the C++ source location of the assert
        raise CompileError(
            f"{name} is at ONNX opset {current} and profile {profile} takes at most opset {target} (max_opset), "
            f"but onnx cannot convert it down ({reason}); export the model at opset {target} "
            f"or lower (e.g. torch.onnx.export(..., opset_version={target})), or raise max_opset in a user "
            "profile if the board's runtime takes it"
        ) from err
    for node in converted.graph.node:
        if node.domain == _CARRIED:
            node.domain = ""
    kept = [o for o in converted.opset_import if o.domain != _CARRIED]
    del converted.opset_import[:]
    converted.opset_import.extend(kept)
    onnx.save(converted, str(dst))
    try:
        onnx.checker.check_model(str(dst), full_check=True)  # full: input types against the older schemas too
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise CompileError(
            f"{name} converted from ONNX opset {current} to {target} for profile {profile} is not valid "
            f"({_short(err)}); export the model at opset {target} or lower"
        ) from err


def conform_ir3_inputs(path: Path) -> None:
    """Before IR version 4 every initializer must also be a graph input; ORT and the quantizer forget that.

    Their outputs for old models (e.g. squeezenet at IR 3) then fail onnx.checker. Listing the new
    initializers as inputs keeps the model's IR version and meaning (ORT does not ask for them at run time).
    """
    import onnx

    model = onnx.load(str(path))
    if model.ir_version >= 4:
        return
    # Constant folding also leaves the inputs of removed initializers (e.g. ConstantOfShape's shapes)
    # behind as required inputs without a value: drop inputs that nothing reads any more.
    used = {name for node in model.graph.node for name in node.input} | {v.name for v in model.graph.output}
    unused = [value for value in model.graph.input if value.name not in used]
    for value in unused:
        model.graph.input.remove(value)
    declared = {value.name for value in model.graph.input}
    missing = [init for init in model.graph.initializer if init.name not in declared]
    if not missing and not unused:
        return
    for init in missing:
        model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    onnx.save(model, str(path))


def _session_options(dst: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # EXTENDED, not ALL: layout (NCHWc) rewrites at ALL are tied to the host CPU and may not load on the board.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    return options


def ort_optimize(src: Path, dst: Path) -> None:
    """ONNX Runtime offline optimisation: the graph a CPU session would build, saved as ONNX."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(src), _session_options(dst), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
        raise CompileError(f"ONNX Runtime cannot optimise {src.name}: {_short(err)}") from err


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
            f"this onnxruntime cannot save {src.name} in ORT format ({_short(err)}); "
            "install the full onnxruntime package on the host"
        ) from err
    if not dst.is_file():
        raise CompileError(f"onnxruntime {ort.__version__} wrote no ORT-format model for {src.name}")


def quantize_int8(src: Path, dst: Path, options: CompileOptions, inputs: tuple[InputDecl, ...]) -> None:
    """int8 with onnxruntime.quantization: constants folded first so generated weights are quantized too."""
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise CompileError("--quantize needs onnxruntime.quantization on the host: pip install onnxruntime") from err
    prepared = dst.with_name(dst.stem + "-prep.onnx")
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        conform_ir3_inputs(prepared)
        if options.quantize_mode == "dynamic":
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
        raise CompileError(f"int8 {options.quantize_mode} quantization of {src.name} failed: {_short(err)}") from err


def _calibration_samples(options: CompileOptions, inputs: tuple[InputDecl, ...]) -> list[dict[str, Any]]:
    """Calibration feeds: from the npz (a leading extra axis indexes samples), else seeded random data."""
    import numpy as np

    count = options.calibration_samples
    if options.calibration_npz is not None:
        try:
            with np.load(options.calibration_npz) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as err:
            raise CompileError(f"cannot read calibration data {options.calibration_npz}: {_short(err)}") from err
        missing = [d.name for d in inputs if d.name not in arrays]
        if missing:
            raise CompileError(f"calibration data {options.calibration_npz} lacks input(s): {', '.join(missing)}")
        per_input = {
            d.name: list(arrays[d.name]) if arrays[d.name].ndim == len(d.shape) + 1 else [arrays[d.name]]
            for d in inputs
        }
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
