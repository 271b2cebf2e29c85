"""Real generative runs for the report, compare and repetition tests: `agent serve` with a fake RAPL counter at a
constant power, and `host profile MODEL_DIR` storing into a SQLite file the test then opens."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import console_script
from tests.faultlib import rapl_agent as faultlib_rapl_agent

POWER_W = 4.0
RANGE_UJ = 1_000_000_000


@contextmanager
def rapl_agent(tmp_path: Path) -> Iterator[str]:
    """A real agent whose only power sensor is a RAPL counter rising at POWER_W; yields its address."""
    with faultlib_rapl_agent(tmp_path, POWER_W, RANGE_UJ) as address:
        yield address


def host(db: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """`host ARGS…` as a user runs it, on the store `db`."""
    return subprocess.run(
        [console_script("host"), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "EDGEPROF_DB": str(db)},
    )


def profile_genai(
    model_dir: Path,
    address: str,
    db: Path,
    out: Path,
    *extra: str,
    prompt_lens: str = "16,64",
    gen_len: int = 16,
    runs: int = 5,
) -> dict[str, Any]:
    """`host profile MODEL_DIR` on the agent into the store; returns the result document (asserts it ran)."""
    proc = host(
        db,
        "profile",
        str(model_dir),
        "--device",
        address,
        "--prompt-len",
        prompt_lens,
        "--gen-len",
        str(gen_len),
        "--runs",
        str(runs),
        "--warmup",
        "2",
        "--min-duration",
        "0.3",
        "--idle",
        "0.5",
        "--threads",
        "1",
        "--json",
        str(out),
        *extra,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1 only when the busy test machine makes the run not valid
    document = json.loads(out.read_text())
    assert all(d["status"] == "ok" for d in document["devices"]), proc.stderr
    return document
