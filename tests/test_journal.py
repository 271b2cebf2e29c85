"""The agent's journal on a real SQLite file: sequence numbers, re-attaching, acknowledgement, pruning.

What a host relies on: batches numbered 1, 2, 3… with no gap, a re-attach that resumes after the last
acknowledged batch (and is refused below it), a stream that ends when the job ends, and a journal that
forgets what was acknowledged or is old. Threads stand in for the agent's writer and a host's stream.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.storage.journal import MAX_SEQ, JobAbandoned, Journal, JournalWriteError, UnknownJob

HANG_GUARD_S = 60  # only turns a hang into a failure; every wait below ends on an event


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal" / "journal.sqlite")
    yield j
    j.close()


def _append(journal: Journal, job_id: str, count: int) -> list[int]:
    return [journal.append(job_id, lambda seq: f"batch {seq}".encode()) for _ in range(count)]


def test_batches_are_numbered_from_one_without_gaps_and_read_back_in_order(journal: Journal) -> None:
    journal.create_job("j1", "a" * 64, owner="host-key")
    journal.create_job("j2", "b" * 64)

    assert _append(journal, "j1", 3) == [1, 2, 3]
    assert _append(journal, "j2", 1) == [1]  # each job has its own numbers

    assert journal.read("j1", 0) == [(1, b"batch 1"), (2, b"batch 2"), (3, b"batch 3")]
    assert journal.read("j1", 1, limit=1) == [(2, b"batch 2")]
    row = journal.job("j1")
    assert (row.state, row.model_sha256, row.owner) == ("queued", "a" * 64, "host-key")
    assert (row.last_seq, row.acked_seq) == (3, 0)
    assert row.finished is None
    assert journal.job("j2").owner is None
    assert journal.exists("j1") and not journal.exists("nope")


def test_unknown_jobs_are_refused_by_name(journal: Journal) -> None:
    for call in (
        lambda: journal.append("nope", lambda seq: b""),
        lambda: journal.job("nope"),
        lambda: journal.acknowledge("nope", 1),
    ):
        with pytest.raises(UnknownJob, match="nope"):
            call()


def test_tail_resumes_after_the_given_sequence_and_ends_with_the_job(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    _append(journal, "j", 4)
    journal.set_state("j", "ok")

    assert [seq for seq, _ in journal.tail("j", 2, stopped=lambda: False)] == [3, 4]
    assert [seq for seq, _ in journal.tail("j", 0, stopped=lambda: False)] == [1, 2, 3, 4]
    assert list(journal.tail("j", 4, stopped=lambda: False)) == []


def test_a_waiting_tail_wakes_for_each_new_batch_and_for_the_end(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    journal.set_state("j", "running")
    got: list[int] = []
    first = threading.Event()

    def host() -> None:
        # A poll period far beyond the hang guard: only the journal's notification can wake it in time.
        for seq, _payload in journal.tail("j", 0, stopped=lambda: False, poll_s=3600):
            got.append(seq)
            first.set()

    reader = threading.Thread(target=host, daemon=True)
    reader.start()
    _append(journal, "j", 1)
    assert first.wait(HANG_GUARD_S)
    _append(journal, "j", 2)
    journal.set_state("j", "error")
    reader.join(HANG_GUARD_S)

    assert not reader.is_alive(), "the stream did not end when the job ended"
    assert got == [1, 2, 3]


def test_attaching_below_the_acknowledged_batch_is_refused_and_at_it_resumes(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    _append(journal, "j", 5)
    journal.set_state("j", "ok")
    assert journal.acknowledge("j", 3) == 3

    with pytest.raises(ValueError, match="batches up to 3 of job j were acknowledged and pruned; attach after 3"):
        next(journal.tail("j", 2, stopped=lambda: False))
    assert [seq for seq, _ in journal.tail("j", 3, stopped=lambda: False)] == [4, 5]


def test_attaching_beyond_any_sequence_number_is_a_clear_error(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    _append(journal, "j", 2)

    with pytest.raises(ValueError, match=f"after_seq {MAX_SEQ + 1} is beyond any batch of job j \\(last is 2\\)"):
        next(journal.tail("j", MAX_SEQ + 1, stopped=lambda: False))
    journal.set_state("j", "ok")
    assert list(journal.tail("j", MAX_SEQ, stopped=lambda: False)) == []


def test_an_abandoned_job_ends_its_stream_with_the_reason_until_its_end_is_written(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    journal.set_state("j", "running")
    _append(journal, "j", 1)
    journal.abandon("j", "cannot write the agent's journal: database or disk is full")

    stream = journal.tail("j", 0, stopped=lambda: False, poll_s=3600)
    assert next(stream)[0] == 1  # what was written is still sent
    with pytest.raises(JobAbandoned, match="database or disk is full"):
        next(stream)

    journal.set_state("j", "error")  # the end got written after all: a normal end again
    assert [seq for seq, _ in journal.tail("j", 0, stopped=lambda: False)] == [1]


def test_tail_stops_when_its_caller_says_so(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    journal.set_state("j", "running")
    _append(journal, "j", 2)
    calls = iter([False, True])

    assert [seq for seq, _ in journal.tail("j", 0, stopped=lambda: next(calls))] == [1, 2]


def test_acknowledging_prunes_batches_up_to_it_and_never_beyond_the_last(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    _append(journal, "j", 4)

    assert journal.acknowledge("j", 2) == 2
    assert [seq for seq, _ in journal.read("j", 0)] == [3, 4]
    assert journal.acknowledge("j", 2) == 0  # again: nothing left to prune
    assert journal.acknowledge("j", 1) == 0  # below: no step back
    assert journal.job("j").acked_seq == 2
    assert journal.acknowledge("j", 99) == 2  # beyond the last batch: up to the last one only
    assert journal.job("j").acked_seq == 4 and journal.read("j", 0) == []
    assert journal.append("j", lambda seq: b"x") == 5


def test_job_listing_leaves_out_ended_and_fully_acknowledged_jobs_unless_asked(journal: Journal) -> None:
    for job_id in ("done-acked", "done-unacked", "running", "queued-empty"):
        journal.create_job(job_id, "a" * 64)
    for job_id in ("done-acked", "done-unacked", "running"):
        _append(journal, job_id, 2)
    journal.set_state("done-acked", "ok")
    journal.set_state("done-unacked", "cancelled")
    journal.set_state("running", "running")
    journal.acknowledge("done-acked", 2)
    journal.acknowledge("running", 2)

    assert [r.job_id for r in journal.jobs()] == ["done-unacked", "running", "queued-empty"]
    assert [r.job_id for r in journal.jobs(include_acknowledged=True)] == [
        "done-acked",
        "done-unacked",
        "running",
        "queued-empty",
    ]
    assert journal.unfinished() == ["running", "queued-empty"]


def test_ending_a_job_stamps_when_and_a_non_terminal_state_does_not(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    journal.set_state("j", "running")
    assert journal.job("j").finished is None
    journal.set_state("j", "cancelled")
    row = journal.job("j")
    assert row.state == "cancelled" and row.finished is not None and row.finished >= row.created


def test_pruning_by_age_forgets_ended_jobs_and_their_batches_but_never_unfinished_ones(
    journal: Journal, tmp_path: Path
) -> None:
    for job_id in ("old", "recent", "still-running"):
        journal.create_job(job_id, "a" * 64)
        _append(journal, job_id, 2)
    journal.set_state("old", "ok")
    journal.set_state("recent", "error")
    journal.set_state("still-running", "running")
    with sqlite3.connect(tmp_path / "journal" / "journal.sqlite") as db:  # ended 8 days ago
        db.execute("UPDATE jobs SET finished = finished - 8 * 86400 WHERE job_id = 'old'")

    assert journal.prune() == 1  # the default age is a week
    assert not journal.exists("old") and journal.read("old", 0) == []
    assert journal.exists("recent") and journal.exists("still-running")
    assert journal.prune(max_age_s=3600) == 0
    assert journal.prune(max_age_s=-1) == 1  # everything that ended, however recently
    assert [r.job_id for r in journal.jobs(include_acknowledged=True)] == ["still-running"]
    assert len(journal.read("still-running", 0)) == 2


def test_a_full_disk_refuses_the_whole_batch_and_the_next_one_gets_the_same_number(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    _append(journal, "j", 1)
    with journal._lock:  # the journal's own connection: the limit is per connection
        pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
        journal._db.execute(f"PRAGMA max_page_count = {pages}")

    with pytest.raises(JournalWriteError, match="cannot write the agent's journal: database or disk is full"):
        journal.append("j", lambda seq: b"\0" * 1_000_000)
    assert journal.write_failures == 1
    assert journal.job("j").last_seq == 1

    with journal._lock:
        journal._db.execute("PRAGMA max_page_count = 1073741823")
    assert journal.append("j", lambda seq: f"batch {seq}".encode()) == 2  # the open transaction was rolled back
    assert journal.read("j", 1) == [(2, b"batch 2")]


def test_a_journal_from_before_job_owners_gets_the_column_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL, model_sha256 TEXT NOT NULL,"
            " created REAL NOT NULL, finished REAL, last_seq INTEGER NOT NULL DEFAULT 0,"
            " acked_seq INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute("INSERT INTO jobs (job_id, state, model_sha256, created) VALUES ('old', 'ok', 'c', 1.0)")

    journal = Journal(path)
    try:
        assert journal.job("old").owner is None
        journal.create_job("new", "d" * 64, owner="someone")
        assert journal.job("new").owner == "someone"
    finally:
        journal.close()


def test_a_failed_write_is_rolled_back_so_the_next_write_works(journal: Journal, tmp_path: Path) -> None:
    journal.create_job("j", "a" * 64)
    _append(journal, "j", 1)
    with sqlite3.connect(tmp_path / "journal" / "journal.sqlite") as db:  # a stray row where batch 2 goes
        db.execute("INSERT INTO batches (job_id, seq, payload) VALUES ('j', 2, x'00')")

    for _ in range(2):
        with pytest.raises(JournalWriteError, match="cannot write the agent's journal: UNIQUE constraint failed"):
            journal.append("j", lambda seq: b"batch")
    journal.set_state("j", "ok")  # a transaction left open would refuse this BEGIN

    assert journal.write_failures == 2
    assert journal.job("j").state == "ok" and journal.job("j").last_seq == 1


def test_a_journal_in_a_new_nested_directory_is_created(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "a" / "b" / "journal.sqlite")
    try:
        journal.create_job("j", "a" * 64)
        assert journal.exists("j")
    finally:
        journal.close()


def test_a_job_running_again_after_an_abandoned_end_streams_normally(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    journal.abandon("j", "disk full")
    journal.set_state("j", "running")  # its state got written after all: no longer abandoned
    calls = iter([False, True])

    assert list(journal.tail("j", 0, stopped=lambda: next(calls), poll_s=0.01)) == []


def test_a_waiting_tail_notices_its_stop_within_the_poll_period_without_any_write(journal: Journal) -> None:
    journal.create_job("j", "a" * 64)
    journal.set_state("j", "running")
    stop = threading.Event()
    waiting = threading.Event()

    def stopped() -> bool:
        waiting.set()
        return stop.is_set()

    reader = threading.Thread(target=lambda: list(journal.tail("j", 0, stopped=stopped, poll_s=0.05)), daemon=True)
    reader.start()
    assert waiting.wait(HANG_GUARD_S)
    stop.set()  # no write, no notification: only the poll period wakes the reader
    reader.join(HANG_GUARD_S)

    assert not reader.is_alive(), "the stream never looked at its stop flag again"


class _RollbackFails:
    """The journal's SQLite connection, except that ROLLBACK itself fails (an I/O error while undoing)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)


