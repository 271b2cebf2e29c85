"""TFLite (LiteRT) backend: runs a .tflite flatbuffer on XNNPACK, builtin CPU kernels or a delegate."""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.errors import InvalidInput, InvalidModel, RuntimeMissing
from agent.runtimes.base import ModelSession, RuntimeBackend, TensorSpec

_INSTALL_HINT = "TFLite runtime not installed: pip install 'edgeprof[tflite]'"
# A TFLite flatbuffer carries its file identifier at bytes 4..8 (after the root table offset).
_TFLITE_IDENTIFIER = b"TFL3"
# Provider names this backend reports and understands in a `providers` list.
XNNPACK = "XNNPACK"
CPU = "CPU"
# Prefix of options passed through to an external delegate: {"delegate.backend": "gpu"} -> {"backend": "gpu"}.
_DELEGATE_OPTION_PREFIX = "delegate."


@dataclass(frozen=True)
class _Runtime:
    """Whichever TFLite Python API is importable, reduced to the three things the backend uses."""

    package: str
    version: str
    interpreter_cls: Any
    load_delegate: Any
    # None on runtimes too old to choose an op resolver (tflite-runtime < 2.5).
    op_resolver_type: Any


def _distribution_version(names: Sequence[str], module: Any) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return str(getattr(module, "__version__", "unknown"))


