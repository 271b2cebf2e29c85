"""TensorRT engines built on the board: the job's options, the engine key, and the cache of built engines.

An engine is only valid for the TensorRT release and the GPU it was built with, and it bakes in the precision,
the DLA core and the input shapes. The key is the sha256 of (model sha256, TensorRT version, device and compute
capability, precision, DLA core and GPU fallback, shapes, builder): a second job with the same key loads the
engine and builds nothing. One timing cache per (TensorRT version, device) makes even a new engine's build
faster: it remembers which kernel won for each layer configuration already timed.

Layout under the agent's data dir: engines/<key>/engine.plan + meta.json (written last: an entry without it is
incomplete and is rebuilt), engines/timing-<hash>.cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.errors import InvalidInput, InvalidModel
from agent.runtimes.base import TensorSpec
from agent.sensors.base import under_root

PLAN = "engine.plan"
META = "meta.json"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on."""

    model_sha256: str
    tensorrt_version: str
    device: str
    compute_capability: str
    precision: str
    dla_core: int | None
    gpu_fallback: bool
    #: input name -> "1x3x224x224", as the run feeds them.
    shapes: tuple[tuple[str, str], ...]
    #: "trtexec" or "python": the same engine either way, but each side checks its own builds.
    builder: str

    @property
    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def describe(self) -> str:
        where = f"DLA{self.dla_core}" + ("+GPU" if self.gpu_fallback else "") if self.dla_core is not None else "GPU"
        return f"{self.precision} on {where}"


@dataclass
class CachedEngine:
    path: Path
    meta: dict[str, Any]


class EngineCache:
    """Engines by key in `root`; one job at a time per agent, so no lock beyond atomic renames."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry_dir(self, key: EngineKey) -> Path:
        return self.root / key.digest

    def timing_cache(self, key: EngineKey) -> Path:
        """The timing cache shared by every engine of this TensorRT release on this device."""
        shared = hashlib.sha256(f"{key.tensorrt_version}|{key.device}|{key.compute_capability}".encode()).hexdigest()
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"timing-{shared[:16]}.cache"

    def get(self, key: EngineKey) -> CachedEngine | None:
        """The cached engine for `key`, or None (absent, or incomplete: no meta.json)."""
        directory = self.entry_dir(key)
        plan, meta = directory / PLAN, directory / META
        if not plan.is_file() or not meta.is_file():
            return None
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if data.get("key") != json.loads(json.dumps(asdict(key))) or data.get("plan_bytes") != plan.stat().st_size:
            return None
        with contextlib.suppress(OSError):
            os.utime(meta)  # last use, for whoever prunes the cache by age
        return CachedEngine(plan, data)

    def scratch(self, key: EngineKey) -> Path:
        """A fresh directory to build into, beside the entry (same filesystem: the final rename is atomic)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".build-{key.digest}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    def store(self, key: EngineKey, built_plan: Path, meta: Mapping[str, Any]) -> CachedEngine:
        """Move a freshly built plan into the cache with its meta; returns the cached entry."""
        directory = self.entry_dir(key)
        shutil.rmtree(directory, ignore_errors=True)
        staging = built_plan.parent
        if built_plan.name != PLAN:
            built_plan.rename(staging / PLAN)
        record = {
            **meta,
            "key": asdict(key),
            "plan_bytes": (staging / PLAN).stat().st_size,
            "built_unix_s": time.time(),
        }
        (staging / META).write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(staging, directory)
        return CachedEngine(directory / PLAN, record)

    def drop(self, key: EngineKey) -> None:
        """Forget an entry TensorRT refused to load (another TensorRT or GPU wrote it)."""
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)


PRECISIONS = ("fp32", "fp16", "int8")
TIMERS = ("trtexec", "python")
#: Option the worker fills with the run's --input-shape values (JSON), so the engine is built for them.
INPUT_SHAPES_OPTION = "input_shapes_json"
#: Option the worker fills with the agent's engine cache directory.
ENGINE_DIR_OPTION = "tensorrt.engine_dir"
#: Device-tree SoC -> (GPU name, CUDA compute capability) for Jetson modules (no NVML there).
TEGRA_GPUS = {
    "tegra234": ("Orin (Ampere)", "8.7"),
    "tegra194": ("Xavier (Volta)", "7.2"),
    "tegra186": ("TX2 (Pascal)", "6.2"),
    "tegra210": ("Tegra X1 (Maxwell)", "5.3"),
}


