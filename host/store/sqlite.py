"""The host's run store: result documents, every raw sample, and jobs still to collect.

`open_store()` (host/store/open.py) opens what `EDGEPROF_DB` (else the config file's `db`) names: a SQLite
file by default (this module), or a team's PostgreSQL server for a `postgresql://…` URL (host.store.postgres,
psycopg imported only then). Both run the same SQL and the same numbered migrations (host.store.schema).
Raw arrays are stored as little-endian int64/float64 blobs: one row per channel, not per sample, so
10 devices × 100k samples store and load in milliseconds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from host.store.result_schema import SchemaError, parse_document
from host.store.rundata import DeviceRaw, PhaseSpan, RunData, Series
from host.store.schema import MIGRATIONS, VERSION_TABLE, AddColumn
from host.store.url_redact import looks_like_url, redact

#: Names of the latency "channels" in the arrays table (a = start_ns, b = end_ns).
LATENCY_MEASURE = "latency:measure"
LATENCY_WARMUP = "latency:warmup"

#: How long a statement waits for another host's write lock on the SQLite file before it fails.
SQLITE_BUSY_TIMEOUT_S = 30.0

#: How long a fetcher's claim on a pending job holds when it never releases it (a host killed mid-fetch).
CLAIM_LEASE_S = 600.0

_RUN_COLUMNS = "run_id, created_at, model_path, model_sha256, n_devices, n_ok"
_PENDING_COLUMNS = "run_id, device, address, job_id, request, settings"


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def _configured_db() -> str | None:
    """The config file's `db` (a path or a postgresql:// URL), or None."""
    from host.fleet.config import ConfigError, load_config  # the config module pulls in the gRPC client

    try:
        value = load_config().raw.get("db")
    except ConfigError as err:
        raise StoreError(str(err)) from err
    if value is not None and not isinstance(value, str):
        raise StoreError("the config file's `db` must be a string: a SQLite path or a postgresql:// URL")
    return value or None


def store_target(target: Path | str | None = None) -> Path | str:
    """What a store opens: a SQLite path, or a postgresql:// URL. Flag > EDGEPROF_DB > config `db` > default."""
    if target is None:
        target = os.environ.get("EDGEPROF_DB") or _configured_db()
    if target is None:
        return default_db_path()
    if is_postgres_url(target):
        return str(target)
    if isinstance(target, str) and looks_like_url(target):  # never a SQLite file named after a URL, password and all
        raise StoreError(
            f"the run store '{redact(target)}' is neither a SQLite file path nor a postgresql:// URL"
            " (EDGEPROF_DB, the config file's `db`)"
        )
    return Path(target).expanduser()


def default_db_path() -> Path:
    """The embedded default: a SQLite file in the user's data directory (EDGEPROF_DB when it is a path)."""
    env = os.environ.get("EDGEPROF_DB")
    if env and not is_postgres_url(env):
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "edgeprof" / "runs.sqlite"


@dataclass
class RunRow:
    run_id: str
    created_at: str
    model_path: str
    model_sha256: str
    n_devices: int
    n_ok: int


@dataclass
class PendingJob:
    run_id: str
    device: str
    address: str
    job_id: str
    request: dict[str, Any]
    #: The run's settings as its document records them, so that a run rebuilt by `host runs fetch` has them.
    settings: dict[str, Any] = field(default_factory=dict)


class StoreError(Exception):
    pass


