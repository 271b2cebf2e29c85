"""Shared fixtures: isolated data paths, real CNNs from the onnx package, a real agent on localhost:0."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

LIGHT_MODELS = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
FIXTURES = Path(__file__).parent / "fixtures"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("EDGEPROF_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="needs real hardware: set EDGEPROF_HARDWARE=1 on a board")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_paths(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own store, cache and config dirs: nothing touches the user's home."""
    root = tmp_path_factory.mktemp("edgeprof-home")
    monkeypatch.setenv("EDGEPROF_DB", str(root / "runs.sqlite"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(root / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    monkeypatch.delenv("EDGEPROF_CONFIG", raising=False)
    monkeypatch.delenv("EDGEPROF_TOKEN", raising=False)
    monkeypatch.delenv("EDGEPROF_SYSFS_ROOT", raising=False)
    return root


@pytest.fixture(scope="session")
def squeezenet() -> Path:
    return LIGHT_MODELS / "light_squeezenet.onnx"


@pytest.fixture(scope="session")
def shufflenet() -> Path:
    return LIGHT_MODELS / "light_shufflenet.onnx"


@pytest.fixture(scope="session")
def tflite_model() -> Path:
    return FIXTURES / "mobilenetv2_035_96_float32.tflite"


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[object]:
    """A real agent (gRPC server, job runner, worker subprocesses) in this process, on a free port."""
    from agent.service.serve import AgentProcess, ServeOptions

    agent = AgentProcess(
        ServeOptions(listen="127.0.0.1:0", profile="generic-linux", advertise=False, data_dir=tmp_path / "agent")
    )
    agent.start()
    yield agent
    agent.stop()


def console_script(name: str) -> str:
    """The installed console script next to this interpreter (what a user runs)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


# The session's throwaway PostgreSQL server (tests/pg_cluster.py): one for every test module that asks for it.
from tests.pg_cluster import pg_cluster, pg_url  # noqa: E402, F401
