"""A gap or a repeat in an agent's batch numbers ends that device with a clear error and stores no samples.

The agent numbers batches 1, 2, 3…; a gap means lost samples, a repeat double-counted ones. A fake agent
(a real gRPC server) sends such streams to the real `host profile` and `host runs fetch` commands.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from fake_agent import FakeAgentServer, job_batches
from faultlib import SQUEEZENET, isolated_env

from host.store.open import open_store
from host.store.rundata import DeviceRaw
from host.store.sqlite import PendingJob, Store

_HOST = [sys.executable, "-c", "import host.cli.fetch, host.cli; host.cli.main()"]


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_HOST, *args], cwd=tmp, env=isolated_env(tmp), text=True, capture_output=True, timeout=300)


def _store(tmp: Path) -> Store:
    return open_store(Path(isolated_env(tmp)["EDGEPROF_DB"]))


def _profile_against(tmp: Path, seqs: list[int]) -> tuple[subprocess.CompletedProcess[str], str, FakeAgentServer]:
    fake = FakeAgentServer(lambda job_id: job_batches(job_id, seqs, end=True))
    try:
        done = _run(tmp, "profile", str(SQUEEZENET), "--device", fake.address, "--reconnect", "5", "-q")
    finally:
        fake.stop()
    return done, fake.address, fake


def _no_samples(raw: dict[str, DeviceRaw]) -> bool:
    return all(r.start_ns.size == 0 and r.warmup_start_ns.size == 0 and not r.series for r in raw.values())


def _error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error")]


def test_gap_in_the_stream_fails_the_device_and_stores_no_samples(tmp_path: Path) -> None:
    done, address, fake = _profile_against(tmp_path, [1, 2, 4, 5])

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = _error_lines(done.stdout)
    assert f"{address}: gap in the measurement stream of job" in line and "expected batch 3, got 4" in line
    assert fake.servicer.attaches == [], "a gap is not a lost stream: the host does not re-attach"
    store = _store(tmp_path)
    try:
        run_id = store.last_run_id()
        run = store.load_run(run_id)
        pending = store.pending(run_id)
    finally:
        store.close()
    [entry] = run.document["devices"]
    assert entry["status"] == "error" and entry["n_inferences"] == 0
    assert _no_samples(run.raw), "samples from a broken stream are not stored"
    assert [job.job_id for job in pending] == [entry["job_id"]], "left for `host runs fetch` to read again"
    assert fake.servicer.acknowledged == [], "the agent is not told to prune a journal the host did not store"


def test_repeated_batch_fails_the_device_and_stores_no_samples(tmp_path: Path) -> None:
    done, address, fake = _profile_against(tmp_path, [1, 2, 2, 3])

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = _error_lines(done.stdout)
    assert f"{address}: duplicate in the measurement stream of job" in line and "expected batch 3, got 2" in line
    store = _store(tmp_path)
    try:
        run = store.load_run(store.last_run_id())
    finally:
        store.close()
    [entry] = run.document["devices"]
    assert entry["status"] == "error" and entry["n_inferences"] == 0
    assert _no_samples(run.raw)
    assert fake.servicer.acknowledged == []


def test_well_numbered_stream_from_the_same_fake_agent_is_stored_whole(tmp_path: Path) -> None:
    # The control for the two tests above: the fake agent's stream is one the host accepts when numbered right.
    done, address, fake = _profile_against(tmp_path, [1, 2, 3, 4])

    assert done.returncode == 0, done.stdout + done.stderr
    store = _store(tmp_path)
    try:
        run = store.load_run(store.last_run_id())
    finally:
        store.close()
    [entry] = run.document["devices"]
    assert entry["status"] == "ok" and entry["n_inferences"] == 40
    assert run.raw[address].start_ns.size == 40
    assert fake.servicer.acknowledged == [entry["job_id"]]


def test_runs_fetch_of_a_gapped_journal_records_the_error_and_no_samples(tmp_path: Path) -> None:
    fake = FakeAgentServer(lambda job_id: job_batches(job_id, [1, 3, 4], end=True))
    run_id = "20260101-120000-abcdef"
    job_id = uuid.uuid4().hex
    store = _store(tmp_path)
    try:
        store.add_pending(
            PendingJob(run_id, "board-a", fake.address, job_id, {"model": {"sha256": "ab", "format": "onnx"}}, {})
        )
        done = _run(tmp_path, "runs", "fetch", run_id)
        run = store.load_run(run_id)
        pending = store.pending()
    finally:
        store.close()
        fake.stop()

    assert "Traceback" not in done.stderr
    assert "gap in the measurement stream of job" in done.stdout + done.stderr
    assert "expected batch 2, got 3" in done.stdout + done.stderr
    [entry] = run.document["devices"]
    assert entry["device"] == "board-a" and entry["status"] == "error" and entry["job_id"] == job_id
    assert "gap in the measurement stream" in entry["error"]
    assert _no_samples(run.raw)
    assert pending == [], "a journal with a hole will not heal: the job is settled as failed"
    assert fake.servicer.attaches == [0] and fake.servicer.acknowledged == []
