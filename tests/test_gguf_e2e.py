"""GGUF models end to end: `agent serve --llama-bench` + `host profile tiny.gguf` / `host ab a.gguf b.gguf`.

The board's llama-bench is the stand-in (tests/fixtures/llama-bench: the real flags and JSON, real sleeps whose
length grows with the model file), the power a fake RAPL counter at a constant 4 W, so energy per generated
token must be 4 W times the time per token. The host reads each file's GGUF header (the real gguf package).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultlib import rapl_agent
from tests.genai_runs import host
from tests.gguf_model import write_gguf

pytest.importorskip("gguf", reason="the gguf package (edgeprof[host]) is not installed")

STAND_IN = Path(__file__).parent / "fixtures" / "llama-bench"
POWER_W = 4.0
RANGE_UJ = 1_000_000_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path, str]]:
    """(store, small Q8_0 model, large F32 model, address of an agent measuring GGUF with llama-bench)."""
    tmp = tmp_path_factory.mktemp("gguf_e2e")
    small = write_gguf(tmp / "tiny.gguf", "Q8_0")
    large = write_gguf(tmp / "large.gguf", "F32", layers=4)
    with rapl_agent(tmp, POWER_W, RANGE_UJ, "--llama-bench", str(STAND_IN)) as address:
        yield tmp / "runs.db", small, large, address


def _profile(db: Path, model: Path, address: str, out: Path) -> subprocess.CompletedProcess[str]:
    return host(
        db,
        "profile",
        str(model),
        "--device",
        address,
        "--prompt-len",
        "16,128",
        "--gen-len",
        "32",
        "--runs",
        "5",
        "--warmup",
        "1",
        "--min-duration",
        "0.2",
        "--idle",
        "0.5",
        "--threads",
        "2",
        "--batch-size",
        "64",
        "--json",
        str(out),
    )


def test_profile_prints_the_generation_table_with_the_quantization_and_reuses_the_upload(
    lab: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    db, small, _, address = lab

    first = _profile(db, small, address, tmp_path / "a.json")
    second = _profile(db, small, address, tmp_path / "b.json")

    assert first.returncode in (0, 1), first.stderr  # 1 only when the busy test machine makes the run not valid
    document = json.loads((tmp_path / "a.json").read_text())
    (dev,) = document["devices"]
    assert dev["status"] == "ok", dev["error"]
    assert dev["runtime"] == "llama-bench b5163 (8cf427ff)"
    assert dev["quantization"] == "Q8_0"
    assert dev["latency_source"] == "block_means"  # llama-bench times repetitions, not tokens
    assert dev["llama_cpp"]["n_threads"] == "2" and dev["llama_cpp"]["n_batch"] == "64"
    rows = {row["prompt_len"]: row for row in dev["generation"]}
    assert sorted(rows) == [16, 128]
    for row in rows.values():
        assert row["gen_len"] == 32 and row["n_generations"] >= 5
        assert row["itl_ms"]["n"] == row["n_generations"] * 31
        # 4 W over the decode: energy per generated token is 4 W times the mean inter-token time
        per_token_s = 1.0 / row["decode_tokens_per_s"]
        assert row["energy_mj_per_generated_token"] == pytest.approx(POWER_W * per_token_s * 1e3, rel=0.05)
    assert rows[128]["ttft_ms"]["p50"] > rows[16]["ttft_ms"]["p50"]  # a longer prompt takes longer to prefill
    assert re.search(r"GGUF Q8_0, runner llama-bench b5163 \(8cf427ff\), n_ctx .*, n_batch 64", first.stdout)
    assert re.search(r"Q8_0  prompt 128 tokens, 32 generated:  means: TTFT [0-9.]+ ms", first.stdout), first.stdout
    assert json.loads((tmp_path / "b.json").read_text())["devices"][0]["upload_bytes"] == 0, second.stderr


def test_ab_gates_a_slower_gguf_candidate(lab: tuple[Path, Path, Path, str]) -> None:
    db, small, large, address = lab

    proc = host(
        db,
        "ab",
        str(small),
        str(large),
        "--device",
        address,
        "--repeat",
        "3",
        "--prompt-len",
        "16",
        "--gen-len",
        "8",
        "--runs",
        "5",
        "--warmup",
        "1",
        "--min-duration",
        "0.1",
        "--idle",
        "0.3",
        "--fail-on-regression",
        "15",
        "--judge-invalid",  # the gate, not validity, under test (runs this short are rarely valid)
        "--format",
        "json",
    )

    assert proc.returncode == 1, proc.stdout + proc.stderr
    changes = {c["metric"]: c for c in json.loads(proc.stdout)["changes"]}
    for metric in ("TTFT p50, prompt 16", "decode tokens/s, prompt 16"):
        assert changes[metric]["gated"] and changes[metric]["regression"], changes[metric]
    assert changes["decode tokens/s, prompt 16"]["change_pct"] < -50  # 3.5 times the bytes per token
    stored = json.loads(proc.stdout)
    for run_id, quantization in ((stored["base_id"], "Q8_0"), (stored["candidate_id"], "F32")):
        out = db.parent / f"{run_id}.json"
        assert host(db, "report", run_id, "--format", "json", "-o", str(out)).returncode == 0
        (entry,) = json.loads(out.read_text())["devices"]
        # each side keeps its own model's facts and how llama-bench measured it, across its repetitions
        assert entry["quantization"] == quantization and len(entry["repetitions"]) == 3
        assert entry["latency_source"] == "block_means"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"GGUF" + b"\xff" * 200, "is not a valid GGUF file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "is named .gguf but is not a GGUF file"),
    ],
    ids=["garbage-after-magic", "not-gguf"],
)
def test_a_malformed_gguf_is_refused_in_one_line_before_any_agent(tmp_path: Path, content: bytes, says: str) -> None:
    model = tmp_path / "broken.gguf"
    model.write_bytes(content)

    proc = host(tmp_path / "runs.db", "profile", str(model), "--device", "127.0.0.1:1", timeout_s=60)

    assert proc.returncode != 0
    assert says in proc.stderr and str(model) in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_truncated_gguf_is_refused_in_one_line(tmp_path: Path) -> None:
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    model = tmp_path / "cut.gguf"
    model.write_bytes(whole[: len(whole) * 2 // 3])

    proc = host(tmp_path / "runs.db", "profile", str(model), "--device", "127.0.0.1:1", timeout_s=60)

    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "damaged or truncated" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_dashboard_trend_of_a_gguf_model_shows_ttft_and_energy_per_generated_token(
    lab: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    from host.dashboard.trend import render_trend, trend_points
    from host.store.sqlite import Store

    db, small, _, address = lab
    for name in ("t1.json", "t2.json"):
        assert _profile(db, small, address, tmp_path / name).returncode in (0, 1)
    store = Store(db)

    points = trend_points(store.documents_between(limit=100), small.name, address)
    page = render_trend(points, small.name, address, 5.0)

    assert len(points) >= 2
    docs = [json.loads((tmp_path / n).read_text())["devices"][0] for n in ("t1.json", "t2.json")]
    # each point is the run's TTFT p50 and energy per generated token of its first prompt length (16)
    assert [p.p50_ms for p in points[-2:]] == [d["generation"][0]["ttft_ms"]["p50"] for d in docs]
    assert [p.energy_mj for p in points[-2:]] == [d["generation"][0]["energy_mj_per_generated_token"] for d in docs]
    assert all(p.prompt_len == 16 for p in points)
    assert "Time to first token p50, prompt 16 tokens" in page and "Energy per generated token" in page
    # a point per run on each chart (a run whose energy the samples did not cover has none on the second)
    assert page.count("<circle") == len(points) + len([p for p in points if p.energy_mj is not None])