def _is_busy(err: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the file for now."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(err) or "busy" in str(err)


def _blob(values: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


class Store:
    """The run store's interface and its SQLite backend; host/store/postgres.py's PgStore runs the same SQL.

    Open one with `open_store()` (host/store/open.py), which picks the backend for the target.
    """

    #: The column types that differ between backends, as host.store.schema spells them.
    _TYPES = {"blob": "BLOB", "int64": "INTEGER"}
    #: Appended to the claim's SELECT: PostgreSQL locks the rows it claims and skips those another fetcher holds.
    _CLAIM_LOCK = ""

    path: Path | str

    def __init__(self, target: Path | str | None = None) -> None:
        self._lock = threading.RLock()  # one connection, shared by a fleet's threads: one statement or tx at a time
        #: Runs whose stored document does not follow the result schema (host/store/result_schema.py), by run id:
        #: the one-line reason. Readers skip them and say so; `host runs rm` removes them.
        self.malformed: dict[str, str] = {}
        self._checked: dict[str, int] = {}  # run id -> hash of the document text last found well-formed
        self._open(store_target(target))
        try:
            self._migrate()
        except Exception:
            self.close()
            raise

    # -- the backend: SQLite here, overridden by host.store.postgres --------------------------------------------------

    def _open(self, target: Path | str) -> None:
        self.path = Path(target)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=SQLITE_BUSY_TIMEOUT_S
            )
            self._use_wal()
            # In WAL mode NORMAL still survives a killed host (what pending jobs are for); only a power cut can
            # lose the newest commits. FULL paid an fsync per pending job, serialised across a fleet's threads.
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot open the run store {self.path}: {err}") from err

    def _use_wal(self) -> None:
        """Switch the file to WAL once; WAL persists, so later opens only read the mode.

        The switch needs the file to itself, and SQLite answers "database is locked" at once, without its busy
        timeout, when two hosts open a new store together (both hold a read lock and each waits on the other).
        So the switch is retried until the same timeout a busy statement gets.
        """
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        pause_s = 0.005
        while True:
            try:
                mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as err:
                if not _is_busy(err) or time.monotonic() + pause_s > deadline:
                    raise
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.2)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._db.executemany(sql, rows)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction; IMMEDIATE takes the file's write lock first, so a read-then-write is atomic."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _lock_schema(self) -> None:
        """Inside _tx: hold off other hosts migrating the same store (SQLite's write lock already does)."""

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._query(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- schema --------------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Apply the migrations this store has not seen, once, even with several hosts opening it at once."""
        with self._tx():
            self._lock_schema()
            self._run(VERSION_TABLE)
            row = self._query("SELECT MAX(version) FROM schema_version")
            version = row[0][0] or 0
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    self._apply(statement)
                self._run("DELETE FROM schema_version")
                self._run("INSERT INTO schema_version (version) VALUES (?)", (number,))

    def _apply(self, statement: str | AddColumn) -> None:
        if isinstance(statement, AddColumn):
            if statement.column in self._columns(statement.table):
                return
            self._run(
                f"ALTER TABLE {statement.table} ADD COLUMN {statement.column} {self._typed(statement.definition)}"
            )
        else:
            self._run(self._typed(statement))

    def _typed(self, sql: str) -> str:
        for name, sql_type in self._TYPES.items():
            sql = sql.replace("{" + name + "}", sql_type)
        return sql

    def schema_version(self) -> int:
        return int(self._query("SELECT MAX(version) FROM schema_version")[0][0])

    # -- runs ----------------------------------------------------------------------------------------------------

    def save_run(self, run: RunData) -> None:
        doc = run.document
        devices = doc.get("devices", [])
        rows: list[tuple[Any, ...]] = []
        for device, raw in run.raw.items():
            channels = [
                (LATENCY_MEASURE, "latency_ns", "", "", raw.start_ns, raw.end_ns),
                (LATENCY_WARMUP, "latency_ns", "", "", raw.warmup_start_ns, raw.warmup_end_ns),
            ] + [(s.name, s.kind, s.role, s.sensor, s.t_ns, s.value) for s in raw.series]
            rows += [
                (
                    run.run_id,
                    device,
                    name,
                    kind,
                    role,
                    sensor,
                    _blob(a, "<i8"),
                    _blob(b, "<i8" if kind == "latency_ns" else "<f8"),
                )
                for name, kind, role, sensor, a, b in channels
            ]
        with self._tx():
            self._run("DELETE FROM arrays WHERE run_id = ?", (run.run_id,))
            self._run(
                f"INSERT INTO runs ({_RUN_COLUMNS}, document) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET created_at = excluded.created_at,"
                " model_path = excluded.model_path, model_sha256 = excluded.model_sha256,"
                " n_devices = excluded.n_devices, n_ok = excluded.n_ok, document = excluded.document",
                (
                    run.run_id,
                    doc["created_at"],
                    doc["model"]["path"],
                    doc["model"]["sha256"],
                    len(devices),
                    sum(1 for d in devices if d.get("status") == "ok"),
                    json.dumps(doc),
                ),
            )
            if rows:
                self._run_many(
                    "INSERT INTO arrays (run_id, device, name, kind, role, sensor, a, b)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            self._run("DELETE FROM pending_jobs WHERE run_id = ?", (run.run_id,))

    def load_run(self, run_id: str) -> RunData:
        with self._lock:  # the document and its arrays from one moment, not across another thread's save
            rows = self._query("SELECT run_id, document FROM runs WHERE run_id = ?", (run_id,))
            if not rows:
                matches = self._query("SELECT run_id, document FROM runs WHERE run_id LIKE ?", (run_id + "%",))
                if len(matches) != 1:
                    hint = "ambiguous prefix" if matches else "see `host runs ls`"
                    raise StoreError(f"no run '{run_id}' in {self.path} ({hint})")
                rows = matches
            run_id, text = rows[0]
            arrays = self._query(
                "SELECT device, name, kind, role, sensor, a, b FROM arrays WHERE run_id = ?", (run_id,)
            )
        document = self._document(run_id, text)
        if document is None:
            raise StoreError(
                f"run {run_id} in {self.path} is malformed ({self.malformed[run_id]}): remove it with"
                f" `host runs rm {run_id}`"
            )
        raw: dict[str, DeviceRaw] = {}
        for entry in document.get("devices", []):
            raw[entry["device"]] = DeviceRaw(
                device=entry["device"],
                phases=[
                    PhaseSpan(p["name"], p["start_ns"], p["end_ns"], p.get("detail", ""), p.get("count", 0))
                    for p in entry.get("phases", [])
                ],
            )
        for device, name, kind, role, sensor, a, b in arrays:
            dev = raw.setdefault(device, DeviceRaw(device=device))
            first = np.frombuffer(a, dtype="<i8").astype(np.int64)
            if name == LATENCY_MEASURE:
                dev.start_ns, dev.end_ns = first, np.frombuffer(b, dtype="<i8").astype(np.int64)
            elif name == LATENCY_WARMUP:
                dev.warmup_start_ns, dev.warmup_end_ns = first, np.frombuffer(b, dtype="<i8").astype(np.int64)
            else:
                dev.series.append(
                    Series(name, kind, role, sensor, first, np.frombuffer(b, dtype="<f8").astype(np.float64))
                )
        return RunData(document=document, raw=raw)

    def runs(self, limit: int = 50) -> list[RunRow]:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC, run_id DESC LIMIT ?", (limit,))
        return [RunRow(*r) for r in rows]

    def documents(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The result documents of these runs, by run id (runs not stored are left out)."""
        if not run_ids:
            return {}
        marks = ", ".join("?" * len(run_ids))
        rows = self._query(f"SELECT run_id, document FROM runs WHERE run_id IN ({marks})", tuple(run_ids))
        return {run_id: doc for run_id, text in rows if (doc := self._document(run_id, text)) is not None}

    def _document(self, run_id: str, text: str) -> dict[str, Any] | None:
        """The stored document when it follows the result schema; None (and a line in `malformed`) otherwise."""
        key = hash(text)
        if self._checked.get(run_id) == key:  # checked once per text: the trend pages read thousands
            return dict(json.loads(text))
        try:
            document = parse_document(text)
        except SchemaError as err:
            self.malformed[run_id] = str(err)
            return None
        self._checked[run_id] = key
        self.malformed.pop(run_id, None)
        return document

    def resolve_run_id(self, run_id: str) -> str:
        """The one run ``run_id`` names (a unique prefix is enough), stored or only pending; StoreError otherwise."""
        prefix = run_id + "%"
        matches = [
            r[0]
            for r in self._query(
                "SELECT run_id FROM runs WHERE run_id LIKE ? UNION SELECT run_id FROM pending_jobs WHERE run_id LIKE ?",
                (prefix, prefix),
            )
        ]
        if run_id in matches:
            return run_id
        if len(matches) != 1:
            hint = "ambiguous prefix" if matches else "see `host runs ls`"
            raise StoreError(f"no run '{run_id}' in {self.path} ({hint})")
        return matches[0]

    def delete_run(self, run_id: str) -> tuple[str, int]:
        """Remove a run (prefix allowed): its document, raw samples and pending jobs. Returns (run id, pending)."""
        run_id = self.resolve_run_id(run_id)
        with self._tx():
            pending = self._run("DELETE FROM pending_jobs WHERE run_id = ?", (run_id,))
            self._run("DELETE FROM arrays WHERE run_id = ?", (run_id,))
            self._run("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return run_id, pending

    def documents_for_models(self, sha256s: list[str], exclude_run_ids: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Result documents of every stored run of these models, oldest first (the history `host compare` reads)."""
        if not sha256s:
            return []
        marks = ", ".join("?" * len(sha256s))
        rows = self._query(
            f"SELECT run_id, document FROM runs WHERE model_sha256 IN ({marks}) ORDER BY created_at, run_id",
            tuple(sha256s),
        )
        docs = (self._document(run_id, text) for run_id, text in rows if run_id not in exclude_run_ids)
        return [doc for doc in docs if doc is not None]

    def documents_between(self, since: str = "", until: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        """Result documents created in [since, until) (ISO 8601 prefixes; empty for open ends), newest first."""
        query = "SELECT run_id, document FROM runs WHERE created_at >= ?"
        args: tuple[Any, ...] = (since,)
        if until:
            query += " AND created_at < ?"
            args += (until,)
        rows = self._query(query + " ORDER BY created_at DESC, run_id DESC LIMIT ?", (*args, limit))
        docs = (self._document(run_id, text) for run_id, text in rows)
        return [doc for doc in docs if doc is not None]

    def last_run_id(self) -> str:
        rows = self.runs(limit=1)
        if not rows:
            raise StoreError(f"no runs stored yet in {self.path}: run `host profile MODEL` first")
        return rows[0].run_id

    # -- jobs still to collect -----------------------------------------------------------------------------------

    def add_pending(self, job: PendingJob) -> None:
        """Record (or re-record, unclaimed) a job whose samples the agent journals until a host collects them."""
        self._run(
            f"INSERT INTO pending_jobs ({_PENDING_COLUMNS}, claimed_by, claimed_until_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, '', 0)"
            " ON CONFLICT (run_id, device) DO UPDATE SET address = excluded.address, job_id = excluded.job_id,"
            " request = excluded.request, settings = excluded.settings, claimed_by = '', claimed_until_ms = 0",
            (job.run_id, job.device, job.address, job.job_id, json.dumps(job.request), json.dumps(job.settings)),
        )

    def pending(self, run_id: str | None = None) -> list[PendingJob]:
        """Every job still to collect (of the runs whose id starts with `run_id`), claimed or not."""
        query = f"SELECT {_PENDING_COLUMNS} FROM pending_jobs"
        args: tuple[str, ...] = ()
        if run_id:
            query += " WHERE run_id LIKE ?"
            args = (run_id + "%",)
        return [_pending_job(r) for r in self._query(query + " ORDER BY run_id, device", args)]

    def claim_pending(self, run_id: str | None, claimant: str, lease_s: float = CLAIM_LEASE_S) -> list[PendingJob]:
        """Claim the jobs no other fetcher holds (of runs starting with `run_id`, or all) for `lease_s` seconds.

        A claim ends when the run is saved (its pending rows go), when a job is recorded again (add_pending), by
        release_claims, or when its lease runs out (a fetcher that died). Two fetchers never get the same job.
        """
        now_ms = int(time.time() * 1000)
        query = f"SELECT {_PENDING_COLUMNS} FROM pending_jobs WHERE (claimed_until_ms <= ? OR claimed_by = ?)"
        args: tuple[Any, ...] = (now_ms, claimant)
        if run_id:
            query += " AND run_id LIKE ?"
            args += (run_id + "%",)
        with self._tx():
            rows = self._query(query + " ORDER BY run_id, device" + self._CLAIM_LOCK, args)
            for row in rows:
                self._run(
                    "UPDATE pending_jobs SET claimed_by = ?, claimed_until_ms = ? WHERE run_id = ? AND device = ?",
                    (claimant, now_ms + int(lease_s * 1000), row[0], row[1]),
                )
        return [_pending_job(r) for r in rows]

    def release_claims(self, claimant: str) -> None:
        """Give back every job `claimant` still holds (what it could not collect), for the next fetcher."""
        self._run("UPDATE pending_jobs SET claimed_by = '', claimed_until_ms = 0 WHERE claimed_by = ?", (claimant,))


def _pending_job(row: tuple[Any, ...]) -> PendingJob:
    return PendingJob(row[0], row[1], row[2], row[3], json.loads(row[4]), json.loads(row[5]))
