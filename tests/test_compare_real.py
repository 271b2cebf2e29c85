"""`host compare` on real `host profile` runs of squeezenet: a thread-count slowdown fails, A/A passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.store import Store

onnx = pytest.importorskip("onnx")
SQUEEZENET = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
#: The gate. A/A pairs of 1-thread runs differed by < 5% on the 2-core dev box; the thread change by ~60%.
GATE_PCT = "15"


def _host(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host", *args], env=env, capture_output=True, text=True, timeout=120)


#: Attempts per test: this box is shared with other test runs, and a load burst during one of two
#: sequential 1-s profiles shifts its median by more than any gate (+78% seen for an A/A pair at load 4).
ATTEMPTS = 3
#: Which thread count is the slowdown depends on the machine and its load: on the idle 2-core dev box 2
#: intra-op threads ran squeezenet in ~2.2 ms and 1 thread in ~3.6 ms, but with other test runs keeping
#: the box at load 3.5, 2 threads took 5-12 ms and 1 thread 3.4-5.3 ms. So each attempt measures both and
#: puts the slower configuration in as the candidate.


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not SQUEEZENET.exists():
        pytest.skip(f"needs the squeezenet model shipped with onnx ({SQUEEZENET})")
    tmp = tmp_path_factory.mktemp("compare")
    out = {**os.environ, "EDGEPROF_DB": str(tmp / "runs.sqlite"), "XDG_CACHE_HOME": str(tmp / "cache")}
    out.pop("EDGEPROF_CONFIG", None)
    return out


def _median_ms(env: dict[str, str], run_id: str) -> float:
    store = Store(Path(env["EDGEPROF_DB"]))
    try:
        return float(np.median(store.load_run(run_id).raw["local"].latency_ns)) / 1e6
    finally:
        store.close()


def _profile(env: dict[str, str], threads: str) -> str:
    """A real `host profile` of squeezenet on the embedded local agent; its run id."""
    out = Path(env["EDGEPROF_DB"]).parent / f"t{threads}.json"
    proc = _host(
        env,
        "profile",
        str(SQUEEZENET),
        "--runs",
        "150",
        "--warmup",
        "5",
        "--min-duration",
        "1",
        "--idle",
        "0",
        "--threads",
        threads,
        "--quiet",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(json.loads(out.read_text())["run_id"])


def test_slower_thread_count_as_candidate_fails_the_gate(env: dict[str, str]) -> None:
    seen = []
    for _ in range(ATTEMPTS):
        one, two = _profile(env, "1"), _profile(env, "2")
        slow, fast = (one, two) if _median_ms(env, one) > _median_ms(env, two) else (two, one)

        regression = _host(env, "compare", fast, slow, "--fail-on-regression", GATE_PCT, "--format", "md")
        improvement = _host(env, "compare", slow, fast, "--fail-on-regression", GATE_PCT)

        if regression.returncode == 1 and improvement.returncode == 0:
            assert "❌ FAIL" in regression.stdout and "Mann-Whitney" in regression.stdout
            assert "| local | latency p50 (ms) |" in regression.stdout
            return
        seen.append(f"{fast} -> {slow}: exit {regression.returncode}\n{regression.stdout}")
    pytest.fail("the slowdown was not flagged in any attempt:\n" + "\n".join(seen))


def test_aa_pair_of_one_thread_runs_passes_the_gate(env: dict[str, str]) -> None:
    seen = []
    for _ in range(ATTEMPTS):
        base, candidate = _profile(env, "1"), _profile(env, "1")

        result = _host(env, "compare", base, candidate, "--fail-on-regression", GATE_PCT, "--format", "json")

        verdict = json.loads(result.stdout)
        assert {c["metric"] for c in verdict["changes"]} >= {"latency p50", "energy/inference"}
        if result.returncode == 0 and verdict["failed"] is False and verdict["regressions"] == []:
            return
        seen.append(json.dumps(verdict["regressions"]))
    pytest.fail("an A/A pair failed the gate in every attempt: " + "; ".join(seen))
