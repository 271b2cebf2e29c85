"""The run store behaves the same on SQLite and on a real PostgreSQL server: every test runs on both."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from host.report.synthetic import synthetic_run
from host.store.open import open_store
from host.store.rundata import RunData
from host.store.schema import SCHEMA_VERSION
from host.store.sqlite import PendingJob, Store, StoreError


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store of each backend, as EDGEPROF_DB would name it."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.sqlite")
    return str(request.getfixturevalue("pg_url"))


def _run(run_id: str, created_at: str, sha: str = "ab" * 32, seed: int = 7, n_devices: int = 2) -> RunData:
    run = synthetic_run(n_devices=n_devices, n_inferences=300, seed=seed)
    run.document.update(run_id=run_id, created_at=created_at)
    run.document["model"] = {"path": f"models/{sha[:4]}.onnx", "sha256": sha}
    return run


def _job(run_id: str, device: str) -> PendingJob:
    return PendingJob(run_id, device, "127.0.0.1:50051", "f" * 32, {"artifact": {"sha256": "cd" * 32}}, {"runs": 5})


def test_raw_arrays_round_trip_exactly(target: str) -> None:
    run = _run("20260301-101010-aaaaaa", "2026-03-01T10:10:10+00:00")
    store = open_store(target)
    store.save_run(run)
    loaded = open_store(target).load_run("20260301-101010")  # a prefix, through a second connection

    assert loaded.document == json.loads(json.dumps(run.document))
    for device, raw in run.raw.items():
        got = loaded.raw[device]
        assert np.array_equal(got.start_ns, raw.start_ns) and got.start_ns.dtype == np.int64
        assert np.array_equal(got.end_ns, raw.end_ns)
        assert np.array_equal(got.warmup_start_ns, raw.warmup_start_ns)
        mine = sorted(got.series, key=lambda s: s.name)  # channels come back by name, not in saved order
        theirs = sorted(raw.series, key=lambda s: s.name)
        assert [(s.name, s.kind, s.role, s.sensor) for s in mine] == [
            (s.name, s.kind, s.role, s.sensor) for s in theirs
        ]
        for a, b in zip(mine, theirs, strict=True):
            assert np.array_equal(a.t_ns, b.t_ns) and np.array_equal(a.value, b.value)
        assert [p.name for p in got.phases] == [p.name for p in raw.phases]


def test_runs_are_listed_newest_first_with_their_counts(target: str) -> None:
    store = open_store(target)
    store.save_run(_run("20260301-000000-000001", "2026-03-01T00:00:00+00:00"))
    store.save_run(_run("20260302-000000-000002", "2026-03-02T00:00:00+00:00", n_devices=3))

    rows = store.runs()
    assert [r.run_id for r in rows] == ["20260302-000000-000002", "20260301-000000-000001"]
    assert (rows[0].n_devices, rows[0].n_ok) == (3, 3)
    assert store.runs(limit=1)[0].run_id == store.last_run_id() == "20260302-000000-000002"
    assert set(store.documents([r.run_id for r in rows] + ["missing"])) == {r.run_id for r in rows}


def test_saving_a_run_again_replaces_its_arrays_and_clears_its_pending_jobs(target: str) -> None:
    store = open_store(target)
    store.add_pending(_job("20260301-000000-000001", "dev01-raspberry"))
    store.save_run(_run("20260301-000000-000001", "2026-03-01T00:00:00+00:00", n_devices=2))
    store.save_run(_run("20260301-000000-000001", "2026-03-01T00:00:00+00:00", n_devices=1))

    loaded = store.load_run("20260301-000000-000001")
    assert set(loaded.raw) == {"dev00-jetson"}
    assert store.runs()[0].n_devices == 1
    assert store.pending() == []


def test_history_of_models_is_oldest_first_without_excluded_runs(target: str) -> None:
    store = open_store(target)
    for day, sha in ((3, "aa"), (1, "aa"), (2, "bb"), (4, "cc")):
        store.save_run(_run(f"2026030{day}-000000-00000{day}", f"2026-03-0{day}T00:00:00+00:00", sha=sha * 32))

    docs = store.documents_for_models(["aa" * 32, "bb" * 32], exclude_run_ids=("20260302-000000-000002",))
    assert [d["run_id"] for d in docs] == ["20260301-000000-000001", "20260303-000000-000003"]
    between = store.documents_between("2026-03-02", "2026-03-04")
    assert [d["run_id"] for d in between] == ["20260303-000000-000003", "20260302-000000-000002"]


def test_prefixes_resolve_to_one_run_or_say_why_not(target: str) -> None:
    store = open_store(target)
    store.save_run(_run("20260301-000000-aaaaaa", "2026-03-01T00:00:00+00:00"))
    store.save_run(_run("20260301-000000-aabbbb", "2026-03-01T00:00:01+00:00"))
    store.add_pending(_job("20260309-000000-cccccc", "dev00"))  # a run known only by its pending jobs

    assert store.resolve_run_id("20260301-000000-aab") == "20260301-000000-aabbbb"
    assert store.resolve_run_id("20260309") == "20260309-000000-cccccc"
    with pytest.raises(StoreError, match="ambiguous prefix"):
        store.resolve_run_id("20260301-000000-aa")
    with pytest.raises(StoreError, match="see `host runs ls`"):
        store.load_run("1999")


def test_deleting_a_run_removes_document_arrays_and_pending_jobs(target: str) -> None:
    store = open_store(target)
    store.save_run(_run("20260301-000000-000001", "2026-03-01T00:00:00+00:00"))
    store.add_pending(_job("20260301-000000-000001", "late-device"))

    assert store.delete_run("20260301-000000") == ("20260301-000000-000001", 1)
    assert store.runs() == [] and store.pending() == []
    with pytest.raises(StoreError):
        store.load_run("20260301-000000-000001")


def test_pending_jobs_are_recorded_replaced_and_listed_by_prefix(target: str) -> None:
    store = open_store(target)
    store.add_pending(_job("20260301-000000-000001", "a"))
    store.add_pending(_job("20260301-000000-000001", "b"))
    store.add_pending(_job("20260302-000000-000002", "a"))
    replaced = _job("20260301-000000-000001", "a")
    replaced.address = "10.0.0.9:50051"
    store.add_pending(replaced)

    jobs = store.pending("20260301")
    assert [(j.device, j.address) for j in jobs] == [("a", "10.0.0.9:50051"), ("b", "127.0.0.1:50051")]
    assert jobs[0].settings == {"runs": 5} and jobs[0].request["artifact"]["sha256"] == "cd" * 32
    assert len(store.pending()) == 3


def test_two_fetchers_never_claim_the_same_job(target: str) -> None:
    seed = open_store(target)
    for i in range(40):
        seed.add_pending(_job(f"20260301-000000-{i:06d}", "dev"))
    stores = [open_store(target) for _ in range(4)]
    claimed: dict[str, list[str]] = {}
    barrier = threading.Barrier(len(stores))

    def fetcher(name: str, store: Store) -> None:
        barrier.wait()
        claimed[name] = [j.run_id for j in store.claim_pending(None, name)]

    threads = [threading.Thread(target=fetcher, args=(f"host-{i}", s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    every = [run_id for ids in claimed.values() for run_id in ids]
    assert sorted(every) == sorted(j.run_id for j in seed.pending())  # each job claimed exactly once
    assert seed.claim_pending(None, "late-host") == []  # all held
    seed.release_claims("host-0")
    assert sorted(j.run_id for j in seed.claim_pending(None, "late-host")) == sorted(claimed["host-0"])


def test_a_claim_whose_lease_ran_out_can_be_taken_over(target: str) -> None:
    store = open_store(target)
    store.add_pending(_job("20260301-000000-000001", "dev"))
    assert len(store.claim_pending(None, "died", lease_s=0)) == 1  # its lease has already run out

    assert [j.device for j in open_store(target).claim_pending("20260301", "next")] == ["dev"]
    assert open_store(target).claim_pending(None, "third") == []
    store.add_pending(_job("20260301-000000-000001", "dev"))  # recorded again: unclaimed
    assert len(store.claim_pending(None, "third")) == 1


def test_many_writers_at_once_store_every_run_complete(target: str) -> None:
    runs = [_run(f"20260301-000000-{i:06d}", f"2026-03-01T00:00:{i:02d}+00:00", seed=i) for i in range(12)]
    errors: list[BaseException] = []

    def writer(run: RunData) -> None:
        try:
            store = open_store(target)  # its own connection, as another host has
            store.save_run(run)
            store.close()
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(run,)) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    store = open_store(target)
    assert len(store.runs(limit=100)) == 12
    for run in runs:
        loaded = store.load_run(run.run_id)
        assert loaded.document["run_id"] == run.run_id
        for device, raw in run.raw.items():
            assert np.array_equal(loaded.raw[device].end_ns, raw.end_ns)  # no arrays of another run


def test_hosts_opening_a_new_store_at_once_migrate_it_once(target: str) -> None:
    code = "import sys; from host.store.open import open_store; print(open_store(sys.argv[1]).schema_version())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]

    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {str(SCHEMA_VERSION)}
    store = open_store(target)
    assert store._query("SELECT COUNT(*) FROM schema_version") == [(1,)]


#: Run in a fresh interpreter: forked openers wait on one barrier, so they really do open each new store together.
_OPEN_TOGETHER = """
import multiprocessing, sys
from host.store.sqlite import Store

