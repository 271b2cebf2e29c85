"""Per-target compile on the host: the device profile's [compile] recipe applied to a model, cached by content."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from device_profiles import GENERIC_PROFILE, DeviceProfile, load_profile
from host.prepare.compile_options import CompileError, CompileOptions
from host.prepare.modelfile import InputDecl, ModelFile, ModelFileError, inspect
from host.prepare.onnx_passes import check_onnx, conform_ir3_inputs, convert_opset, default_opset, fix_dims
from host.prepare.ort_steps import fold_constants, ort_format, ort_optimize, quantize_int8
from protos import agent_pb2 as pb

#: File suffix of each target format's artifact.
_EXTENSIONS = {"onnx": "onnx", "ort": "ort", "tflite": "tflite"}


#: Static int8 as TensorRT takes it: symmetric int8 Q/DQ pairs (zero points 0), calibrated from --calibration.
TENSORRT_QDQ_STEP = "quantize-int8-qdq-tensorrt"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeprof" / "compiled"


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "none"
    return str(onnxruntime.__version__)


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
        #: cache key -> (artifact, recipe extras): a fleet's devices sharing a recipe reuse the artifact
        #: inspected once, instead of each re-reading and re-hashing it (seconds for a large model).
        self._artifacts: dict[str, tuple[ModelFile, dict[str, Any]]] = {}

    def __call__(self, model: ModelFile, info: pb.DeviceInfo) -> tuple[ModelFile, dict[str, Any]]:
        recipe = self.recipe(model, info)
        if not recipe["steps"]:
            return model, recipe
        key = self.cache_key(model, recipe)
        path = self.cache_dir / f"{key}.{_EXTENSIONS[recipe['target_format']]}"
        with self._lock_for(key):
            known = self._artifacts.get(key)
            if known is not None and known[0].path.is_file():
                return known[0], {**recipe, **known[1], "cached": True}
            cached_artifact = _intact(path) if path.is_file() else None
            cached = cached_artifact is not None
            if cached_artifact is None:
                self._build(model, recipe, path)
            try:
                artifact = cached_artifact or inspect(path)
            except ModelFileError as err:
                path.unlink(missing_ok=True)  # a damaged artifact must not be served again
                raise CompileError(f"compiled model for {_device(info)} is invalid: {err}") from err
            if not cached:  # after the artifact: a crash in between leaves it unrecorded, hence rebuilt
                _digest_path(path).write_text(artifact.sha256 + "\n")
            extras: dict[str, Any] = {}
            check = _check_path(path)
            if check.is_file():  # how a converted model compared with ONNX Runtime when it was built
                extras["conversion_check"] = json.loads(check.read_text())
            self._artifacts[key] = (artifact, extras)
        return artifact, {**recipe, **extras, "cached": cached}

    def recipe(self, model: ModelFile, info: pb.DeviceInfo) -> dict[str, Any]:
        """What this device gets: the profile's [compile] table and the options, as a JSON-able dict."""
        profile = _profile(info.profile)
        hints = profile.compile
        optimize = str(hints.get("optimize", ""))
        target = str(hints.get("format", "tflite" if profile.runtime == "tflite" else "onnx"))
        if optimize == "ort-format":
            target = "ort"
        onnx_runtime = str(hints.get("onnx_runtime", ""))
        if target == "tflite" and model.format == "onnx" and onnx_runtime in {r.name for r in info.runtimes}:
            target = "onnx"  # a phone with onnxruntime_perf_test runs the ONNX model itself: no conversion
        if target not in _EXTENSIONS:
            raise CompileError(f"profile {profile.name}: unknown compile format '{target}' (onnx, ort or tflite)")
        max_opset = _max_opset(profile)
        recipe: dict[str, Any] = {"target_format": target, "steps": [], "profile": profile.name}
        if model.format == "genai":  # a generative model directory goes to the board as it is
            if self.options.quantize:
                raise CompileError(f"--quantize works on ONNX models only; {model.path.name} is a GenAI model")
            _check_genai_runtime(info, profile)
            recipe["target_format"] = "genai"
            return recipe
        if model.format == "gguf":  # llama.cpp's own file: quantized already, it goes to the board as it is
            if self.options.quantize:
                raise CompileError(
                    f"--quantize works on ONNX models only; {model.path.name} is a GGUF model, quantized as"
                    f" {model.quantization or 'its file says'} (llama-quantize makes other types)"
                )
            _check_gguf_runtime(info, profile)
            recipe["target_format"] = "gguf"
            return recipe
        if model.format in ("tflite", "ort"):
            self._check_passthrough(model, info, profile, target)
            recipe["target_format"] = model.format  # what the board receives: the model as it is
            return recipe
        if target == "tflite":
            if optimize:
                raise CompileError(f"profile {profile.name}: optimize '{optimize}' is for ONNX targets, not tflite")
            self._check_convertible(info, profile)
        steps: list[str] = []
        if max_opset is not None and self._default_opset(model) > max_opset:
            steps.append(f"opset-{max_opset}")
        shapes = self._run_shapes(model)
        if shapes:
            # The shapes are part of the recipe, hence of the cache key and of each device's result.
            steps.append("fix-dims")
            recipe["input_shapes"] = {name: list(dims) for name, dims in shapes.items()}
        if target == "tflite":
            from host.prepare.tflite_convert import converter_recipe

            # Converter versions and options go into the recipe, hence the cache key: a new onnx2tf rebuilds.
            steps += ["fold-constants", "tflite-convert"]
            recipe["converter"] = converter_recipe()
        # TensorRT builds and optimizes its own engine on the board: ONNX Runtime's fused ops would not parse there.
        tensorrt = self.options.runtime == "tensorrt" or (not self.options.runtime and profile.runtime == "tensorrt")
        if tensorrt and target != "onnx":
            raise CompileError(f"profile {profile.name}: TensorRT takes ONNX models, the profile compiles to {target}")
        if tensorrt and "tensorrt" not in {r.name for r in info.runtimes}:
            found = ", ".join(sorted(r.name for r in info.runtimes)) or "none"
            raise CompileError(
                f"device {_device(info)} has no TensorRT (it reports: {found}): install JetPack's TensorRT (trtexec) or"
                " `pip install 'edgeprof[tensorrt]'` on an x86 GPU box, and run an agent new enough to offer it"
            )
        if self.options.quantize:
            steps.append(f"quantize-{self.options.quantize}-{self.options.quantize_mode}")
            if self.options.quantize_mode == "static":
                recipe["calibration"] = self._calibration_doc()
        elif tensorrt and self.options.precision == "int8" and self.options.calibration_npz is not None:
            steps.append(TENSORRT_QDQ_STEP)  # explicit quantization: TensorRT takes the scales from Q/DQ nodes
            recipe["calibration"] = self._calibration_doc()
        if tensorrt:
            recipe["runtime"] = "tensorrt"
        elif target == "ort":
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
        from protos.inputs import InputError, TensorSpec, load_npz, resolve_shapes

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
        except InputError as err:
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

    def _check_convertible(self, info: pb.DeviceInfo, profile: DeviceProfile) -> None:
        """An ONNX model for a TFLite board: the optional converter must be installed, and float32 is all it makes."""
        from host.prepare.tflite_convert import EXTRA_HINT, available

        needs = f"device {_device(info)} (profile {profile.name}) runs .tflite models"
        if self.options.quantize:
            raise CompileError(
                f"{needs}: --quantize works on ONNX targets only; quantize when you convert (e.g. onnx2tf -oiqt) "
                "and profile the .tflite"
            )
        if not available():
            raise CompileError(f"{needs}; {EXTRA_HINT}")

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
                suffix = {"ort-format": "ort", "tflite-convert": "tflite"}.get(step, "onnx")
                out = Path(scratch) / f"{index}-{step}.{suffix}"
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
                elif step == "fold-constants":
                    fold_constants(current, out)
                elif step == "tflite-convert":
                    check = _convert_to_tflite(current, out, model.path.name)
                    _check_path(path).write_text(json.dumps(check, sort_keys=True))
                elif step.startswith("quantize-int8-"):
                    # After fix-dims the graph takes only the fixed shapes: calibration feeds get them too.
                    fixed = recipe.get("input_shapes", {})
                    inputs = tuple(replace(d, shape=tuple(fixed.get(d.name, d.shape))) for d in model.inputs)
                    quantize_int8(current, out, self.options, inputs, for_tensorrt=step == TENSORRT_QDQ_STEP)
                if out.suffix == ".onnx" and step != "check":
                    conform_ir3_inputs(out)
                current = out
            # Atomic: other processes sharing the cache never see a half-written artifact.
            os.replace(current, path)


