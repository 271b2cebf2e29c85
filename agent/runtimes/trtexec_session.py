"""TensorRT's `trtexec` as the worker's native runner: the engine built once per key, every inference timed by it.

Like benchmark_model on phones (agent/adb/), the runner times inferences itself; unlike it, trtexec writes each
inference's own times (--exportTimes), so the result stays `latency_source: per_inference`. One job is:
- prepare (in the worker's load): the engine from the cache (agent/runtimes/tensorrt_engines.py), checked by one
  loading run, or built from the ONNX model with the shared timing cache (`--saveEngine`), timed on its own;
- warmup and measure as ONE invocation (`--warmUp=0 --iterations=… --duration=…`), split afterwards with the
  same stability rule as the Python timing loop (agent/warmup.py): no engine reload between them;
- with --op-profile, one more invocation with `--exportProfile` (per-layer times, DLA layers marked).
trtexec's times are milliseconds from its "Starting inference" line, which the worker reads as it is printed:
that instant on CLOCK_MONOTONIC anchors every window, so power samples and inferences line up.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent import frames
from agent.runtimes.base import ModelSession, OpTiming, TensorSpec
from agent.runtimes.tensorrt_engines import (
    CachedEngine,
    EngineKey,
    TensorRTOptions,
    engine_cache,
    engine_key,
    io_specs,
    resolve_engine_shapes,
)
from agent.runtimes.trtexec import Invocation, Trtexec, TrtexecFailed, dims_text, failure, has_qdq, precision_flags
from agent.runtimes.trtexec_output import layer_profile, parse_profile, parse_times, placement_types
from agent.warmup import block_size, is_stable_in_time

WARMUP, MEASURE = 5, 6  # protos Phase numbers, as agent/worker.py keeps them
MAX_BLOCK = 20_000
_SIMPLE_NAME = re.compile(r"[A-Za-z0-9_./-]+")


def load_trtexec_session(
    trtexec: Trtexec, model_path: str, opts: TensorRTOptions, options: Mapping[str, str]
) -> TrtexecSession:
    """The engine for this model and these options, from the cache or built now; its session."""
    version = trtexec.version()
    inputs, outputs = io_specs(model_path)
    shapes = resolve_engine_shapes(inputs, options) if inputs else {}
    dynamic = {s.name for s in inputs if any(not isinstance(d, int) for d in s.shape)}
    shape_args = (
        ["--shapes=" + ",".join(f"{name}:{dims_text(shapes[name])}" for name in sorted(dynamic))] if dynamic else []
    )
    qdq = has_qdq(model_path)
    flags = precision_flags(version, opts, qdq)
    dla_args = [] if opts.dla_core is None else [f"--useDLACore={opts.dla_core}"]
    key = engine_key(model_path, opts, version, shapes, "trtexec")
    cache = engine_cache(options, model_path)
    scratch = cache.scratch(key)
    times_path = scratch / "first.json"
    run_args = [*dla_args, *shape_args]
    engine = cache.get(key)
    check: Invocation | None = None
    if engine is not None:
        check = trtexec.invoke(
            [f"--loadEngine={engine.path}", *run_args, "--warmUp=0", "--iterations=1", "--duration=0",
             f"--exportTimes={times_path}"]
        )  # fmt: skip
        if check.returncode != 0:
            if not check.log.incompatible_engine:
                raise failure(check, "loading the cached engine", trtexec.path)
            cache.drop(key)  # another TensorRT or GPU wrote it: build anew
            engine = None
    build_ms: float | None = None
    if engine is None:
        plan = scratch / "engine.plan"
        fallback = ["--allowGPUFallback"] if opts.dla_core is not None and opts.gpu_fallback else []
        build = trtexec.invoke(
            [f"--onnx={model_path}", f"--saveEngine={plan}", f"--timingCacheFile={cache.timing_cache(key)}",
             *flags, *dla_args, *fallback, *shape_args, "--warmUp=0", "--iterations=1", "--duration=0",
             f"--exportTimes={times_path}"]
        )  # fmt: skip
        if build.returncode != 0 or not plan.is_file():
            raise failure(build, "building the engine", trtexec.path)
        wall_ms = (build.end_ns - build.start_ns) / 1e6
        build_ms = build.log.build_s * 1000.0 if build.log.build_s is not None else wall_ms
        engine = cache.store(
            key,
            plan,
            {
                "build_ms": build_ms,
                "build_wall_ms": wall_ms,
                "tensorrt_version": build.log.version or version,
                "device": build.log.device,
                "compute_capability": build.log.compute_capability,
                "dla_layers": build.log.dla_layers,
                "gpu_layers_count": len(build.log.gpu_layers),
                "layer_types": placement_types(build.log.gpu_layers),
                "int8_scales": _int8_scales(opts, qdq),
            },
        )
        scratch = cache.scratch(key)  # the build's scratch became the cache entry
        moved = engine.path.parent / "first.json"
        first_ms = _first_latency_ms(moved)
        moved.unlink(missing_ok=True)
        check = build
    else:
        first_ms = _first_latency_ms(times_path)
    assert check is not None
    session = TrtexecSession(trtexec, engine, key, run_args, inputs, outputs, scratch, first_ms)
    session.notes_.update(
        engine_cached="false" if build_ms is not None else "true",
        tensorrt_device=check.log.device or engine.meta.get("device") or key.device,
        tensorrt_compute_capability=check.log.compute_capability or key.compute_capability,
    )
    if build_ms is not None:
        session.notes_["engine_build_ms"] = f"{build_ms:.1f}"
    return session


def _int8_scales(opts: TensorRTOptions, qdq: bool) -> str:
    if opts.precision != "int8":
        return ""
    if qdq:
        return "explicit Q/DQ in the model"
    return "placeholder (no calibration data, no Q/DQ): timing only, outputs not meaningful"


def _first_latency_ms(path: Path) -> float | None:
    try:
        times = parse_times(path.read_text())
    except (OSError, ValueError):
        return None
    return times[0].latency_ms if times else None


@dataclass
class _Trace:
    starts_ns: np.ndarray
    ends_ns: np.ndarray
    compute_ms: np.ndarray
    warmup_count: int
    stable: bool
    warmup_reported: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class TrtexecSession(ModelSession):
    """An engine that trtexec runs; the worker hands it the warmup and measure phases (run_phases)."""

    #: The worker's timing loop does not apply: the session runs its phases itself.
    native = True

    def __init__(
        self,
        trtexec: Trtexec,
        engine: CachedEngine,
        key: EngineKey,
        run_args: list[str],
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        scratch: Path,
        first_latency_ms: float | None,
    ) -> None:
        self.trtexec = trtexec
        self.engine = engine
        self.key = key
        self.run_args = run_args
        self.inputs = inputs
        self.outputs = outputs
        self.providers = [f"TensorRT {key.describe()}"]
        self.scratch = scratch
        self.first_latency_ms = first_latency_ms
        self.first_inference_ns = int(first_latency_ms * 1e6) if first_latency_ms else 0
        self.input_args: list[str] = []
        dla = list(engine.meta.get("dla_layers") or [])
        self.notes_: dict[str, str] = {
            "latency_timer": "trtexec --exportTimes",
            "tensorrt_precision": key.precision,
            "tensorrt_dla_core": "" if key.dla_core is None else str(key.dla_core),
            "tensorrt_gpu_fallback": "true" if key.gpu_fallback else "false",
            "tensorrt_engine": key.digest,
            "tensorrt_runner": f"trtexec {trtexec.version()} ({trtexec.path})",
            "dla_layers": str(len(dla)),
            "gpu_layers": str(engine.meta.get("gpu_layers_count", "")),
        }
        if engine.meta.get("int8_scales"):
            self.notes_["int8_scales"] = str(engine.meta["int8_scales"])
        self._dla_layer_names = dla

    # -- ModelSession ------------------------------------------------------------------------------

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        """The worker's inputs as raw files for --loadInputs, so trtexec runs on the same data."""
        args: list[str] = []
        for name, array in feeds.items():
            if not _SIMPLE_NAME.fullmatch(name):
                args = []  # a name trtexec's spec syntax cannot carry: let it generate its own random data
                self.notes_["inputs"] = "trtexec random data (an input name it cannot take in --loadInputs)"
                break
            path = self.scratch / f"input-{len(args)}.bin"
            np.ascontiguousarray(array).tofile(path)
            args.append(f"{name}:{path}")
        self.input_args = ["--loadInputs=" + ",".join(args)] if args else []

    def run(self) -> None:
        """One inference as its own trtexec invocation (the worker uses run_phases instead)."""
        run = self.trtexec.invoke([f"--loadEngine={self.engine.path}", *self.run_args, *self.input_args,
                                   "--warmUp=0", "--iterations=1", "--duration=0"])  # fmt: skip
        if run.returncode != 0:
            raise failure(run, "running one inference", self.trtexec.path)

    def notes(self) -> dict[str, str]:
        return dict(self.notes_)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    # -- the phases --------------------------------------------------------------------------------

    def run_phases(self, worker: Any) -> tuple[int, bool, int]:
        """Warmup and measure in one trtexec invocation; latency frames and phase events to the agent.

        Returns (warmup inferences, warmup stable, measured inferences).
        """
        spec = worker.spec
        minimum = int(spec.get("warmup", 10))
        runs = int(spec.get("runs", 100))
        min_duration_s = float(spec.get("min_duration_s", 0.0))
        cap_s = float(spec.get("max_warmup_s", 30.0))
        mean_ms = self.first_latency_ms or 1.0
        # Time for warmup to settle: two 0.1 s blocks at least (agent/warmup.py), more for a slow model.
        budget_s = min(cap_s, max(1.0, 3 * minimum * mean_ms / 1000.0))
        duration_s = math.ceil(min_duration_s + budget_s)
        # Warmup may take its whole budget: count it in, with room for a steady latency 4x below the cold first one,
        # so that at least `runs` inferences remain to be measured after the split.
        warmup_room = max(minimum, math.ceil(budget_s * 1000.0 / mean_ms * 4))
        times_path = self.scratch / "times.json"
        worker.phase = "warmup"
        worker.event(type="phase", phase="warmup", start_ns=time.monotonic_ns())
        run = self.trtexec.invoke(
            [f"--loadEngine={self.engine.path}", *self.run_args, *self.input_args, "--warmUp=0",
             f"--iterations={warmup_room + runs}", f"--duration={duration_s}", f"--exportTimes={times_path}"]
        )  # fmt: skip
        if run.returncode != 0:
            raise failure(run, "measuring", self.trtexec.path)
        try:
            times = parse_times(times_path.read_text())
        except (OSError, ValueError) as err:
            raise TrtexecFailed(f"trtexec wrote no usable --exportTimes file: {err}") from err
        trace = self._trace(run, times, minimum, int(budget_s * 1e9))
        k = trace.warmup_count
        starts, ends = trace.starts_ns, trace.ends_ns
        for i in range(0, k, MAX_BLOCK):
            frames.write_latency(worker.out, WARMUP, starts[i : min(k, i + MAX_BLOCK)].tolist(),
                                 ends[i : min(k, i + MAX_BLOCK)].tolist())  # fmt: skip
        warm_end = int(starts[k]) if k < len(starts) else int(ends[k - 1]) if k else int(run.zero_ns or run.end_ns)
        warm_start = int(starts[0]) if len(starts) else warm_end
        worker.event(type="phase", phase="warmup", start_ns=warm_start, end_ns=warm_end, count=k, stable=trace.stable)
        worker.phase = "measure"
        worker.event(type="phase", phase="measure", start_ns=warm_end)
        measured = len(starts) - k
        for i in range(k, len(starts), MAX_BLOCK):
            stop = min(len(starts), i + MAX_BLOCK)
            frames.write_latency(worker.out, MEASURE, starts[i:stop].tolist(), ends[i:stop].tolist())
        worker.done = measured
        last_end = int(ends[k:].max()) if measured else warm_end
        worker.event(type="phase", phase="measure", start_ns=warm_end, end_ns=last_end, count=measured)
        if measured:
            compute = trace.compute_ms[k:]
            self.notes_["gpu_compute_ms_p50"] = f"{float(np.median(compute)):.4f}"
        self.notes_.update(trace.extra)
        return k, trace.stable, measured

    def _trace(self, run: Invocation, times: list[Any], minimum: int, budget_ns: int) -> _Trace:
        """trtexec's ms since its time zero, as CLOCK_MONOTONIC windows; the warmup split off by stability."""
        if not times:
            raise TrtexecFailed("trtexec's --exportTimes holds no inference")
        start_ms = np.array([t.start_ms for t in times])
        latency_ms = np.array([t.latency_ms for t in times])
        extra: dict[str, str] = {}
        if run.zero_ns is not None:
            zero = run.zero_ns
            extra["time_anchor"] = "trtexec's 'Starting inference' line"
        else:  # no time-zero line: the last inference ends when the invocation did (an upper bound)
            zero = run.end_ns - round(float((start_ms + latency_ms).max()) * 1e6)
            extra["time_anchor"] = "end of the trtexec invocation"
        starts = zero + np.round(start_ms * 1e6).astype(np.int64)
        ends = starts + np.round(latency_ms * 1e6).astype(np.int64)
        late = int(ends.max()) - run.end_ns
        if late > 0:  # read after it was printed: never place an inference after trtexec exited
            starts -= late
            ends -= late
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        compute = np.array([t.compute_ms for t in times])[order]
        k, stable = split_warmup(starts, ends, minimum, budget_ns)
        return _Trace(starts, ends, compute, k, stable, extra=extra)

    def profile_layers(self, runs: int) -> tuple[list[OpTiming], list[OpTiming]]:
        """Per-layer times from one more invocation with --exportProfile (after measuring: never slowing it)."""
        path = self.scratch / "profile.json"
        run = self.trtexec.invoke(
            [f"--loadEngine={self.engine.path}", *self.run_args, *self.input_args, "--warmUp=0",
             f"--iterations={max(1, runs)}", "--duration=0", f"--exportProfile={path}"]
        )  # fmt: skip
        if run.returncode != 0:
            raise failure(run, "profiling layers", self.trtexec.path)
        try:
            count, layers = parse_profile(path.read_text())
        except (OSError, ValueError) as err:
            self.notes_["op_profile"] = f"trtexec wrote no usable --exportProfile file: {err}"
            return [], []
        return layer_profile(count, layers, self._dla_layer_names, dict(self.engine.meta.get("layer_types") or {}))


def split_warmup(starts: np.ndarray, ends: np.ndarray, minimum: int, budget_ns: int) -> tuple[int, bool]:
    """Where warmup ends in one trace: after `minimum` inferences once latency is stable (agent/warmup.py rule,
    checked every 10 ms as the timing loop does), else at the budget's end, not stable."""
    n = len(starts)
    if minimum <= 0:
        return 0, True
    if n <= minimum:
        return n, False
    latencies = (ends - starts).tolist()
    start_list = starts.tolist()
    block = block_size(minimum)
    checked = start_list[0]
    begin = start_list[0]
    for i in range(minimum, n):
        if ends[i - 1] - checked >= 10_000_000:
            checked = int(ends[i - 1])
            if is_stable_in_time(start_list[:i], latencies[:i], block):
                return i, True
        if start_list[i] - begin >= budget_ns:
            return i, False
    return n, False