def open_together(path, barrier, errors):
    barrier.wait()
    try:
        Store(path).close()
    except Exception as err:
        errors.put(str(err))

ctx = multiprocessing.get_context("fork")
errors = ctx.Queue()
for round_ in range(int(sys.argv[2])):
    barrier = ctx.Barrier(8)
    path = f"{sys.argv[1]}/{round_}.sqlite"
    procs = [ctx.Process(target=open_together, args=(path, barrier, errors)) for _ in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
while not errors.empty():
    print(errors.get())
"""


def test_hosts_opening_a_new_sqlite_store_at_the_same_instant_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL needs it to itself; two openers that both hold a read lock got "database is
    # locked" at once, with no busy wait (seen in CI as a failed `host profile`). 20 rounds of 8 hit it reliably.
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN_TOGETHER, str(tmp_path), "20"], capture_output=True, text=True, timeout=120
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert len(list(tmp_path.glob("*.sqlite"))) == 20
    for path in tmp_path.glob("*.sqlite"):
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_store_from_before_versioning_is_migrated_and_keeps_its_jobs(target: str) -> None:
    old_tables = (
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, model_path TEXT NOT NULL,"
        " model_sha256 TEXT NOT NULL, n_devices INTEGER NOT NULL, n_ok INTEGER NOT NULL, document TEXT NOT NULL)",
        "CREATE TABLE pending_jobs (run_id TEXT NOT NULL, device TEXT NOT NULL, address TEXT NOT NULL,"
        " job_id TEXT NOT NULL, request TEXT NOT NULL, PRIMARY KEY (run_id, device))",
        "INSERT INTO pending_jobs VALUES ('20250101-000000-000001', 'dev', 'h:1', 'j', '{}')",
    )
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            for sql in old_tables:
                conn.execute(sql)
    else:
        with sqlite3.connect(target) as conn:
            for sql in old_tables:
                conn.execute(sql)

    store = open_store(target)
    assert store.schema_version() == SCHEMA_VERSION
    assert [(j.run_id, j.settings) for j in store.pending()] == [("20250101-000000-000001", {})]
    store.save_run(_run("20260301-000000-000001", "2026-03-01T00:00:00+00:00"))  # the arrays table was created
    assert open_store(target).load_run("20260301-000000-000001").raw


def test_edgeprof_db_and_the_config_file_choose_the_backend(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEPROF_DB", target)
    from_env = open_store()
    monkeypatch.delenv("EDGEPROF_DB")
    config = tmp_path / "config.toml"
    config.write_text(f"db = {json.dumps(target)}\n")
    monkeypatch.setenv("EDGEPROF_CONFIG", str(config))
    from_file = open_store()

    expected = "PgStore" if target.startswith("postgresql://") else "Store"
    assert type(from_env).__name__ == type(from_file).__name__ == expected
    from_env.save_run(_run("20260301-000000-000001", "2026-03-01T00:00:00+00:00"))
    assert from_file.last_run_id() == "20260301-000000-000001"


def test_an_unreachable_postgresql_server_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError) as err:
        open_store("postgresql://ci:secret@127.0.0.1:1/edgeprof")
    assert "cannot open the run store postgresql://ci:***@127.0.0.1:1/edgeprof" in str(err.value)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_fetching_jobs_another_fetcher_holds_says_so(target: str) -> None:
    from host.fleet.client import Credentials
    from host.run.fetch import fetch_runs

    store = open_store(target)
    store.add_pending(_job("20260301-000000-000001", "dev"))
    open_store(target).claim_pending(None, "other-host")

    with pytest.raises(StoreError, match="being collected by another `host runs fetch`"):
        fetch_runs(store, "20260301", lambda _job: Credentials())
    assert fetch_runs(store, None, lambda _job: Credentials()) == []  # --all: nothing of its own to collect
