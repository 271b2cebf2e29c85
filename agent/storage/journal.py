"""The agent's journal: every measurement batch is written here (SQLite, WAL) before it is streamed.

A host that loses its stream re-attaches and reads from its last acknowledged sequence number; a host
that crashed collects finished jobs later. Batches are pruned once acknowledged, and by age.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

TERMINAL = ("ok", "error", "cancelled")
DEFAULT_MAX_AGE_S = 7 * 24 * 3600
#: Sequence numbers are SQLite INTEGERs (signed 64-bit); an Attach may ask for any uint64.
MAX_SEQ = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""


@dataclass
class JobRow:
    job_id: str
    state: str
    model_sha256: str
    created: float
    finished: float | None
    last_seq: int
    acked_seq: int
    #: agent/service/ownership.py's hash of who started the job; None for jobs journalled before owners existed.
    owner: str | None = None


_ROW_COLUMNS = "job_id, state, model_sha256, created, finished, last_seq, acked_seq, owner"


class UnknownJob(KeyError):
    pass


class JournalWriteError(Exception):
    """The journal could not be written (e.g. the disk is full); nothing of the failed write was kept."""


class JobAbandoned(Exception):
    """A job ended without its end being journaled (the journal could not be written): its stream cannot finish."""


class Journal:
    """Thread-safe: one connection behind a lock, and a condition that wakes stream readers."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "owner" not in columns:  # a journal from before job ownership: its jobs stay ownerless
            self._db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: Writes that failed (SQLite errors such as SQLITE_FULL): a health signal for tests and logs.
        self.write_failures = 0
        #: Jobs whose end could not be journaled, with why: their streams end with that error, not silently.
        self._abandoned: dict[str, str] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create_job(self, job_id: str, model_sha256: str, owner: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (job_id, state, model_sha256, created, owner) VALUES (?, 'queued', ?, ?, ?)",
                (job_id, model_sha256, time.time(), owner),
            )

    def exists(self, job_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is not None

    def set_state(self, job_id: str, state: str) -> None:
        with self._changed:
            finished = time.time() if state in TERMINAL else None
            self._write(
                lambda: self._db.execute(
                    "UPDATE jobs SET state = ?, finished = ? WHERE job_id = ?", (state, finished, job_id)
                )
            )
            self._abandoned.pop(job_id, None)
            self._changed.notify_all()

    def abandon(self, job_id: str, reason: str) -> None:
        """Mark a job ended although its end could not be written: readers get `reason` instead of waiting."""
        with self._changed:
            self._abandoned[job_id] = reason
            self._changed.notify_all()

    def _write(self, statements: Callable[[], object]) -> None:
        """Run write statements as one transaction; on a SQLite error roll back and raise JournalWriteError.

        Called with the lock held. Without the rollback a failed INSERT (SQLITE_FULL) can leave the
        transaction open, and every later BEGIN fails with "cannot start a transaction within a transaction".
        """
        try:
            self._db.execute("BEGIN")
            statements()
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self.write_failures += 1
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise JournalWriteError(f"cannot write the agent's journal: {err}") from err

    def append(self, job_id: str, build: Callable[[int], bytes]) -> int:
        """Give the next sequence number to `build`, store its bytes, wake readers. Returns the seq."""
        with self._changed:
            row = self._db.execute("SELECT last_seq FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(job_id)
            seq = int(row[0]) + 1
            payload = build(seq)

            def insert() -> None:
                self._db.execute("INSERT INTO batches (job_id, seq, payload) VALUES (?, ?, ?)", (job_id, seq, payload))
                self._db.execute("UPDATE jobs SET last_seq = ? WHERE job_id = ?", (seq, job_id))

            self._write(insert)  # all or nothing: a failed batch leaves last_seq where it was
            self._changed.notify_all()
            return seq

    def job(self, job_id: str) -> JobRow:
        with self._lock:
            row = self._db.execute(f"SELECT {_ROW_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(job_id)
        return JobRow(*row)

    def jobs(self, include_acknowledged: bool = False) -> list[JobRow]:
        query = f"SELECT {_ROW_COLUMNS} FROM jobs"
        if not include_acknowledged:
            query += " WHERE acked_seq < last_seq OR state NOT IN ('ok', 'error', 'cancelled')"
        with self._lock:
            return [JobRow(*r) for r in self._db.execute(query + " ORDER BY created").fetchall()]

    def read(self, job_id: str, after_seq: int, limit: int = 64) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._db.execute(
                "SELECT seq, payload FROM batches WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after_seq, limit),
            ).fetchall()

    def tail(
        self, job_id: str, after_seq: int, stopped: Callable[[], bool], poll_s: float = 0.5
    ) -> Iterator[tuple[int, bytes]]:
        """Yield batches after `after_seq` as they are written, until the job has ended and all are sent.

        Batches pruned by an acknowledgement cannot be re-read: asking for them is an error, not a gap.
        """
        row = self.job(job_id)
        if after_seq > MAX_SEQ:  # SQLite cannot even compare it: an OverflowError, not a clear answer
            raise ValueError(f"after_seq {after_seq} is beyond any batch of job {job_id} (last is {row.last_seq})")
        if after_seq < row.acked_seq:
            raise ValueError(
                f"batches up to {row.acked_seq} of job {job_id} were acknowledged and pruned;"
                f" attach after {row.acked_seq}"
            )
        seq = after_seq
        while not stopped():
            rows = self.read(job_id, seq)
            for seq_read, payload in rows:
                seq = seq_read
                yield seq_read, payload
            if rows:
                continue
            with self._changed:
                state, last_seq = self._db.execute(
                    "SELECT state, last_seq FROM jobs WHERE job_id = ?", (job_id,)
                ).fetchone()
                if last_seq > seq:
                    continue
                if state in TERMINAL:
                    return
                if job_id in self._abandoned:
                    raise JobAbandoned(self._abandoned[job_id])
                self._changed.wait(poll_s)

    def acknowledge(self, job_id: str, seq: int) -> int:
        """The host has stored batches up to `seq`: drop them. Returns how many were pruned."""
        with self._changed:
            row = self._db.execute("SELECT last_seq, acked_seq FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(job_id)
            seq = min(seq, int(row[0]))
            if seq <= int(row[1]):
                return 0
            cur = self._db.execute("DELETE FROM batches WHERE job_id = ? AND seq <= ?", (job_id, seq))
            self._db.execute("UPDATE jobs SET acked_seq = ? WHERE job_id = ?", (seq, job_id))
            return cur.rowcount

    def prune(self, max_age_s: float = DEFAULT_MAX_AGE_S) -> int:
        """Forget jobs that ended more than `max_age_s` ago, acknowledged or not."""
        cutoff = time.time() - max_age_s
        with self._lock:
            old = [
                r[0]
                for r in self._db.execute(
                    "SELECT job_id FROM jobs WHERE finished IS NOT NULL AND finished < ?", (cutoff,)
                )
            ]
            for job_id in old:
                self._db.execute("DELETE FROM batches WHERE job_id = ?", (job_id,))
                self._db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        return len(old)

    def unfinished(self) -> list[str]:
        """Jobs left queued or running, e.g. by an agent that was killed."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT job_id FROM jobs WHERE state IN ('queued', 'running')")]
