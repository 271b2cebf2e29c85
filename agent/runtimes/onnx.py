"""ONNX Runtime backend: sessions with the profile's execution providers and a per-operator profiler."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agent.errors import InvalidInput, InvalidModel, RuntimeMissing
from agent.runtimes.base import ModelSession, OpTiming, RuntimeBackend, TensorSpec

# ONNX tensor type strings -> numpy dtype names.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeMissing("ONNX Runtime is not installed on this board: pip install 'edgeprof[agent]'") from err
    return onnxruntime


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise InvalidModel(f"tensor '{arg.name}' has type {arg.type}, which edgeprof cannot feed")
    shape = tuple(d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else None) for d in arg.shape)
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


class OnnxSession(ModelSession):
    """An InferenceSession with its inputs bound once, so the timed call is only `session.run`."""

    def __init__(self, session: Any, profiling_dir: str | None) -> None:
        self._session = session
        self._profiling_dir = profiling_dir
        self.inputs = [_spec(arg) for arg in session.get_inputs()]
        self.outputs = []
        for arg in session.get_outputs():
            try:
                self.outputs.append(_spec(arg))
            except InvalidModel:
                # Outputs of exotic types (sequences, maps) are still computed; they just are not fed.
                self.outputs.append(TensorSpec(name=arg.name, dtype=str(arg.type), shape=()))
        self.providers = list(session.get_providers())
        self._feeds: dict[str, np.ndarray] = {}

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        self._feeds = dict(feeds)
        try:
            self._session.run(None, self._feeds)
        except Exception as err:  # ORT raises its own Fail/InvalidArgument classes
            raise InvalidInput(f"the model rejected its inputs: {_one_line(err)}") from err

    def run(self) -> None:
        # Same call a plain ONNX Runtime loop makes: the overhead benchmark compares against it.
        self._session.run(None, self._feeds)

    def op_profile(self) -> tuple[list[OpTiming], list[OpTiming]]:
        if self._profiling_dir is None:
            return [], []
        path = self._session.end_profiling()
        try:
            with open(path, "rb") as fh:
                self.op_trace_json = fh.read()  # kept whole: the worker sends it on, the host writes it out
        finally:
            os.unlink(path)
        return aggregate_ort_profile(json.loads(self.op_trace_json))

    def close(self) -> None:
        self._session = None


def aggregate_ort_profile(events: Sequence[Mapping[str, Any]], top: int = 15) -> tuple[list[OpTiming], list[OpTiming]]:
    """ORT's profiler events (chrome trace) -> time by op type and the slowest nodes.

    Only kernel-time events of category "Node" count; fence/session events are ignored.
    """
    by_type: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    by_node: dict[str, list[Any]] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        op_type = str(args.get("op_name", "?"))
        provider = str(args.get("provider", ""))
        node = str(event["name"])[: -len("_kernel_time")]
        dur_us = float(event.get("dur", 0.0))
        row = by_type[(op_type, provider)]
        row[0] += dur_us
        row[1] += 1
        entry = by_node.setdefault(node, [op_type, provider, 0.0, 0])
        entry[2] += dur_us
        entry[3] += 1
    types = [
        OpTiming(op_type=op, node="", total_us=total, calls=int(calls), provider=prov)
        for (op, prov), (total, calls) in by_type.items()
    ]
    types.sort(key=lambda t: t.total_us, reverse=True)
    nodes = [
        OpTiming(op_type=op, node=node, total_us=total, calls=int(calls), provider=prov)
        for node, (op, prov, total, calls) in by_node.items()
    ]
    nodes.sort(key=lambda t: t.total_us, reverse=True)
    return types, nodes[:top]


class OnnxRuntimeBackend(RuntimeBackend):
    name = "onnxruntime"
    formats = ("onnx", "ort")

    def version(self) -> str:
        return str(_import_ort().__version__)

    def available_providers(self) -> list[str]:
        return list(_import_ort().get_available_providers())

    def load(
        self,
        model_path: str,
        *,
        threads: int,
        providers: Sequence[str],
        options: Mapping[str, str],
        op_profile: bool,
    ) -> OnnxSession:
        ort = _import_ort()
        available = ort.get_available_providers()
        wanted = [p for p in providers if p] or ["CPUExecutionProvider"]
        usable = [p for p in wanted if p in available]
        if not usable:
            raise RuntimeMissing(
                f"none of the execution providers {', '.join(wanted)} is available in this ONNX Runtime "
                f"(available: {', '.join(available)})"
            )
        so = ort.SessionOptions()
        if threads > 0:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3  # errors only: warnings would interleave with the agent's log
        level = options.get("graph_optimization", "all")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        profiling_dir = None
        if op_profile:
            profiling_dir = tempfile.mkdtemp(prefix="edgeprof-ortprof-")
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(profiling_dir, "ort")
        try:
            session = ort.InferenceSession(
                model_path, sess_options=so, providers=[(p, provider_options(p, options)) for p in usable]
            )
        except Exception as err:  # ORT raises InvalidGraph, InvalidProtobuf, Fail, NoSuchFile...
            raise InvalidModel(f"ONNX Runtime cannot load the model: {_one_line(err)}") from err
        return OnnxSession(session, profiling_dir)


def provider_options(provider: str, options: Mapping[str, str]) -> dict[str, str]:
    """ONNX Runtime's TensorRT provider with its engines and timing cache kept in the agent's engine directory:
    else every job's worker rebuilds them inside its load time (seconds to minutes on a Jetson)."""
    engine_dir = options.get("tensorrt.engine_dir", "")
    if provider != "TensorrtExecutionProvider" or not engine_dir:
        return {}
    cache = os.path.join(engine_dir, "onnxruntime-trt")
    return {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
    }


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."