@dataclass(frozen=True)
class TensorRTOptions:
    """What the job asks of TensorRT, checked: one line for each mistake."""

    precision: str = "fp16"
    dla_core: int | None = None
    gpu_fallback: bool = True
    timer: str = ""

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> TensorRTOptions:
        precision = options.get("tensorrt.precision", "") or "fp16"
        if precision not in PRECISIONS:
            raise InvalidInput(f"TensorRT precision '{precision[:20]}' is not one of {', '.join(PRECISIONS)}")
        dla_text = options.get("tensorrt.dla_core", "")
        dla_core: int | None = None
        if dla_text != "":
            if not dla_text.isdigit() or int(dla_text) > 7:
                raise InvalidInput(f"DLA core '{dla_text[:20]}' is not a core number (0 or 1 on Xavier and Orin)")
            dla_core = int(dla_text)
        if dla_core is not None and precision == "fp32":
            raise InvalidInput("the DLA runs fp16 or int8 only: give --precision fp16 or int8 with --dla")
        timer = options.get("tensorrt.timer", "")
        if timer and timer not in TIMERS:
            raise InvalidInput(f"TensorRT timer '{timer[:20]}' is not one of {', '.join(TIMERS)}")
        fallback = options.get("tensorrt.gpu_fallback", "1") not in ("0", "false", "no")
        return cls(precision, dla_core, fallback, timer)


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability) of this board, for the engine key; ("unknown", "") when nothing says.

    A Jetson's SoC from its device tree (under EDGEPROF_SYSFS_ROOT); elsewhere nvidia-smi's first GPU.
    """
    for raw in ("/proc/device-tree/compatible", "/sys/firmware/devicetree/base/compatible"):
        try:
            compatible = under_root(raw).read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for soc, (name, capability) in TEGRA_GPUS.items():
            if any(entry.strip().endswith(soc) for entry in compatible):
                model = _read_model()
                return (f"{model} {name}".strip(), capability)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        first = out.strip().splitlines()[0] if out.strip() else ""
        if "," in first:
            name, _, capability = first.rpartition(",")
            return name.strip(), capability.strip()
    return "unknown", ""


def _read_model() -> str:
    try:
        return under_root("/proc/device-tree/model").read_bytes().replace(b"\0", b"").decode(errors="replace").strip()
    except OSError:
        return ""


def resolve_engine_shapes(inputs: Sequence[TensorSpec], options: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """The shapes the engine is built for: the run's --input-shape values, dynamic batch 1 otherwise."""
    from agent.inputs import resolve_shapes

    try:
        overrides = json.loads(options.get(INPUT_SHAPES_OPTION, "") or "{}")
    except ValueError as err:
        raise InvalidInput(f"bad input shapes for TensorRT: {err}") from err
    return resolve_shapes(inputs, {str(k): str(v) for k, v in dict(overrides).items()})


def engine_key(
    model_path: str, opts: TensorRTOptions, version: str, shapes: Mapping[str, tuple[int, ...]], builder: str
) -> EngineKey:
    device, capability = gpu_identity()
    return EngineKey(
        model_sha256=model_sha256(Path(model_path)),
        tensorrt_version=version,
        device=device,
        compute_capability=capability,
        precision=opts.precision,
        dla_core=opts.dla_core,
        gpu_fallback=opts.gpu_fallback if opts.dla_core is not None else False,
        shapes=tuple(sorted((name, "x".join(str(d) for d in dims)) for name, dims in shapes.items())),
        builder=builder,
    )


def model_sha256(path: Path) -> str:
    """The model's sha256: its name in the agent's content-addressed cache, else hashed here."""
    if re.fullmatch(r"[0-9a-f]{64}", path.name):
        return path.name
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_cache(options: Mapping[str, str], model_path: str) -> EngineCache:
    """The agent's engine cache (beside its model cache unless the worker says where)."""
    root = options.get(ENGINE_DIR_OPTION) or str(Path(model_path).parent.parent / "engines")
    return EngineCache(Path(root))


def io_specs(model_path: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's inputs and outputs, read with ONNX Runtime when the board has it ([] otherwise)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return [], []
    from agent.runtimes.onnx import _spec

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as err:  # the same bytes TensorRT would be given: say so now
        raise InvalidModel(f"not an ONNX model TensorRT could parse: {' '.join(str(err).split())[:300]}") from err
    inputs = [_spec(arg) for arg in session.get_inputs()]
    outputs = []
    for arg in session.get_outputs():
        try:
            outputs.append(_spec(arg))
        except InvalidModel:
            outputs.append(TensorSpec(name=arg.name, dtype=str(arg.type), shape=()))
    return inputs, outputs
