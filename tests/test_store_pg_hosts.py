"""Eight `host profile` commands at once, each with its own real local agent, into one PostgreSQL database."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlencode

from tests.conftest import console_script
from tests.test_serve_dashboard import start_serve

FAST = ["--runs", "5", "--min-duration", "0.05", "--idle", "0", "--warmup", "1", "--threads", "1", "--quiet"]
HOSTS = 8


def test_eight_hosts_profiling_at_once_all_store_complete_runs(squeezenet: Path, tmp_path: Path, pg_url: str) -> None:
    env = {**os.environ, "EDGEPROF_DB": pg_url}
    outs = [tmp_path / f"host{i}.json" for i in range(HOSTS)]
    procs = [
        subprocess.Popen(
            [console_script("host"), "profile", str(squeezenet), *FAST, "--json", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "XDG_CACHE_HOME": str(tmp_path / f"cache{i}")},  # each host its own compile cache
        )
        for i, out in enumerate(outs)
    ]
    results = []
    for proc in procs:
        try:
            results.append(proc.communicate(timeout=600))
        finally:
            proc.kill()

    assert [p.returncode for p in procs] == [0] * HOSTS, [err[-500:] for _, err in results]
    docs = [json.loads(out.read_text()) for out in outs]
    listed = subprocess.run(
        [console_script("host"), "runs", "ls", "--json", "--limit", "50"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    rows = {row["run_id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {doc["run_id"] for doc in docs}  # every host's run, none lost or merged
    from host.store.open import open_store

    store = open_store(pg_url)
    for doc in docs:
        assert rows[doc["run_id"]]["n_ok"] == 1 and not rows[doc["run_id"]]["pending_jobs"]
        run = store.load_run(doc["run_id"])
        (device,) = run.document["devices"]
        raw = run.raw[device["device"]]
        assert device["status"] == "ok" and len(raw.end_ns) == device["n_inferences"] >= 5  # its own samples
        assert run.document == doc

    # `host serve` over the same database shows every host's run and their trend on the shared device name.
    server = start_serve(env)
    try:
        _, runs_page, _ = server.get("/")
        device = docs[0]["devices"][0]["device"]
        _, trend, _ = server.get(f"/trend?{urlencode({'model': squeezenet.name, 'device': device})}")
        fleet_status, _, _ = server.get("/fleet")
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert all(doc["run_id"] in runs_page for doc in docs)
    same_device = [doc for doc in docs if doc["devices"][0]["device"] == device]
    assert trend.split("<h2>Latency p50</h2>")[1].split("<h2>")[0].count("<circle") == len(same_device)
    assert fleet_status == 200
