"""A real worker subprocess (`python -m agent.inference.worker`) driven as the agent drives it: the spec line,
"go" once it has loaded the model, every event it sends back, its exit status and its stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from agent.measure import frames


def run_worker(
    spec: dict[str, Any], env: dict[str, str] | None = None, timeout_s: float = 180
) -> tuple[list[dict[str, Any]], int, str]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "agent.inference.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert worker.stdin is not None and worker.stdout is not None and worker.stderr is not None
    worker.stdin.write((json.dumps(spec) + "\n").encode())
    worker.stdin.flush()
    events = []
    while (frame := frames.read_frame(worker.stdout)) is not None:
        kind, payload = frame
        if kind == frames.EVENT:
            events.append(payload)
            if payload["type"] == "info":
                worker.stdin.write(b"go\n")
                worker.stdin.flush()
    code = worker.wait(timeout=timeout_s)
    return events, code, worker.stderr.read().decode()
