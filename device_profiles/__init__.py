"""Device profiles: one TOML file per board family (runtime, providers, rails, thermal zones), and their loader.

Both sides read profiles: the agent for its runtime, sensors and limits, the host for each board's compile
recipe. The loading lives here, in the package both share; recognising which board the agent runs on stays
with the agent (agent/device/profiles.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

GENERIC_PROFILE = "generic-linux"


def _frozen_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _frozen(value)
    if isinstance(value, list):
        return tuple(_frozen_value(v) for v in value)
    return value


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view, lists turned into tuples, so a loaded profile cannot be changed in place."""
    return MappingProxyType({k: _frozen_value(v) for k, v in mapping.items()})


@dataclass(frozen=True)
class DeviceProfile:
    """What edgeprof knows about one board family. Loaded from ``device_profiles/<name>.toml``."""

    name: str
    description: str = ""
    runtime: str = "onnxruntime"
    #: ORT execution providers in preference order, CPUExecutionProvider last.
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    #: Default intra-op threads, 0 = runtime default.
    threads: int = 0
    #: Wait before a job until every thermal zone is below this (None = don't wait).
    settle_temp_c: float | None = None
    settle_timeout_s: float = 60.0
    #: Thermal zone types to read; empty = all.
    thermal_zones: tuple[str, ...] = ()
    #: Power backend names to try, in order; empty = the default order.
    power_sensors: tuple[str, ...] = ()
    #: Rail (channel) label -> role ("total", "cpu", "gpu", "soc", "dram", ...).
    rails: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Rail label -> the measured rail it is a part of (RAPL core -> package-0 -> psys); "" = top level.
    #: The host sums the "total" rail, else every rail that is a part of nothing measured.
    rail_parents: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Hottest a thermal zone may run before the board counts as throttling, where its zones declare no
    #: throttling trip point of their own (None: only the zones' trip points are used).
    max_temp_c: float | None = None
    #: Recipe hints for the host compiler, e.g. {"format": "onnx", "optimize": "ort-offline"}.
    compile: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: Per-backend extras keyed by backend name (android sign/units, pmic calibration, ...).
    sensor_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: How to recognise the board (device-tree model substrings, compatible strings, ...).
    detect: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: ``[limits] worker_memory_mb``: resident memory a job's worker may use, MB (0 = no limit).
    worker_memory_mb: int = 0
    #: ``[tensorrt]`` as job options ("tensorrt.precision": "fp16", ...), for runtime = "tensorrt".
    tensorrt: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: ``[runners]``: native benchmark binaries on the board, e.g. {"llama_bench": "/opt/llama.cpp/llama-bench"}.
    runners: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def runtime_options(self) -> dict[str, str]:
        """Options every job on this board gets unless it says otherwise (runtime = "tensorrt" and its table)."""
        if self.runtime != "tensorrt":
            return {}
        return {"runtime": "tensorrt", **self.tensorrt}

    def options_for(self, backend: str) -> Mapping[str, Any]:
        """The ``[sensor_options.<backend>]`` table, empty when the profile has none."""
        value = self.sensor_options.get(backend, {})
        return value if isinstance(value, Mapping) else {}


def _profile_dirs() -> list[Path]:
    """User profiles first (they take precedence), then the ones shipped with edgeprof."""
    dirs: list[Path] = []
    user_dir = os.environ.get("EDGEPROF_PROFILES_DIR")
    if user_dir:
        dirs.append(Path(user_dir).expanduser())
    dirs.append(Path(__file__).parent)
    return dirs


def list_profiles() -> list[str]:
    """Names of every profile found, sorted."""
    names = {path.stem for d in _profile_dirs() if d.is_dir() for path in d.glob("*.toml")}
    return sorted(names)


def _profile_path(name: str) -> Path | None:
    for directory in _profile_dirs():
        path = directory / f"{name}.toml"
        if path.is_file():
            return path
    return None


