"""Generative models end to end: `agent serve` + `host profile MODEL_DIR` on the tiny GenAI decoder."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import console_script
from tests.faultlib import rapl_agent as faultlib_rapl_agent
from tests.genai_model import write_genai_dir

POWER_W = 4.0
RANGE_UJ = 1_000_000_000


@pytest.fixture
def rapl_agent(tmp_path: Path) -> Iterator[str]:
    with faultlib_rapl_agent(tmp_path, POWER_W, RANGE_UJ) as address:
        yield address


def _profile(model_dir: Path, address: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            console_script("host"),
            "profile",
            str(model_dir),
            "--device",
            address,
            "--prompt-len",
            "16,128",
            "--gen-len",
            "32",
            "--runs",
            "5",
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
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generation_profile_reports_ttft_tokens_per_s_and_energy_per_token_and_reuses_the_upload(
    rapl_agent: str, tmp_path: Path
) -> None:
    model_dir = write_genai_dir(tmp_path / "tiny_genai_dir")

    first = _profile(model_dir, rapl_agent, tmp_path / "a.json")
    _profile(model_dir, rapl_agent, tmp_path / "b.json")

    assert first.returncode in (0, 1), first.stderr  # 1 only when the busy test machine makes the run not valid
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["model"]["path"] == str(model_dir)  # the directory the user named, not the cached pack
    (dev,) = document["devices"]
    assert dev["status"] == "ok", dev["error"]
    assert dev["runtime"].startswith("onnxruntime-genai")
    rows = {row["prompt_len"]: row for row in dev["generation"]}
    assert sorted(rows) == [16, 128]
    for prompt_len, row in rows.items():
        assert row["gen_len"] == 32
        assert row["n_generations"] >= 5
        assert row["tokens_generated"] == row["n_generations"] * 32
        assert row["ttft_ms"]["n"] == row["n_generations"]
        assert row["itl_ms"]["n"] == row["n_generations"] * 31
        assert row["ttft_ms"]["p50"] > 0 and row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0
        # Prefill and decode windows at a constant 4 W: energy per token is 4 W times the time per token.
        assert row["energy_mj_per_generated_token"] == pytest.approx(
            POWER_W / row["decode_tokens_per_s"] * 1e3, rel=0.03
        )
        # A prefill of the tiny model lasts ~0.1 ms, well under the fake counter's 1 ms update: looser there.
        assert row["energy_mj_per_prompt_token"] == pytest.approx(POWER_W / row["prefill_tokens_per_s"] * 1e3, rel=0.15)
        assert abs(row["dynamic_energy_mj_per_generated_token"]) < 0.05 * row["energy_mj_per_generated_token"]
        assert prompt_len == row["prompt_len"]
    # The printed line leads with means, which the rates agree with: prefill = prompt length / mean TTFT.
    for prompt_len in (16, 128):
        head = f"prompt {prompt_len} tokens, 32 generated:  means:"
        line = next(ln for ln in first.stdout.splitlines() if head in ln)
        ttft_mean_ms = float(re.search(r"means: TTFT ([\d.]+) ms", line).group(1))  # type: ignore[union-attr]
        prefill = float(re.search(r"prefill ([\d.]+) tok/s", line).group(1))  # type: ignore[union-attr]
        assert prefill == pytest.approx(prompt_len / (ttft_mean_ms / 1e3), rel=0.002), line
        assert "medians: TTFT " in line
    assert dev["upload_bytes"] > 0
    (again,) = json.loads((tmp_path / "b.json").read_text())["devices"]
    assert again["status"] == "ok", again["error"]
    assert again["upload_bytes"] == 0  # the same directory packs to the same sha256: already in the cache


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "genai_config.json").unlink(), "has no genai_config.json"),
        (lambda d: (d / "model.onnx").unlink(), "names 'model.onnx', which is not in the directory"),
        (
            lambda d: (d / "genai_config.json").write_text(
                json.dumps({"model": {"decoder": {"filename": "../outside.onnx"}}})
            ),
            "would land outside the model directory",
        ),
    ],
)
def test_malformed_model_directory_is_one_line_before_anything_runs(
    tmp_path: Path, damage: object, message: str
) -> None:
    model_dir = write_genai_dir(tmp_path / "broken")
    damage(model_dir)  # type: ignore[operator]

    proc = subprocess.run(
        [console_script("host"), "profile", str(model_dir), "--device", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
