"""`host profile --repeat K` and `host ab` end to end: real agent, real workers, real ONNX Runtime, real store."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.model_variants import append_work
from host.fleet.client import AgentClient
from host.fleet.target import Target
from host.prepare.modelfile import inspect
from host.run.collect import JobCollector
from host.run.profiling import ProfileSettings
from host.run.sequence import ab_order, run_parts
from host.store.open import open_store
from protos import agent_pb2 as pb
from tests.faultlib import profile_request, upload

QUICK = ["--runs", "20", "--min-duration", "0.2", "--idle", "0", "--warmup", "2", "--threads", "1", "-q"]


def _host(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host", *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False
    )


def test_repeat_measures_each_repetition_in_a_fresh_worker(tmp_path: Path) -> None:
    out = tmp_path / "run.json"

    done = _host("profile", "example:squeezenet", "--repeat", "3", *QUICK, "--json", str(out), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    entry = json.loads(out.read_text())["devices"][0]
    reps = entry["repetitions"]
    assert [r["part"] for r in reps] == [0, 1, 2]
    assert len({r["worker_pid"] for r in reps}) == 3  # a new worker process each time
    assert all(r["load_time_ms"] > 0 and r["n"] >= 20 and r["p50_ms"] > 0 for r in reps)
    assert sum(r["n"] for r in reps) == entry["n_inferences"]
    measures = sorted((p["part"], p["start_ns"], p["end_ns"]) for p in entry["phases"] if p["name"] == "measure")
    assert [m[0] for m in measures] == [0, 1, 2]
    assert all(measures[i][2] <= measures[i + 1][1] for i in range(2))  # back to back, never overlapping
    assert entry["latency_ms"]["ci_method"].startswith("3 repetitions: t (2 df) on their log quantiles")
    stored = open_store().load_run(json.loads(out.read_text())["run_id"])
    assert stored.document["settings"]["repeat"] == 3
    assert stored.raw["local"].start_ns.size == entry["n_inferences"]
    report = tmp_path / "report.md"
    assert _host("report", stored.run_id, "--format", "md", "-o", str(report), cwd=tmp_path).returncode == 0
    text = report.read_text()
    assert "3 repetitions, each in a fresh worker" in text
    assert all(f"| {r['n']} |" in text and str(r["worker_pid"]) in text for r in reps)


def test_ab_interleaves_stores_two_runs_and_gates(tmp_path: Path, squeezenet: Path) -> None:
    # Far more than the bench's 15%: this pins the machinery (gate -> exit code) on a busy shared box, where a
    # 15% difference at 20 inferences per repetition is within noise; the bench measures the sensitivity.
    heavier = append_work(squeezenet, tmp_path / "squeezenet_plus.onnx", fraction=0.8)
    args = ["--repeat", "3", *QUICK, "--judge-invalid", "--format", "json"]  # the gate, not validity, under test

    caught = _host("ab", str(squeezenet), str(heavier), *args, "--fail-on-regression", "5", cwd=tmp_path)
    calibration = _host("ab", str(squeezenet), str(squeezenet), *args, "--fail-on-regression", "1000", cwd=tmp_path)

    # Three repetitions of 20 inferences on a busy 2-core box can spread by tens of percent: the t interval over
    # them is then honestly wide, and the gate must say so (the smallest change it would catch) if it passes.
    p50 = next(c for c in json.loads(caught.stdout)["changes"] if c["metric"] == "latency p50")
    assert caught.returncode == 1 or p50["detectable_change_pct"] > p50["change_pct"], caught.stdout
    assert calibration.returncode == 0, calibration.stdout + calibration.stderr
    assert json.loads(calibration.stdout)["differences"] == []  # the two sides were measured alike
    runs = open_store().runs()
    assert len(runs) == 4
    for run_row in runs:
        run = open_store().load_run(run_row.run_id)
        ab = run.document["ab"]
        assert ab["order"] == "ABABAB" and run.run_id == ab["runs"][ab["role"]]
        parts = [r["part"] for r in run.document["devices"][0]["repetitions"]]
        assert parts == ([0, 2, 4] if ab["role"] == "base" else [1, 3, 5])
    cand = next(r for r in runs if r.model_path == str(heavier))
    assert open_store().load_run(cand.run_id).document["model"]["sha256"] == inspect(heavier).sha256


def _collect(client: AgentClient, request: pb.ProfileRequest, started: threading.Event | None = None) -> JobCollector:
    collector = JobCollector("local")
    for batch in client.profile(request, timeout_s=300):
        collector.add(batch)
        if started is not None and collector.current_phase == "measure":
            started.set()
    return collector


def test_another_hosts_job_never_runs_between_ab_parts(agent_process: Any, squeezenet: Path, shufflenet: Path) -> None:
    address = f"127.0.0.1:{agent_process.port}"
    with AgentClient(address) as client:
        sha_a, sha_b = upload(client, squeezenet), upload(client, shufflenet)
    request = profile_request(sha_a, runs=10, warmup=1, min_duration_s=0.2)
    for sha in (sha_a, sha_b, sha_a, sha_b):
        request.parts.add(model_sha256=sha, model_format="onnx")
    measuring = threading.Event()
    result: dict[str, JobCollector] = {}

    def run_ab() -> None:
        with AgentClient(address) as client:
            result["ab"] = _collect(client, request, measuring)

    thread = threading.Thread(target=run_ab)
    thread.start()
    assert measuring.wait(120), "the A/B job never reached its first measure phase"
    with AgentClient(address) as other_host:  # a second host submits while the A/B sequence runs
        other = _collect(other_host, profile_request(sha_b, runs=5, warmup=1))
    thread.join(300)

    ab = result["ab"]
    assert ab.end is not None and ab.end.status == pb.JobEnd.OK, ab.end
    assert [p.part for p in ab.end.parts] == [0, 1, 2, 3]
    ab_last_ns = max(ab.part_raw(p).phase("measure").end_ns for p in ab.parts)  # type: ignore[union-attr]
    other_raw = other.raw()
    assert other.end is not None and other.end.status == pb.JobEnd.OK
    assert other_raw.phase("prepare").start_ns > ab_last_ns  # type: ignore[union-attr]
    assert "position 1 in queue" in (other_raw.phase("queued").detail or "")  # type: ignore[union-attr]


def test_agent_without_parts_support_is_refused_in_one_line(
    agent_process: Any, squeezenet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.jobs.parts

    monkeypatch.setattr(agent.jobs.parts, "CAPABILITY", "something-else")  # what an older agent advertises: not parts
    target = Target("old", f"127.0.0.1:{agent_process.port}")
    settings = ProfileSettings(runs=5, warmup=1, min_duration_s=0.0, idle_s=0.0)

    runs = run_parts([inspect(squeezenet)] * 2, ab_order(1), [target], settings, store=None, progress=lambda s: None)

    for run in runs:
        entry = run.document["devices"][0]
        assert entry["status"] == "error"
        assert "cannot run repetitions in fresh workers" in entry["error"] and "\n" not in entry["error"]


def test_failing_part_ends_the_job_naming_its_part(agent_process: Any, squeezenet: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model at all" * 10)
    address = f"127.0.0.1:{agent_process.port}"
    with AgentClient(address) as client:
        good, bad = upload(client, squeezenet), upload(client, broken)
        request = profile_request(good, runs=5, warmup=1)
        for sha in (good, bad, good):
            request.parts.add(model_sha256=sha, model_format="onnx")

        collector = _collect(client, request)

    assert collector.end is not None and collector.end.status == pb.JobEnd.ERROR
    assert collector.end.error.startswith("part 2 of 3: ")
    assert collector.parts == [0, 1]  # the third part never started


def test_ab_refuses_an_unknown_gate_metric_before_measuring(tmp_path: Path, squeezenet: Path) -> None:
    result = _host("ab", str(squeezenet), str(squeezenet), "--gate-metrics", "latency-p50,p77", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "host: unknown gate metric 'p77' (choose from latency-p50, energy, dynamic-energy, ttft-p50,"
        " decode-tokens-per-s)"
    )
    assert open_store().runs() == []  # nothing was measured or stored