def _check_genai_runtime(info: pb.DeviceInfo, profile: DeviceProfile) -> None:
    """One line before any upload when the board cannot run generative models (agent info lists it missing)."""
    runtimes = {r.name for r in info.runtimes}
    if "onnxruntime-genai" not in runtimes:
        found = ", ".join(sorted(runtimes)) or "none"
        raise CompileError(
            f"device {_device(info)} (profile {profile.name}) has no onnxruntime-genai runtime (it reports: {found});"
            " pip install 'edgeprof[genai]' on the agent (Python 3.11+ on aarch64)"
        )


def _check_gguf_runtime(info: pb.DeviceInfo, profile: DeviceProfile) -> None:
    """One line before any upload when the board runs no llama.cpp: neither llama-cpp-python nor a llama-bench."""
    runtimes = {r.name for r in info.runtimes}
    if not runtimes & {"llamacpp", "llama-bench"}:
        found = ", ".join(sorted(runtimes)) or "none"
        raise CompileError(
            f"device {_device(info)} (profile {profile.name}) runs no llama.cpp (it reports: {found}): pip install"
            " 'edgeprof[gguf]' on the agent, or give it a llama-bench binary (agent serve --llama-bench PATH;"
            " a phone: agent adb install-runner PATH)"
        )


def _check_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".check.json")


def _digest_path(artifact: Path) -> Path:
    """The artifact's sha256 as built: the cache key names the inputs, not the artifact's own bytes."""
    return artifact.with_name(artifact.name + ".sha256")


def _intact(path: Path) -> ModelFile | None:
    """The cached artifact if it is still what was built; else None, with the damaged file removed."""
    try:
        artifact = inspect(path)
        recorded = _digest_path(path).read_text().strip()
    except (ModelFileError, OSError):
        artifact, recorded = None, ""
    if artifact is not None and artifact.sha256 == recorded:
        return artifact
    path.unlink(missing_ok=True)  # truncated, altered, or never recorded (an interrupted build): rebuild it
    _digest_path(path).unlink(missing_ok=True)
    return None


def _convert_to_tflite(src: Path, dst: Path, name: str) -> dict[str, Any]:
    """ONNX (static shapes by now) to float32 .tflite, checked against ONNX Runtime; returns that check."""
    from host.prepare.tflite_convert import ConversionError, convert_onnx_to_tflite

    try:
        return dict(convert_onnx_to_tflite(src, dst)["check"])
    except ConversionError as err:
        raise CompileError(str(err).replace(src.name, name)) from err  # the user's file, not a scratch name


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
    # The agent's rule (protos.inputs.resolve_shapes): only a positive integer is a fixed dim.
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
