"""The committed stubs in protos/ match what the pinned generator makes from agent.proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py", "agent_pb2_grpc.pyi")


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates the stubs")
    plugin_dir = Path(sys.executable).parent
    if not (plugin_dir / "protoc-gen-mypy").exists():
        pytest.skip("mypy-protobuf (the dev extra) is not installed next to this interpreter")
    (tmp_path / "protos").mkdir()
    shutil.copy(ROOT / "protos" / "agent.proto", tmp_path / "protos" / "agent.proto")
    env_path = f"{plugin_dir}:{__import__('os').environ.get('PATH', '')}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--grpc_python_out=.",
            "--mypy_out=.",
            "--mypy_grpc_out=.",
            "protos/agent.proto",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        env={"PATH": env_path},
    )
    stale = [
        name for name in GENERATED if (tmp_path / "protos" / name).read_text() != (ROOT / "protos" / name).read_text()
    ]
    assert not stale, f"regenerate the stubs (see README, 'Changing the wire contract'): {stale} differ"
