"""TensorRT through its Python bindings: the engine built with the builder API, run by the worker's timing loop.

For x86 NVIDIA boxes with the `tensorrt` wheels (`pip install 'edgeprof[tensorrt]'`) and JetPack's system Python,
where trtexec is absent or not wanted (`tensorrt.timer: python`). Each timed `run()` is what an application does:
inputs copied to the device, `execute_async_v3`, outputs copied back, the stream synchronised; the worker times
it on the host clock (per inference), and CUDA events around the enqueue give the GPU time (gpu_compute_ms_p50).
Device memory, streams and events go through `CudaApi`, a thin seam over NVIDIA's cuda-python
(`cuda.bindings.runtime`, `cuda.cudart` before 12.6); tests pass their own `trt` and `cuda`. TensorRT 8.5 or newer
(the tensor-address API); older JetPacks are timed with trtexec.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.errors import AgentError, InvalidInput, InvalidModel, RuntimeMissing
from agent.runtimes.base import ModelSession, OpTiming, TensorSpec
from agent.runtimes.tensorrt_engines import (
    CachedEngine,
    EngineCache,
    EngineKey,
    TensorRTOptions,
    engine_cache,
    engine_key,
    io_specs,
    resolve_engine_shapes,
)
from agent.runtimes.trtexec import has_qdq, precision_flags
from agent.runtimes.trtexec_output import LayerTime, layer_profile


class CudaFailed(AgentError):
    kind = "crash"


def bindings_version() -> str | None:
    """TensorRT's version where its Python module imports here, else None."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
    except Exception:  # a wheel without its CUDA libraries raises OSError or ImportError at import
        return None
    return str(tensorrt.__version__)


