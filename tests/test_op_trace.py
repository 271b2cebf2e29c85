"""`--op-profile` says what it cannot give and keeps what it can (issue 29 item 7): a `.tflite` model's profile
is "not available" with the reason; ONNX Runtime's raw trace travels gzip-compressed and is written only when
it decompresses within bounds to a Chrome trace."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from host.run import op_trace
from host.run.op_trace import TraceError, trace_path, unpack_trace, write_trace
from tests.conftest import console_script

FAST = ["--runs", "10", "--min-duration", "0", "--idle", "0", "--warmup", "2", "--quiet"]


def test_a_tflite_model_says_why_it_has_no_operator_profile(tflite_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [console_script("host"), "profile", str(tflite_model), *FAST, "--op-profile", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
        cwd=tmp_path,
    )

    (dev,) = json.loads(out.read_text())["devices"]
    assert dev["status"] == "ok", proc.stderr
    assert dev["notes"]["op_profile"].startswith("not available: LiteRT's Python interpreter exposes no per-operator")
    assert "op profile  local: not available: LiteRT's Python interpreter" in proc.stdout
    assert "benchmark_model" in proc.stdout
    assert not list(tmp_path.glob("op-trace-*"))


def test_a_trace_is_written_as_the_json_it_was(tmp_path: Path) -> None:
    events = [{"name": "conv1_kernel_time", "ph": "X", "ts": 10, "dur": 5, "pid": 1, "tid": 2, "cat": "Node"}]
    raw = json.dumps(events).encode()

    path = write_trace(gzip.compress(raw), tmp_path, "20260301-120000-abcdef", "pi 5/../lab:50051")

    assert path == tmp_path / "op-trace-20260301-120000-abcdef-pi_5_lab_50051.json"
    assert path.read_bytes() == raw


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not gzip at all", "not gzip data"),
        (gzip.compress(b"{not json"), "not JSON"),
        (gzip.compress(b'{"events": []}'), "not a Chrome trace"),
        (gzip.compress(b"[" + b" " * (2 * 1024 * 1024) + b"]"), "over 1 MB decompressed"),
    ],
    ids=["not-gzip", "not-json", "not-a-trace", "too-large"],
)
def test_a_trace_that_is_not_one_or_too_large_is_refused_in_one_line(
    payload: bytes, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(op_trace, "MAX_TRACE_BYTES", 1024 * 1024)

    with pytest.raises(TraceError) as refused:
        unpack_trace(payload)

    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not trace_path(tmp_path, "r", "d").exists()
