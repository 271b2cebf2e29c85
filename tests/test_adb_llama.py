"""GGUF models on a phone: llama-bench installed with `agent adb install-runner`, run over the real adb stack.

The phone is tests/adb_emulator.py behind a private real adb server (the fixtures of test_adb_bridge.py); its
llama-bench is the stand-in (tests/fixtures/llama-bench: the real flags and JSONL, real sleeps), which the
emulated fuel gauge sees as load while it runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adb_emulator import AdbEmulator
from tests.gguf_model import write_gguf
from tests.test_adb_bridge import adb_port, agent_cli, attach, bridge, detach, host

pytest.importorskip("gguf", reason="the gguf package (edgeprof[host]) is not installed")

STAND_IN = Path(__file__).parent / "fixtures" / "llama-bench"
__all__ = ["adb_port"]  # the module's private adb server, shared with this file's tests


@pytest.fixture
def phone(adb_port: str, tmp_path: Path) -> Iterator[AdbEmulator]:
    emulated = attach(adb_port, tmp_path)
    yield emulated
    detach(adb_port, emulated)


def test_gguf_on_a_phone_runs_llama_bench_on_its_big_cores_and_reports_generation_and_energy(
    adb_port: str, phone: AdbEmulator, tmp_path: Path
) -> None:
    runner = shutil.copy(STAND_IN, tmp_path / "llama-bench")
    installed = agent_cli(adb_port, "adb", "install-runner", str(runner), "--serial", phone.serial)
    model = write_gguf(tmp_path / "tiny.gguf", "Q8_0")
    (tmp_path / "agent").mkdir()
    agent = bridge(tmp_path, adb_port, phone).start(timeout_s=60)
    out = tmp_path / "r.json"
    try:
        proc = host(
            adb_port,
            "profile",
            str(model),
            "--device",
            agent.address,
            "--prompt-len",
            "16,64",
            "--gen-len",
            "8",
            "--runs",
            "5",
            "--warmup",
            "1",
            "--min-duration",
            "1",
            "--idle",
            "1",
            "--quiet",
            "--json",
            str(out),
        )
    finally:
        agent.stop()

    assert installed.returncode == 0, installed.stderr
    assert proc.returncode in (0, 1), proc.stderr
    (dev,) = json.loads(out.read_text())["devices"]
    assert dev["status"] == "ok", dev["error"]
    assert dev["runtime"] == "llama-bench b5163 (8cf427ff)"
    assert dev["latency_source"] == "block_means" and dev["quantization"] == "Q8_0"
    assert dev["notes"]["cpu_mask"] == "f0" and dev["llama_cpp"]["n_threads"] == "4"  # the big cluster, cpus 4-7
    rows = {row["prompt_len"]: row for row in dev["generation"]}
    assert sorted(rows) == [16, 64]
    for row in rows.values():
        assert row["gen_len"] == 8 and row["n_generations"] >= 5
        assert row["decode_tokens_per_s"] > 0
        assert row["energy_mj_per_generated_token"] > 0
    # The gauge drew load current while llama-bench ran: the generations' power is above the idle baseline.
    assert dev["energy"]["avg_power_w"] > dev["energy"]["idle_power_w"]


def test_a_phone_without_llama_bench_says_how_to_install_it(adb_port: str, phone: AdbEmulator, tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "agent").mkdir()
    agent = bridge(tmp_path, adb_port, phone).start(timeout_s=60)
    try:
        proc = host(adb_port, "profile", str(model), "--device", agent.address, "--runs", "1", "--idle", "0")
    finally:
        agent.stop()

    assert proc.returncode == 1
    assert "runs no llama.cpp" in proc.stderr and "agent adb install-runner" in proc.stderr, proc.stderr
