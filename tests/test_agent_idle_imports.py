"""The idle agent stays small: numpy and the runtimes load only once a job needs them (a Pi Zero 2 has 512 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from faultlib import AgentProc, isolated_env

# Loaded by the worker subprocess, or by the agent process once a job's measurements arrive; never at start.
JOB_ONLY_MODULES = ("numpy", "onnxruntime", "onnx", "psutil", "pynvml", "serial")


def test_import_agent_serve_loads_no_job_only_module(tmp_path: Path) -> None:
    # A clean interpreter: what other tests imported into this one must not hide an import.
    script = (
        "import json, sys\n"
        "import agent.cli, agent.service.serve\n"
        f"print(json.dumps(sorted(m for m in {JOB_ONLY_MODULES!r} if m in sys.modules)))\n"
    )

    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=isolated_env(tmp_path), timeout=60
    )

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_running_idle_agent_has_no_numpy_mapped(tmp_path: Path) -> None:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/<pid>/maps (Linux)")
    agent = AgentProc(tmp_path).start()
    try:
        # By the time it announces its port the agent has detected sensors, listed runtimes and opened its
        # journal: everything an idle agent does.
        mapped = Path(f"/proc/{agent.pid}/maps").read_text()
    finally:
        agent.stop()

    assert "/numpy/" not in mapped
    assert "onnxruntime" not in mapped