def _str_tuple(data: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{path}: '{key}' must be a list of strings")
    return tuple(value)


def _table(data: Mapping[str, Any], key: str, path: Path) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: '{key}' must be a table")
    return _frozen(value)


def _parse_profile(name: str, path: Path) -> DeviceProfile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"device profile {path}: {err}") from err
    rails = _table(data, "rails", path)
    if not all(isinstance(v, str) for v in rails.values()):
        raise ValueError(f"{path}: every [rails] value must be a role name (a string)")
    rail_parents = _table(data, "rail_parents", path)
    if not all(isinstance(v, str) for v in rail_parents.values()):
        raise ValueError(f"{path}: every [rail_parents] value must be a rail name (a string)")
    runners = _table(data, "runners", path)
    if not all(isinstance(v, str) for v in runners.values()):
        raise ValueError(f"{path}: every [runners] value must be the path of a binary (a string)")
    max_temp = data.get("max_temp_c")
    settle = data.get("settle_temp_c")
    runtime = str(data.get("runtime", "onnxruntime"))
    if runtime not in ("onnxruntime", "tflite", "tensorrt"):
        raise ValueError(f"{path}: runtime must be 'onnxruntime', 'tflite' or 'tensorrt', not {runtime!r}")
    return DeviceProfile(
        name=str(data.get("name", name)),
        description=str(data.get("description", "")),
        runtime=runtime,
        providers=_str_tuple(data, "providers", path) or ("CPUExecutionProvider",),
        threads=int(data.get("threads", 0)),
        settle_temp_c=None if settle is None else float(settle),
        settle_timeout_s=float(data.get("settle_timeout_s", 60.0)),
        thermal_zones=_str_tuple(data, "thermal_zones", path),
        power_sensors=_str_tuple(data, "power_sensors", path),
        rails=rails,
        rail_parents=rail_parents,
        max_temp_c=None if max_temp is None else float(max_temp),
        compile=_table(data, "compile", path),
        sensor_options=_table(data, "sensor_options", path),
        detect=_table(data, "detect", path),
        worker_memory_mb=_worker_memory_mb(_table(data, "limits", path), path),
        tensorrt=_tensorrt_table(_table(data, "tensorrt", path), path),
        runners=runners,
    )


def _tensorrt_table(table: Mapping[str, Any], path: Path) -> Mapping[str, str]:
    """``[tensorrt]`` precision / dla_core / gpu_fallback, as the job options the agent sends its workers."""
    options: dict[str, str] = {}
    for key in table:
        if key not in ("precision", "dla_core", "gpu_fallback"):
            raise ValueError(f"{path}: [tensorrt] takes precision, dla_core and gpu_fallback, not {key!r}")
    precision = table.get("precision")
    if precision is not None:
        if precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"{path}: [tensorrt] precision must be fp32, fp16 or int8")
        options["tensorrt.precision"] = str(precision)
    dla = table.get("dla_core")
    if dla is not None:
        if not isinstance(dla, int) or isinstance(dla, bool) or dla < 0:
            raise ValueError(f"{path}: [tensorrt] dla_core must be a core number (0 or 1)")
        options["tensorrt.dla_core"] = str(dla)
    fallback = table.get("gpu_fallback")
    if fallback is not None:
        if not isinstance(fallback, bool):
            raise ValueError(f"{path}: [tensorrt] gpu_fallback must be true or false")
        options["tensorrt.gpu_fallback"] = "1" if fallback else "0"
    return MappingProxyType(options)


def _worker_memory_mb(limits: Mapping[str, Any], path: Path) -> int:
    value = limits.get("worker_memory_mb", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{path}: [limits] worker_memory_mb must be a whole number of MB, 0 for no limit")
    return value


def load_profile(name: str) -> DeviceProfile:
    """The profile called ``name``; ValueError naming the known ones when there is none."""
    path = _profile_path(name) if name and "/" not in name else None
    if path is None:
        known = ", ".join(list_profiles())
        raise ValueError(f"unknown device profile '{name}'; known: {known}")
    return _parse_profile(name, path)
