"""The trtexec runner against the stand-in, in this process: engine cache and rebuilds, the export formats of
three TensorRT generations, the time anchor, the warmup split, TensorRT 11's strong typing, one-line failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent import frames
from agent.errors import InvalidInput, InvalidModel
from agent.runtimes.tensorrt_engines import TensorRTOptions
from agent.runtimes.trtexec import Trtexec, precision_flags
from agent.runtimes.trtexec_session import load_trtexec_session, split_warmup
from tests.jetson_fakes import standin
from tests.sensor_fakes import write_dt_model


class FakeWorker:
    """What TrtexecSession.run_phases uses of agent/worker.py's Worker: spec, events and the frame pipe."""

    def __init__(self, out: Path, **spec: Any) -> None:
        self.spec = {"warmup": 5, "runs": 20, "min_duration_s": 0.0, "max_warmup_s": 5.0, **spec}
        self.out = open(out, "wb")  # noqa: SIM115 - closed by frames()
        self.events: list[dict[str, Any]] = []
        self.phase = "prepare"
        self.done = 0

    def event(self, **fields: Any) -> None:
        self.events.append(fields)

    def frames(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        self.out.close()
        found = []
        with open(self.out.name, "rb") as fh:
            while (frame := frames.read_frame(fh)) is not None:
                found.append(frame[1])
        return found


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    root = tmp_path / "sys"
    write_dt_model(root, "NVIDIA Jetson Orin Nano Developer Kit", ["nvidia,p3768-0000+p3767-0005", "nvidia,tegra234"])
    log = tmp_path / "calls.log"
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(root))
    monkeypatch.setenv("EDGEPROF_STANDIN_LOG", str(log))
    monkeypatch.setattr(Trtexec, "_versions", {})
    binary = standin(tmp_path / "bin", "trtexec", "trtexec_standin.py")
    return {"trtexec": Trtexec(str(binary)), "log": log, "engines": tmp_path / "engines"}


def _load(board: dict[str, Any], model: Path, **options: str) -> Any:
    opts = {"tensorrt.engine_dir": str(board["engines"]), **options}
    return load_trtexec_session(board["trtexec"], str(model), TensorRTOptions.from_options(opts), opts)


def _builds(board: dict[str, Any]) -> int:
    path: Path = board["log"]
    return sum(line.startswith("build ") for line in path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("version", ["8.0.1", "8.5.2", "10.3.0"])
def test_every_export_format_gives_per_inference_windows_split_into_warmup_and_measure(
    board: dict[str, Any], squeezenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    monkeypatch.setenv("EDGEPROF_STANDIN_TRT", version)
    session = _load(board, squeezenet, **{"tensorrt.precision": "fp16"})
    worker = FakeWorker(tmp_path / "frames.bin")

    warmup, stable, measured = session.run_phases(worker)

    blocks = worker.frames()
    warm = [b for b in blocks if b[0] == 5]
    meas = [b for b in blocks if b[0] == 6]
    assert sum(len(b[1]) for b in warm) == warmup >= 5
    assert sum(len(b[1]) for b in meas) == measured >= 20
    starts = np.concatenate([b[1] for b in warm + meas])
    ends = np.concatenate([b[2] for b in warm + meas])
    assert np.all(ends > starts) and np.all(np.diff(starts) > 0)  # one inference after another, never overlapping
    assert session.notes()["time_anchor"] == "trtexec's 'Starting inference' line"
    phases = [e for e in worker.events if e.get("end_ns")]
    assert [p["phase"] for p in phases] == ["warmup", "measure"]
    assert phases[1]["count"] == measured and isinstance(stable, bool)


def test_second_load_builds_nothing_and_another_gpu_or_tensorrt_rebuilds(
    board: dict[str, Any], squeezenet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _load(board, squeezenet)
    again = _load(board, squeezenet)
    assert _builds(board) == 1
    assert first.notes()["engine_cached"] == "false" and again.notes()["engine_cached"] == "true"
    assert float(first.notes()["engine_build_ms"]) > 0 and "engine_build_ms" not in again.notes()

    monkeypatch.setenv("EDGEPROF_STANDIN_CC", "7.2")  # same key on the agent's side, a plan TensorRT now refuses
    rebuilt = _load(board, squeezenet)

    assert _builds(board) == 2 and rebuilt.notes()["engine_cached"] == "false"


def test_engine_key_separates_precision_dla_core_and_shapes(board: dict[str, Any], squeezenet: Path) -> None:
    keys = {
        _load(board, squeezenet, **opts).key.digest
        for opts in ({}, {"tensorrt.precision": "int8"}, {"tensorrt.dla_core": "0"}, {"tensorrt.dla_core": "1"})
    }
    assert len(keys) == 4 and _builds(board) == 4


def test_timing_cache_is_shared_between_engines_of_one_device(board: dict[str, Any], squeezenet: Path) -> None:
    _load(board, squeezenet, **{"tensorrt.precision": "fp16"})
    caches = list(Path(board["engines"]).glob("timing-*.cache"))
    assert len(caches) == 1 and json.loads(caches[0].read_text())


def test_dla_placement_and_layer_profile_mark_dla_layers(board: dict[str, Any], squeezenet: Path) -> None:
    session = _load(board, squeezenet, **{"tensorrt.precision": "fp16", "tensorrt.dla_core": "0"})
    by_kind, top = session.profile_layers(3)
    notes = session.notes()
    assert int(notes["dla_layers"]) >= 1 and int(notes["gpu_layers"]) >= 1
    assert {row.provider for row in top} == {"DLA", "GPU"}
    assert all(row.calls == 3 for row in top)
    assert any(row.op_type == "ForeignNode" and row.provider == "DLA" for row in by_kind)


def test_dla_without_gpu_fallback_fails_in_one_line_naming_the_layer(board: dict[str, Any], squeezenet: Path) -> None:
    with pytest.raises(InvalidModel) as err:
        _load(board, squeezenet, **{"tensorrt.dla_core": "0", "tensorrt.gpu_fallback": "0"})
    assert "not supported on DLA" in str(err.value) and "\n" not in str(err.value)


def test_tensorrt_11_refuses_weak_typing_flags_in_one_line() -> None:
    with pytest.raises(InvalidInput, match="strongly typed"):
        precision_flags("11.4.0", TensorRTOptions(precision="fp16"), has_qdq=False)
    assert precision_flags("11.4.0", TensorRTOptions(precision="int8"), has_qdq=True) == []
    assert precision_flags("10.3.0", TensorRTOptions(precision="int8"), has_qdq=False) == ["--int8", "--fp16"]
    with pytest.raises(InvalidInput, match="fp16 or int8"):
        TensorRTOptions.from_options({"tensorrt.precision": "fp32", "tensorrt.dla_core": "0"})


def test_warmup_ends_when_latency_is_stable_else_at_its_budget() -> None:
    ms = 1_000_000
    starts = np.arange(600) * 2 * ms
    ramp = np.where(np.arange(600) < 100, 3 * ms, ms)  # 100 slow inferences, then steady
    k, stable = split_warmup(starts, starts + ramp, minimum=10, budget_ns=1_000 * ms)
    assert stable and 100 <= k <= 300
    rising = starts + (ms + np.arange(600) * 20_000)  # never stable
    k, stable = split_warmup(starts, rising, minimum=10, budget_ns=500 * ms)
    assert not stable and k == 250