def test_a_rollback_that_fails_too_still_reports_the_write_that_failed(journal: Journal, tmp_path: Path) -> None:
    journal.create_job("j", "a" * 64)
    with sqlite3.connect(tmp_path / "journal" / "journal.sqlite") as db:  # a stray row where batch 1 goes
        db.execute("INSERT INTO batches (job_id, seq, payload) VALUES ('j', 1, x'00')")
    real = journal._db
    journal._db = _RollbackFails(real)  # type: ignore[assignment]
    try:
        with pytest.raises(JournalWriteError, match="cannot write the agent's journal: UNIQUE constraint failed"):
            journal.append("j", lambda seq: b"batch")
    finally:
        journal._db = real
        real.execute("ROLLBACK")
    assert journal.write_failures == 1 and journal.job("j").last_seq == 0


def test_a_reader_never_sees_a_job_in_the_middle_of_an_append(journal: Journal) -> None:
    # Readers (job, read, exists) and writers (append, set_state) share one lock: while an append builds
    # its batch, a reader waits for the append to commit instead of reading the row before it.
    journal.create_job("j", "a" * 64)
    seen: list[int] = []

    def build(seq: int) -> bytes:
        reader = threading.Thread(target=lambda: seen.append(journal.job("j").last_seq))
        reader.start()
        reader.join(0.5)  # a reader that did not wait for the lock has finished by now
        threads.append(reader)
        return b"batch"

    threads: list[threading.Thread] = []
    assert journal.append("j", build) == 1
    threads[0].join(HANG_GUARD_S)
    assert seen == [1]


def test_a_batch_written_between_a_read_and_the_wait_is_still_sent(journal: Journal) -> None:
    # The writer races the reader: tail() read nothing, then a batch lands before it would wait. It must read
    # again (last_seq says there is more), not wait and not end.
    journal.create_job("j", "a" * 64)
    real_read = journal.read
    raced: list[bool] = []

    def read(job_id: str, after_seq: int, limit: int = 64) -> list[tuple[int, bytes]]:
        rows = real_read(job_id, after_seq, limit)
        if not raced:
            raced.append(True)
            _append(journal, "j", 1)  # lands after this read, before tail() looks at last_seq
            journal.set_state("j", "ok")
        return rows

    journal.read = read  # type: ignore[method-assign]
    assert list(journal.tail("j", 0, lambda: False, poll_s=HANG_GUARD_S)) == [(1, b"batch 1")]
