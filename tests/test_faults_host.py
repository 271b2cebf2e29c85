"""Hosts that crash or share an agent: `host runs fetch` after a SIGKILL, and two hosts that never overlap."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultlib import SQUEEZENET, AgentProc, isolated_env, wait_for

from host.fleet.client import sha256_file
from host.store.open import open_store
from host.store.sqlite import PendingJob

# `host runs fetch` registers itself on import; importing it first works whether or not host.cli does.
_HOST = [sys.executable, "-c", "import host.cli.fetch, host.cli; host.cli.main()"]
_FAST = ["--warmup", "1", "--idle", "0", "-q"]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProc]:
    proc = AgentProc(tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()


def _host(tmp: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_HOST, *args], cwd=tmp, env=isolated_env(tmp), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _phase(entry: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in entry["phases"] if p["name"] == name)


def test_host_killed_mid_run_then_runs_fetch_collects_the_finished_job(agent: AgentProc, tmp_path: Path) -> None:
    command = ["profile", str(SQUEEZENET), "--device", agent.address, "--runs", "20", "--min-duration", "1.5", *_FAST]
    host = _host(tmp_path, *command)
    store = open_store(Path(isolated_env(tmp_path)["EDGEPROF_DB"]))
    try:
        with agent.client() as client:
            wait_for(lambda: any(j.state == "running" for j in client.list_jobs()), 30, "the job to start")
            host.send_signal(signal.SIGKILL)
            host.wait(10)
            [pending] = wait_for(store.pending, 5, "the pending job the host recorded")

            fetch = subprocess.run(
                [*_HOST, "runs", "fetch", pending.run_id],
                cwd=tmp_path,
                env=isolated_env(tmp_path),
                text=True,
                capture_output=True,
                timeout=60,
            )

            assert fetch.returncode == 0, fetch.stderr
            assert f"{pending.run_id}  {agent.address}  ok" in fetch.stdout
            run = store.load_run(pending.run_id)
            [entry] = run.document["devices"]
            assert entry["status"] == "ok" and entry["job_id"] == pending.job_id
            assert entry["n_inferences"] == _phase(entry, "measure")["count"] >= 20
            assert run.raw[agent.address].start_ns.size == entry["n_inferences"]
            assert run.document["model"]["sha256"] == pending.request["model"]["sha256"]
            assert store.pending() == []
            assert pending.job_id not in [j.job_id for j in client.list_jobs()], "fetch acknowledges the job"
            assert client.health() == "SERVING"

        # The same command left to finish records the settings the fetched run must show.
        (tmp_path / "again").mkdir()
        again = _host(tmp_path / "again", *command, "--json", str(tmp_path / "again" / "run.json"))
        _out, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        expected = json.loads((tmp_path / "again" / "run.json").read_text())["settings"]
        assert expected["runs"] == 20 and expected["min_duration_s"] == 1.5
        assert run.document["settings"] == expected
    finally:
        if host.poll() is None:
            host.kill()
        host.communicate()
        store.close()


def test_fetched_run_of_a_compiled_model_records_the_users_model_not_the_artifact(tmp_path: Path) -> None:
    agent = AgentProc(tmp_path, "--profile", "rpi5").start()  # rpi5's recipe compiles (ort-optimize)
    host = _host(tmp_path, "profile", str(SQUEEZENET), "--device", agent.address, "--min-duration", "1.5", *_FAST)
    store = open_store(Path(isolated_env(tmp_path)["EDGEPROF_DB"]))
    try:
        with agent.client() as client:
            wait_for(lambda: any(j.state == "running" for j in client.list_jobs()), 60, "the job to start")
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        [pending] = wait_for(store.pending, 5, "the pending job the host recorded")
        fetch = subprocess.run(
            [*_HOST, "runs", "fetch", pending.run_id],
            cwd=tmp_path,
            env=isolated_env(tmp_path),
            text=True,
            capture_output=True,
            timeout=120,
        )
        run = store.load_run(pending.run_id)
    finally:
        if host.poll() is None:
            host.kill()
        host.communicate()
        store.close()
        agent.stop()

    assert fetch.returncode == 0, fetch.stderr
    assert pending.request["artifact"]["sha256"] != sha256_file(SQUEEZENET)  # the board ran a compiled copy
    assert run.document["model"]["path"] == str(SQUEEZENET)
    assert run.document["model"]["sha256"] == sha256_file(SQUEEZENET)
    assert run.document["devices"][0]["status"] == "ok"


def test_store_written_before_pending_settings_opens_and_keeps_its_pending_jobs(tmp_path: Path) -> None:
    # The pending_jobs table as hosts before the settings column created it, with a job still to fetch.
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE pending_jobs (run_id TEXT NOT NULL, device TEXT NOT NULL, address TEXT NOT NULL,"
        " job_id TEXT NOT NULL, request TEXT NOT NULL, PRIMARY KEY (run_id, device))"
    )
    old.execute(
        "INSERT INTO pending_jobs VALUES (?, ?, ?, ?, ?)",
        ("20250101-120000-aaaaaa", "board-a", "10.0.0.5:50051", "a" * 32, json.dumps({"model": {"sha256": "ab"}})),
    )
    old.commit()
    old.close()

    store = open_store(path)
    try:
        [legacy] = store.pending()
        store.add_pending(
            PendingJob("20250101-130000-bbbbbb", "board-b", "10.0.0.6:50051", "b" * 32, {}, {"runs": 7, "idle_s": 0.0})
        )
        reopened = open_store(path)  # a second host opening the migrated store changes nothing
        newer = reopened.pending("20250101-13")
        reopened.close()
    finally:
        store.close()

    assert (legacy.device, legacy.job_id, legacy.request) == ("board-a", "a" * 32, {"model": {"sha256": "ab"}})
    assert legacy.settings == {}
    assert [job.settings for job in newer] == [{"runs": 7, "idle_s": 0.0}]


def test_two_hosts_sharing_an_agent_both_succeed_and_never_measure_at_the_same_time(
    agent: AgentProc, tmp_path: Path
) -> None:
    hosts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        hosts.append(
            _host(
                tmp_path / name,
                "profile",
                str(SQUEEZENET),
                "--device",
                agent.address,
                "--runs",
                "20",
                "--min-duration",
                "0.5",
                "--json",
                str(tmp_path / name / "run.json"),
                *_FAST,
            )
        )
    try:
        outputs = [h.communicate(timeout=60) for h in hosts]
    finally:
        for h in hosts:
            if h.poll() is None:
                h.kill()
                h.communicate()

    assert [h.returncode for h in hosts] == [0, 0], outputs
    entries = [json.loads((tmp_path / n / "run.json").read_text())["devices"][0] for n in ("a", "b")]
    # A job holds the board from the moment the runner picks it (queued ends) until it finishes.
    jobs = sorted((_phase(e, "queued")["end_ns"], _phase(e, "finish")["start_ns"]) for e in entries)
    measures = sorted((_phase(e, "measure")["start_ns"], _phase(e, "measure")["end_ns"]) for e in entries)
    assert jobs[0][1] <= jobs[1][0], f"jobs overlapped: {jobs}"
    assert measures[0][1] <= measures[1][0], f"measure phases overlapped: {measures}"
    assert all(e["n_inferences"] == _phase(e, "measure")["count"] >= 20 for e in entries)