def _import_runtime() -> _Runtime:
    """The first TFLite API importable here: LiteRT, then tflite-runtime, then full TensorFlow.

    Imported on demand, never at module import, so that the agent process (which only lists runtimes
    through a subprocess) never pays for loading a runtime.
    """
    for module_name, package in (
        ("ai_edge_litert.interpreter", "ai-edge-litert"),
        ("tflite_runtime.interpreter", "tflite-runtime"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return _Runtime(
            package=package,
            version=_distribution_version((package,), importlib.import_module(module_name.split(".")[0])),
            interpreter_cls=module.Interpreter,
            load_delegate=module.load_delegate,
            op_resolver_type=getattr(module, "OpResolverType", None),
        )
    try:
        tensorflow = importlib.import_module("tensorflow")
    except ImportError as err:
        raise RuntimeMissing(_INSTALL_HINT) from err
    # The public tf.lite is an attribute of the API module; importing "tensorflow.lite" by name would
    # give the internal source package, which has no Interpreter.
    tf_lite = tensorflow.lite
    return _Runtime(
        package="tensorflow",
        version=_distribution_version(("tensorflow", "tensorflow-cpu", "tensorflow-aarch64"), tensorflow),
        interpreter_cls=tf_lite.Interpreter,
        load_delegate=tf_lite.experimental.load_delegate,
        op_resolver_type=getattr(tf_lite.experimental, "OpResolverType", None),
    )


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    # shape_signature keeps -1 for dims the converter left dynamic (typically the batch); shape holds
    # the size currently allocated, which is 1 for those.
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=str(detail["name"]),
        dtype=np.dtype(detail["dtype"]).name,
        shape=tuple(int(d) if d >= 0 else None for d in dims),
        quantization=(float(scale), int(zero_point)) if scale else None,
    )


def _uses_delegate_kernels(interpreter: Any) -> bool | None:
    """Whether a delegate took over part of the graph; None when this runtime cannot tell.

    A delegate replaces the nodes it handles with "DELEGATE" nodes. `_get_ops_details` is the only
    way the Python API exposes the node list; it is private, hence the guard.
    """
    try:
        return any(op.get("op_name") == "DELEGATE" for op in interpreter._get_ops_details())
    except Exception:
        return None


class TFLiteSession(ModelSession):
    """An Interpreter whose inputs are set once in prepare, so the timed call is only `invoke()`.

    TFLite's memory planner never reuses input tensors' memory for intermediates, so values written
    by set_tensor survive any number of invoke() calls: the measured loop writes no inputs.
    """

    op_profile_unavailable = (
        "LiteRT's Python interpreter exposes no per-operator timings; TFLite's benchmark_model does"
        " (--enable_op_profiling=true), which an agent serving a phone (agent serve --adb) runs"
    )

    def __init__(self, interpreter: Any, providers: Sequence[str]) -> None:
        self._interpreter = interpreter
        self._input_details = interpreter.get_input_details()
        self.inputs = [_spec(d) for d in self._input_details]
        self.outputs = [_spec(d) for d in interpreter.get_output_details()]
        self.providers = list(providers)

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        interpreter = self._interpreter
        names = [spec.name for spec in self.inputs]
        missing = [name for name in names if name not in feeds]
        if missing:
            raise InvalidInput(f"missing input {', '.join(missing)} (the model takes: {', '.join(names)})")
        unknown = sorted(set(feeds) - set(names))
        if unknown:
            raise InvalidInput(f"unknown input {', '.join(unknown)} (the model takes: {', '.join(names)})")
        arrays: list[tuple[int, np.ndarray]] = []
        resized = False
        for spec, detail in zip(self.inputs, self._input_details, strict=True):
            array = np.asarray(feeds[spec.name])
            if array.dtype.name != spec.dtype:
                raise InvalidInput(f"input '{spec.name}' must be {spec.dtype}, got {array.dtype.name}")
            if not _shape_fits(array.shape, spec.shape):
                raise InvalidInput(f"input '{spec.name}' must have shape {_show(spec.shape)}, got {_show(array.shape)}")
            if tuple(int(d) for d in detail["shape"]) != array.shape:
                try:
                    interpreter.resize_tensor_input(detail["index"], list(array.shape), strict=True)
                except (ValueError, RuntimeError) as err:
                    raise InvalidInput(
                        f"input '{spec.name}' cannot take shape {_show(array.shape)}: {_one_line(err)}"
                    ) from err
                resized = True
            arrays.append((int(detail["index"]), np.ascontiguousarray(array)))
        try:
            if resized:
                interpreter.allocate_tensors()
                self._input_details = interpreter.get_input_details()
            for index, array in arrays:
                interpreter.set_tensor(index, array)
            # One run here, like the ONNX backend: shape errors inside the graph surface as InvalidInput
            # before measuring starts, and the worker times this call as the first inference.
            interpreter.invoke()
        except (ValueError, RuntimeError) as err:
            raise InvalidInput(f"the model rejected its inputs: {_one_line(err)}") from err

    def run(self) -> None:
        self._interpreter.invoke()

    def output_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the outputs of the last run, by name (for checks and debugging, never timed)."""
        return {
            str(detail["name"]): self._interpreter.get_tensor(detail["index"])
            for detail in self._interpreter.get_output_details()
        }

    def close(self) -> None:
        # Dropping the Interpreter frees its arena; Interpreter.__del__ releases its delegates after it.
        self._interpreter = None


def _shape_fits(actual: tuple[int, ...], declared: tuple[int | str | None, ...]) -> bool:
    return len(actual) == len(declared) and all(
        not isinstance(want, int) or want == got for got, want in zip(actual, declared, strict=True)
    )


def _show(shape: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if not isinstance(d, int) else str(d) for d in shape) + "]"


class TFLiteBackend(RuntimeBackend):
    """TFLite via ai-edge-litert (or tflite-runtime, or tensorflow.lite).

    Providers: "XNNPACK" (TFLite's default CPU delegate) and "CPU" (TFLite's own builtin kernels).
    XNNPACK is used unless ``options["xnnpack"] == "0"`` or ``providers`` names "CPU" without
    "XNNPACK"; provider names meant for ONNX Runtime (a device profile shared by both runtimes) are
    ignored. An external delegate (Edge TPU, GPU, NNAPI, Hexagon...) is a shared library given as
    ``options["delegate"]``, with its own options as ``options["delegate.<key>"]``. Threads: 0 leaves
    TFLite's default, which is one thread. Per-operator profiling is not exposed by TFLite's Python
    API, so ``op_profile`` yields no rows.
    """

    name = "tflite"
    formats = ("tflite",)

    def version(self) -> str:
        runtime = _import_runtime()
        return f"{runtime.package} {runtime.version}"

    def available_providers(self) -> list[str]:
        _import_runtime()
        # XNNPACK is compiled into every LiteRT / tflite-runtime wheel for the boards we target; whether
        # it really took the graph is reported per session (TFLiteSession.providers).
        return [XNNPACK, CPU]

    def load(
        self,
        model_path: str,
        *,
        threads: int,
        providers: Sequence[str],
        options: Mapping[str, str],
        op_profile: bool,
    ) -> TFLiteSession:
        runtime = _import_runtime()
        _check_flatbuffer(model_path)
        xnnpack = _wants_xnnpack(providers, options)
        kwargs: dict[str, Any] = {"model_path": model_path}
        if threads > 0:
            kwargs["num_threads"] = threads
        if not xnnpack:
            if runtime.op_resolver_type is None:
                raise RuntimeMissing(
                    f"{runtime.package} {runtime.version} cannot run without XNNPACK "
                    "(choosing the op resolver needs tflite-runtime >= 2.5 or ai-edge-litert)"
                )
            kwargs["experimental_op_resolver_type"] = runtime.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        delegate_label = ""
        delegate_path = options.get("delegate", "")
        if delegate_path:
            delegate_label = f"delegate:{os.path.basename(delegate_path)}"
            delegate_options = {
                key[len(_DELEGATE_OPTION_PREFIX) :]: value
                for key, value in options.items()
                if key.startswith(_DELEGATE_OPTION_PREFIX)
            }
            try:
                # dlopen it ourselves first: when the library is missing, LiteRT's Delegate raises from
                # its constructor and then prints a second, spurious error from its __del__.
                ctypes.CDLL(delegate_path)
                delegate = runtime.load_delegate(delegate_path, delegate_options)
            except (ValueError, RuntimeError, OSError) as err:
                raise RuntimeMissing(f"TFLite delegate {delegate_path} could not be loaded: {_one_line(err)}") from err
            kwargs["experimental_delegates"] = [delegate]
        try:
            interpreter = runtime.interpreter_cls(**kwargs)
            # Default delegates (XNNPACK) are applied lazily, here; so are shape checks of every node.
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            where = f" with {delegate_label}" if delegate_label else ""
            raise InvalidModel(
                f"{os.path.basename(model_path)}: TFLite cannot load the model{where}: {_one_line(err)}"
            ) from err
        delegated = _uses_delegate_kernels(interpreter)
        if delegate_label:
            # Nodes the external delegate rejects fall back to the CPU (XNNPACK or builtin kernels).
            used = [delegate_label, CPU]
        elif xnnpack and delegated is not False:
            used = [XNNPACK, CPU]
        else:
            used = [CPU]
        return TFLiteSession(interpreter, used)


def _wants_xnnpack(providers: Sequence[str], options: Mapping[str, str]) -> bool:
    if options.get("xnnpack", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    ours = [p for p in providers if p in (XNNPACK, CPU)]
    return not ours or XNNPACK in ours


def _check_flatbuffer(model_path: str) -> None:
    """Refuse files that are not TFLite flatbuffers before the interpreter parses them."""
    name = os.path.basename(model_path)
    try:
        with open(model_path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise InvalidModel(f"{name}: cannot read the model: {err.strerror or _one_line(err)}") from err
    if len(head) < 8 or head[4:8] != _TFLITE_IDENTIFIER:
        raise InvalidModel(f"{name} is not a TFLite model (no 'TFL3' flatbuffer identifier)")
