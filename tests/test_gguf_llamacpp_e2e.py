"""`host profile tiny.gguf` and `host ab a.gguf b.gguf` on the embedded default agent, run by the real llama.cpp.

No fleet is configured, so the host starts its local agent, which loads each GGUF model (written here: tiny
random-weight Llamas) with llama-cpp-python in its worker.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import console_script
from tests.gguf_model import write_gguf

pytest.importorskip("gguf", reason="the gguf package (edgeprof[gguf]) is not installed")
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python (edgeprof[gguf]) is not installed: it builds llama.cpp from source"
)

FAST = ["--runs", "5", "--warmup", "1", "--min-duration", "0.2", "--idle", "0", "--threads", "1"]


def host(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("host"), *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def test_profile_of_a_gguf_prints_its_generation_table_and_quantization_and_uploads_it_once(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf", "Q8_0")

    first = host(
        "profile", str(model), "--prompt-len", "16,128", "--gen-len", "32", *FAST, "--json", str(tmp_path / "a.json")
    )
    second = host(
        "profile", str(model), "--prompt-len", "16", "--gen-len", "4", *FAST, "--json", str(tmp_path / "b.json")
    )

    assert first.returncode in (0, 1), first.stderr  # 1 only when the busy test machine makes the run not valid
    document = json.loads((tmp_path / "a.json").read_text())
    (dev,) = document["devices"]
    assert dev["status"] == "ok", dev["error"]
    assert dev["runtime"] == f"llamacpp {llama_cpp.__version__}" and dev["quantization"] == "Q8_0"
    assert dev["latency_source"] == "per_inference"  # in-process: every token has its own timestamp
    rows = {row["prompt_len"]: row for row in dev["generation"]}
    assert sorted(rows) == [16, 128]
    for row in rows.values():
        assert row["gen_len"] == 32 and row["n_generations"] >= 5
        assert row["tokens_generated"] == 32 * row["n_generations"]
        assert row["itl_ms"]["n"] == 31 * row["n_generations"]
        assert row["ttft_ms"]["p50"] > 0 and row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0
        assert row["peak_rss_mb"] > 0
    assert re.search(r"local  GGUF Q8_0, n_ctx 512, n_batch 512, n_threads 1, n_gpu_layers 0", first.stdout)
    for prompt_len in (16, 128):
        line = rf"local Q8_0  prompt {prompt_len} tokens, 32 generated:  means: TTFT [0-9.]+ ms, ITL [0-9.]+ ms"
        assert re.search(line, first.stdout), first.stdout
    assert dev["upload_bytes"] == model.stat().st_size
    assert second.returncode in (0, 1), second.stderr
    assert json.loads((tmp_path / "b.json").read_text())["devices"][0]["upload_bytes"] == 0


def test_ab_of_two_gguf_models_gates_the_slower_one(tmp_path: Path) -> None:
    small = write_gguf(tmp_path / "a.gguf", "Q8_0", layers=2)
    large = write_gguf(tmp_path / "b.gguf", "F32", layers=24)

    proc = host(
        "ab",
        str(small),
        str(large),
        "--repeat",
        "3",
        "--prompt-len",
        "16",
        "--gen-len",
        "16",
        *FAST,
        "--fail-on-regression",
        "15",
        "--judge-invalid",  # the gate, not validity, under test (runs this short are rarely valid)
        "--format",
        "json",
    )

    assert proc.returncode == 1, proc.stdout + proc.stderr
    changes = {c["metric"]: c for c in json.loads(proc.stdout)["changes"]}
    for metric in ("TTFT p50, prompt 16", "decode tokens/s, prompt 16"):
        assert changes[metric]["test"] == "repetitions" and changes[metric]["regression"], changes[metric]
