"""The worker's generation loop on the real runtime: what it sends the agent, and how often.

A generation of a small model lasts about a millisecond. The worker used to write each one to the agent as it
finished, which woke the agent (frame parsing, journal, stream) right as the next generation's prefill began:
bench/bench_genai.py measured the agent's TTFT 8-17% above a bare onnxruntime-genai loop. Generations are now
sent every FLUSH_INTERVAL_NS, like inference windows, and every one of them still arrives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.measure import frames
from agent.measure.frames import FLUSH_INTERVAL_NS
from tests.genai_model import write_genai_dir

MEASURE = 6
RUNS = 150


def test_generations_reach_the_agent_in_interval_batches_and_none_is_lost(tmp_path: Path) -> None:
    model_dir = write_genai_dir(tmp_path / "tiny")
    spec = {
        "format": "genai",
        "model_path": str(model_dir),
        "threads": 1,
        "providers": ["CPUExecutionProvider"],
        "runs": RUNS,
        "warmup": 1,
        "min_duration_s": 0.0,
        "generation": {"prompt_lens": [16, 32], "gen_len": 4},
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "agent.inference.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write((json.dumps(spec) + "\n").encode())
    worker.stdin.flush()
    events, blocks = [], []
    while (frame := frames.read_frame(worker.stdout)) is not None:
        kind, payload = frame
        if kind == frames.EVENT:
            events.append(payload)
            if payload["type"] == "info":
                worker.stdin.write(b"go\n")
                worker.stdin.flush()
        else:
            blocks.append(payload)
    worker.wait(timeout=120)

    measured = [e for e in events if e["type"] == "tokens" and e["phase"] == MEASURE]
    windows = [b for b in blocks if b[0] == MEASURE]
    (phase,) = [e for e in events if e["type"] == "phase" and e["phase"] == "measure" and "end_ns" in e]
    assert worker.returncode == 0, worker.stderr.read().decode()[-2000:] if worker.stderr else ""
    assert [e["prompt_tokens"] for e in measured] == [16] * RUNS + [32] * RUNS
    assert all(len(e["token_end_ns"]) == 4 for e in measured)
    # every generation's window arrives, in order, matching its token event
    starts = [int(s) for _, block_starts, _ in windows for s in block_starts]
    ends = [int(e) for _, _, block_ends in windows for e in block_ends]
    assert starts == [e["start_ns"] for e in measured]
    assert ends == [e["token_end_ns"][-1] for e in measured]
    # at most one block per flush interval and prompt length (plus each prompt length's last), not one each
    span_ns = phase["end_ns"] - phase["start_ns"]
    assert len(windows) <= span_ns // FLUSH_INTERVAL_NS + 2 * 2
    assert len(windows) < RUNS
