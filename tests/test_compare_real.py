"""`host compare` on real runs of squeezenet: a heavier candidate fails the gate, A/A passes, single runs use history.

No retries: each side is several repetitions measured interleaved (`host ab`, A B A B …), so a load burst on
this shared box hits both sides alike, and the verdict comes from intervals over repetitions, not from
thousands of inferences of one process taken as independent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.model_variants import append_work

onnx = pytest.importorskip("onnx")
SQUEEZENET = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
#: The gate. On the shared 2-core box at load 5-8 single repetitions of a 1-thread run varied by up to 3x
#: (10.4, 11.3, 5.2 ms for one side of one `host ab`), so the candidate gets four times the Conv work of the
#: base (fraction 3.0) and five repetitions a side: in 4 trials at load 6-8 it measured +258% to +430% with
#: the interval's lower end at +162% or more, while twice the work with three repetitions once gave
#: [-22%, +530%]: an honest "cannot tell" that a test must not depend on.
GATE_PCT = "15"
QUICK = ["--runs", "30", "--warmup", "3", "--min-duration", "0.5", "--idle", "0", "--threads", "1", "--quiet"]


def _host(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not SQUEEZENET.exists():
        pytest.skip(f"needs the squeezenet model shipped with onnx ({SQUEEZENET})")
    tmp = tmp_path_factory.mktemp("compare")
    out = {**os.environ, "EDGEPROF_DB": str(tmp / "runs.sqlite"), "XDG_CACHE_HOME": str(tmp / "cache")}
    out.pop("EDGEPROF_CONFIG", None)
    return out


def _ab(env: dict[str, str], base: Path, cand: Path, repeat: int) -> tuple[str, str]:
    """`host ab BASE CAND --repeat K`: the ids of the two stored runs."""
    proc = _host(env, "ab", str(base), str(cand), "--repeat", str(repeat), *QUICK)
    match = re.search(r"stored base run (\S+) and candidate run (\S+)", proc.stderr)
    assert match, proc.stderr[-2000:]
    return match.group(1), match.group(2)


@pytest.fixture(scope="module")
def heavier_pair(env: dict[str, str]) -> tuple[str, str]:
    heavier = append_work(SQUEEZENET, Path(env["EDGEPROF_DB"]).parent / "squeezenet_x4.onnx", fraction=3.0)
    return _ab(env, SQUEEZENET, heavier, repeat=5)


def _compare(env: dict[str, str], base: str, cand: str) -> tuple[int, dict]:
    # The gate's machinery is under test, not validity: on a shared 2-core box these runs are rarely valid.
    proc = _host(env, "compare", base, cand, "--fail-on-regression", GATE_PCT, "--judge-invalid", "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)


def _p50(verdict: dict) -> dict:
    return next(c for c in verdict["changes"] if c["metric"] == "latency p50")


def test_heavier_candidate_fails_the_gate_and_the_reverse_passes(env: dict[str, str], heavier_pair) -> None:  # type: ignore[no-untyped-def]
    base, cand = heavier_pair

    worse_code, worse = _compare(env, base, cand)
    better_code, better = _compare(env, cand, base)
    markdown = _host(env, "compare", base, cand, "--fail-on-regression", GATE_PCT, "--judge-invalid", "--format", "md")

    assert worse_code == 1 and worse["failed"] is True
    assert _p50(worse)["test"] == "repetitions" and _p50(worse)["regression"] is True
    assert _p50(worse)["ci_pct"][0] > float(GATE_PCT)
    assert better_code == 0 and better["failed"] is False and better["regressions"] == []
    assert "❌ FAIL" in markdown.stdout and "| local | latency p50 (ms) |" in markdown.stdout


def test_aa_pair_passes_the_gate(env: dict[str, str]) -> None:
    base, cand = _ab(env, SQUEEZENET, SQUEEZENET, repeat=3)

    code, verdict = _compare(env, base, cand)

    assert {c["metric"] for c in verdict["changes"]} >= {"latency p50", "energy/inference"}
    assert _p50(verdict)["test"] == "repetitions"
    assert code == 0 and verdict["failed"] is False and verdict["regressions"] == [], json.dumps(verdict["changes"])


def test_single_runs_are_judged_with_the_spread_of_earlier_repeated_runs(env: dict[str, str], heavier_pair) -> None:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(2):
        out = Path(env["EDGEPROF_DB"]).parent / f"single{len(runs)}.json"
        proc = _host(env, "profile", str(SQUEEZENET), *QUICK, "--json", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(out.read_text())["run_id"])

    _, verdict = _compare(env, *runs)

    # The earlier `host ab` runs measured squeezenet with these settings in repetitions: their spread decides.
    assert _p50(verdict)["test"] == "history", json.dumps(_p50(verdict))
    assert "from history" in _p50(verdict)["note"]