class CudaApi:
    """The CUDA runtime calls a TensorRT session needs, over cuda-python (each call returns (error, value…))."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart
            except ImportError as err:
                raise RuntimeMissing(
                    "TensorRT's Python path needs cuda-python: pip install 'edgeprof[tensorrt]'"
                ) from err
        self._rt: Any = cudart

    def _ok(self, result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise CudaFailed(f"CUDA {what} failed: {err}")
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self._rt.cudaMalloc(max(1, nbytes)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._ok(self._rt.cudaFree(ptr), "cudaFree")

    def stream(self) -> Any:
        return self._ok(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    def event(self) -> Any:
        return self._ok(self._rt.cudaEventCreate(), "cudaEventCreate")

    def htod(self, ptr: int, array: np.ndarray, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self._rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, stream), "copy to device")

    def dtoh(self, array: np.ndarray, ptr: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self._rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, stream), "copy to host")

    def record(self, event: Any, stream: Any) -> None:
        self._ok(self._rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def sync(self, stream: Any) -> None:
        self._ok(self._rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._ok(self._rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))


def _build(trt: Any, model_path: str, opts: TensorRTOptions, key: EngineKey, cache: EngineCache) -> CachedEngine:
    """The engine built with the builder API and stored in the cache (timing cache read and written back)."""
    import time

    version = str(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(version.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(model_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InvalidModel(f"TensorRT cannot parse this model: {errors[:300]}")
    config = builder.create_builder_config()
    for flag in precision_flags(version, opts, has_qdq(model_path)):
        config.set_flag({"--fp16": trt.BuilderFlag.FP16, "--int8": trt.BuilderFlag.INT8}[flag])
    dla_layers = 0
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        if opts.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        dla_layers = sum(1 for i in range(network.num_layers) if config.can_run_on_DLA(network.get_layer(i)))
    shapes = dict(key.shapes)
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            dims = tuple(int(d) for d in shapes[tensor.name].split("x"))
            profile.set_shape(tensor.name, dims, dims, dims)
        config.add_optimization_profile(profile)
    timing_path = cache.timing_cache(key)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, False)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InvalidModel(f"TensorRT could not build an engine ({key.describe()}) from this model")
    build_ms = (time.monotonic() - started) * 1000.0
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    scratch = cache.scratch(key)
    plan = scratch / "engine.plan"
    plan.write_bytes(bytes(serialized))
    gpu_layers = network.num_layers - dla_layers
    return cache.store(
        key,
        plan,
        {"build_ms": build_ms, "tensorrt_version": version, "dla_layers_count": dla_layers,
         "gpu_layers_count": gpu_layers, "dla_layers_unit": "network layers the builder placed on the DLA"},
    )  # fmt: skip


def load_python_session(
    model_path: str,
    opts: TensorRTOptions,
    options: Mapping[str, str],
    op_profile: bool,
    *,
    trt: Any = None,
    cuda: Any = None,
) -> TensorRTPythonSession:
    """The cached engine (or one built now) in an execution context with device buffers."""
    if trt is None:
        try:
            trt = importlib.import_module("tensorrt")
        except Exception as err:
            raise RuntimeMissing(f"the TensorRT Python bindings do not import here: {err}") from err
    cuda = cuda if cuda is not None else CudaApi()
    inputs, _outputs = io_specs(model_path)
    shapes = resolve_engine_shapes(inputs, options) if inputs else {}
    key = engine_key(model_path, opts, str(trt.__version__), shapes, "python")
    cache = engine_cache(options, model_path)
    built = False
    engine_entry = cache.get(key)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    if opts.dla_core is not None:
        runtime.DLA_core = opts.dla_core
    engine = runtime.deserialize_cuda_engine(engine_entry.path.read_bytes()) if engine_entry else None
    if engine is None:  # absent, or written by another TensorRT or for another GPU
        engine_entry = _build(trt, model_path, opts, key, cache)
        built = True
        engine = runtime.deserialize_cuda_engine(engine_entry.path.read_bytes())
        if engine is None:
            raise InvalidModel("TensorRT built an engine it cannot load")
    assert engine_entry is not None
    context = engine.create_execution_context()
    if not hasattr(context, "execute_async_v3"):
        raise RuntimeMissing(f"TensorRT {trt.__version__} predates the tensor API (8.5): time it with trtexec")
    session = TensorRTPythonSession(trt, cuda, engine, context, key, engine_entry, shapes)
    if built:
        session.notes_["engine_build_ms"] = f"{float(engine_entry.meta['build_ms']):.1f}"
    session.notes_["engine_cached"] = "false" if built else "true"
    if op_profile:
        session.start_op_profile()
    return session


class TensorRTPythonSession(ModelSession):
    """An execution context with its device buffers; run() is one complete inference."""

    def __init__(
        self,
        trt: Any,
        cuda: Any,
        engine: Any,
        context: Any,
        key: EngineKey,
        entry: CachedEngine,
        shapes: Mapping[str, tuple[int, ...]],
    ) -> None:
        self.trt, self.cuda, self.engine, self.context, self.key = trt, cuda, engine, context, key
        self.shapes = dict(shapes)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}

        def spec(name: str) -> TensorSpec:
            dims = tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(name))
            return TensorSpec(name=name, dtype=self._dtypes[name].name, shape=dims)

        self.inputs = [spec(n) for n in self._inputs]
        self.outputs = [spec(n) for n in self._outputs]
        self.providers = [f"TensorRT {key.describe()}"]
        self.stream = cuda.stream()
        self._start, self._stop = cuda.event(), cuda.event()
        self._device: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self.compute_ms: list[float] = []
        self._profiler: Any = None
        self.notes_: dict[str, str] = {
            "latency_timer": "host clock around copy-in, execute_async_v3, copy-out and stream sync (Python bindings)",
            "tensorrt_precision": key.precision,
            "tensorrt_dla_core": "" if key.dla_core is None else str(key.dla_core),
            "tensorrt_gpu_fallback": "true" if key.gpu_fallback else "false",
            "tensorrt_engine": key.digest,
            "tensorrt_runner": f"tensorrt {trt.__version__} (Python bindings)",
            "tensorrt_device": key.device,
            "tensorrt_compute_capability": key.compute_capability,
            "dla_layers": str(entry.meta.get("dla_layers_count", 0)),
            "gpu_layers": str(entry.meta.get("gpu_layers_count", "")),
        }

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Device buffers for these inputs (shapes fixed for the engine), addresses bound; one checked run."""
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise InvalidInput(f"inputs missing for the engine: {', '.join(missing)}")
        for name in self._inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            if -1 in tuple(self.engine.get_tensor_shape(name)):
                self.context.set_input_shape(name, array.shape)
            elif tuple(array.shape) != tuple(int(d) for d in self.engine.get_tensor_shape(name)):
                raise InvalidInput(f"input {name} has shape {array.shape}, the engine was built for another")
            self._host[name] = array
        for name in self._outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            self._host[name] = np.empty(shape, dtype=self._dtypes[name])
        for name, array in self._host.items():
            self._device[name] = self.cuda.malloc(array.nbytes)
            self.context.set_tensor_address(name, self._device[name])
        self.run()
        self.compute_ms.clear()

    def run(self) -> None:
        cuda, stream = self.cuda, self.stream
        for name in self._inputs:
            cuda.htod(self._device[name], self._host[name], stream)
        cuda.record(self._start, stream)
        if not self.context.execute_async_v3(stream):
            raise CudaFailed("TensorRT's execute_async_v3 failed")
        cuda.record(self._stop, stream)
        for name in self._outputs:
            cuda.dtoh(self._host[name], self._device[name], stream)
        cuda.sync(stream)
        self.compute_ms.append(cuda.elapsed_ms(self._start, self._stop))

    def start_op_profile(self) -> None:
        trt = self.trt
        layers: dict[str, float] = {}
        order: list[str] = []

        class Profiler(trt.IProfiler):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)
                self.runs = 0

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                if layer_name not in layers:
                    order.append(layer_name)
                    layers[layer_name] = 0.0
                elif layer_name == order[0]:
                    self.runs += 1
                layers[layer_name] += ms

        self._profiler = Profiler()
        self._profiler.layers, self._profiler.order = layers, order
        self.context.profiler = self._profiler

    def op_profile(self) -> tuple[list[OpTiming], list[OpTiming]]:
        if self._profiler is None or not self._profiler.order:
            return [], []
        runs = self._profiler.runs + 1
        rows = [LayerTime(n, self._profiler.layers[n], self._profiler.layers[n] / runs) for n in self._profiler.order]
        return layer_profile(runs, rows, [])

    def notes(self) -> dict[str, str]:
        notes = dict(self.notes_)
        if self.compute_ms:
            notes["gpu_compute_ms_p50"] = f"{float(np.median(self.compute_ms)):.4f}"
        return notes

    def close(self) -> None:
        for ptr in self._device.values():
            self.cuda.free(ptr)
        self._device.clear()
