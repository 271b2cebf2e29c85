"""A fake `tensorrt` module and CUDA seam for the Python-bindings path (tests only), running ONNX Runtime inside.

It keeps TensorRT's shape of things: builder, network from the ONNX parser, builder config with flags, DLA
placement and a timing cache, serialized engines, a runtime that refuses another version's plans, an execution
context bound to device addresses. "Device memory" is bytes owned by FakeCuda: execute_async_v3 reads the inputs
from there and writes the outputs there, so a wrong copy or address shows up in the outputs.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

DLA_OPS = {"Conv", "Relu", "BatchNormalization", "MaxPool", "AveragePool", "Add", "Concat"}
_NP = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class FakeCuda:
    def __init__(self) -> None:
        self.memory: dict[int, bytearray] = {}
        self.calls: list[str] = []
        self._next = 0x1000
        self._events: dict[int, float] = {}

    def malloc(self, nbytes: int) -> int:
        self._next += 0x1000 + nbytes
        self.memory[self._next] = bytearray(nbytes)
        return self._next

    def free(self, ptr: int) -> None:
        del self.memory[ptr]

    def stream(self) -> str:
        return "stream"

    def event(self) -> int:
        self._next += 1
        return self._next

    def htod(self, ptr: int, array: np.ndarray, stream: Any) -> None:
        self.calls.append("htod")
        self.memory[ptr][:] = array.tobytes()

    def dtoh(self, array: np.ndarray, ptr: int, stream: Any) -> None:
        self.calls.append("dtoh")
        array[...] = np.frombuffer(bytes(self.memory[ptr]), dtype=array.dtype).reshape(array.shape)

    def record(self, event: int, stream: Any) -> None:
        self.calls.append("record")
        self._events[event] = time.perf_counter()

    def sync(self, stream: Any) -> None:
        self.calls.append("sync")

    def elapsed_ms(self, start: int, end: int) -> float:
        return (self._events[end] - self._events[start]) * 1000.0


class _Enum:
    def __init__(self, *names: str) -> None:
        for name in names:
            setattr(self, name, name)


class FakeTensorRT:
    """What agent/runtimes/tensorrt_python.py uses of `import tensorrt`."""

    def __init__(self, version: str = "10.3.0", device: str = "sm87") -> None:
        self.__version__ = version
        self.device = device
        self.builds: list[dict[str, Any]] = []
        self.timing_loaded: list[bytes] = []
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level=2: None})
        self.NetworkDefinitionCreationFlag = type("F", (), {"EXPLICIT_BATCH": 0})
        self.BuilderFlag = _Enum("FP16", "INT8", "GPU_FALLBACK")
        self.DeviceType = _Enum("GPU", "DLA")
        self.TensorIOMode = _Enum("INPUT", "OUTPUT")
        self.IProfiler = type("IProfiler", (), {"__init__": lambda s: None})
        fake = self

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> Any:
                return _Network(flags)

            def create_builder_config(self) -> Any:
                return _Config(fake)

            def create_optimization_profile(self) -> Any:
                return type("Profile", (), {"set_shape": lambda s, *a: None})()

            def build_serialized_network(self, network: Any, config: Any) -> bytes:
                record = {"model": network.model, "flags": sorted(config.flags), "dla": config.DLA_core,
                          "device_type": config.default_device_type, "version": fake.__version__,
                          "device": fake.device, "network_flags": network.flags}  # fmt: skip
                fake.builds.append(record)
                config.timing.entries.add(f"{record['flags']}|{network.model}")
                return json.dumps(record).encode()

        class OnnxParser:
            def __init__(self, network: Any, logger: Any) -> None:
                self.network = network
                self.num_errors = 0

            def parse_from_file(self, path: str) -> bool:
                import onnx

                graph = onnx.load(path, load_external_data=False).graph
                self.network.model = path
                self.network.layers = [type("Layer", (), {"type": n.op_type, "name": n.name})() for n in graph.node]
                inits = {i.name for i in graph.initializer}
                self.network.inputs = [
                    type("T", (), {"name": i.name, "shape": tuple(d.dim_value or -1 for d in _dims(i))})()
                    for i in graph.input
                    if i.name not in inits
                ]
                return True

        class Runtime:
            def __init__(self, logger: Any) -> None:
                self.DLA_core = -1

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                plan = json.loads(data)
                if plan["version"] != fake.__version__ or plan["device"] != fake.device:
                    return None
                return _Engine(plan, fake)

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime

    @staticmethod
    def nptype(dtype: Any) -> Any:
        return dtype


def _dims(value_info: Any) -> Any:
    return value_info.type.tensor_type.shape.dim


class _Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.model = ""
        self.layers: list[Any] = []
        self.inputs: list[Any] = []

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> Any:
        return self.layers[i]

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> Any:
        return self.inputs[i]


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.entries = set(json.loads(data)) if data else set()

    def serialize(self) -> bytes:
        return json.dumps(sorted(self.entries)).encode()


class _Config:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.flags: set[str] = set()
        self.default_device_type = "GPU"
        self.DLA_core = -1
        self.timing = _TimingCache(b"")

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def can_run_on_DLA(self, layer: Any) -> bool:
        return layer.type in DLA_OPS

    def create_timing_cache(self, data: bytes) -> _TimingCache:
        self.fake.timing_loaded.append(data)
        return _TimingCache(data)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> None:
        self.timing = cache

    def get_timing_cache(self) -> _TimingCache:
        return self.timing

    def add_optimization_profile(self, profile: Any) -> None:
        pass


class _Engine:
    def __init__(self, plan: dict[str, Any], fake: FakeTensorRT) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(plan["model"], providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.io = [(a, "INPUT") for a in inputs] + [(a, "OUTPUT") for a in outputs]

    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    def get_tensor_name(self, i: int) -> str:
        return str(self.io[i][0].name)

    def _arg(self, name: str) -> tuple[Any, str]:
        return next(item for item in self.io if item[0].name == name)

    def get_tensor_mode(self, name: str) -> str:
        return self._arg(name)[1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in self._arg(name)[0].shape)

    def get_tensor_dtype(self, name: str) -> Any:
        return _NP[self._arg(name)[0].type]

    def create_execution_context(self) -> Any:
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.profiler: Any = None
        self.cuda: FakeCuda | None = None

    def set_input_shape(self, name: str, shape: Any) -> None:
        pass

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(d if d > 0 else 1 for d in self.engine.get_tensor_shape(name))

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def execute_async_v3(self, stream: Any) -> bool:
        assert self.cuda is not None
        feeds = {}
        for arg, mode in self.engine.io:
            if mode == "INPUT":
                shape = self.get_tensor_shape(arg.name)
                raw = bytes(self.cuda.memory[self.addresses[arg.name]])
                feeds[arg.name] = np.frombuffer(raw, dtype=_NP[arg.type]).reshape(shape)
        outputs = self.engine.session.run(None, feeds)
        for (arg, _), value in zip([io for io in self.engine.io if io[1] == "OUTPUT"], outputs, strict=True):
            self.cuda.memory[self.addresses[arg.name]][:] = np.ascontiguousarray(value).tobytes()
        if self.profiler is not None:
            for arg, _mode in self.engine.io[:1]:
                self.profiler.report_layer_time(f"/{arg.name}/Conv + /relu/Relu", 0.5)
            self.profiler.report_layer_time("Reformatting CopyNode for Output Tensor 0", 0.1)
        self.cuda.calls.append("execute")
        return True
