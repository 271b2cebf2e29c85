"""The host's run store (SQLite): result documents, every raw sample, and jobs still to collect.

Plain SQL only (TEXT, INTEGER, REAL, BLOB), so a shared PostgreSQL can replace the file when a lab
outgrows one machine. Raw arrays are stored as little-endian int64/float64 blobs: one row per channel,
not per sample, so 10 devices × 100k samples store and load in milliseconds.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from host.rundata import DeviceRaw, PhaseSpan, RunData, Series

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    model_path TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    n_devices INTEGER NOT NULL,
    n_ok INTEGER NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS arrays (
    run_id TEXT NOT NULL,
    device TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    sensor TEXT NOT NULL,
    a BLOB NOT NULL,
    b BLOB NOT NULL,
    PRIMARY KEY (run_id, device, name)
);
CREATE TABLE IF NOT EXISTS pending_jobs (
    run_id TEXT NOT NULL,
    device TEXT NOT NULL,
    address TEXT NOT NULL,
    job_id TEXT NOT NULL,
    request TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, device)
);
"""

#: Names of the latency "channels" in the arrays table (a = start_ns, b = end_ns).
LATENCY_MEASURE = "latency:measure"
LATENCY_WARMUP = "latency:warmup"


def default_db_path() -> Path:
    env = os.environ.get("EDGEPROF_DB")
    if env:
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


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL still survives a killed host (what pending jobs are for); only a power cut can
            # lose the newest commits. FULL paid an fsync per pending job, serialised across a fleet's threads.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot open the run store {self.path}: {err}") from err

    def _migrate(self) -> None:
        """Bring a store written by an older host up to this schema (CREATE TABLE IF NOT EXISTS adds no column)."""
        if self._has_column("pending_jobs", "settings"):
            return
        try:
            # Pending jobs recorded before the column existed fetch with empty settings, as they always did.
            self._db.execute("ALTER TABLE pending_jobs ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'")
        except sqlite3.OperationalError:
            if not self._has_column("pending_jobs", "settings"):  # not another host migrating at the same time
                raise

    def _has_column(self, table: str, column: str) -> bool:
        try:
            self._db.execute(f"SELECT {column} FROM {table} LIMIT 0")
        except sqlite3.OperationalError:
            return False
        return True

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def save_run(self, run: RunData) -> None:
        doc = run.document
        devices = doc.get("devices", [])
        with self._tx() as db:
            db.execute("DELETE FROM arrays WHERE run_id = ?", (run.run_id,))
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            for device, raw in run.raw.items():
                rows = [
                    (LATENCY_MEASURE, "latency_ns", "", "", raw.start_ns, raw.end_ns),
                    (LATENCY_WARMUP, "latency_ns", "", "", raw.warmup_start_ns, raw.warmup_end_ns),
                ] + [(s.name, s.kind, s.role, s.sensor, s.t_ns, s.value) for s in raw.series]
                db.executemany(
                    "INSERT INTO arrays VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            run.run_id,
                            device,
                            name,
                            kind,
                            role,
                            sensor,
                            np.ascontiguousarray(a, dtype="<i8").tobytes(),
                            np.ascontiguousarray(b, dtype="<i8" if kind == "latency_ns" else "<f8").tobytes(),
                        )
                        for name, kind, role, sensor, a, b in rows
                    ],
                )
            db.execute("DELETE FROM pending_jobs WHERE run_id = ?", (run.run_id,))

    def load_run(self, run_id: str) -> RunData:
        row = self._db.execute("SELECT document FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            matches = [r[0] for r in self._db.execute("SELECT run_id FROM runs WHERE run_id LIKE ?", (run_id + "%",))]
            if len(matches) != 1:
                hint = "ambiguous prefix" if matches else "see `host runs ls`"
                raise StoreError(f"no run '{run_id}' in {self.path} ({hint})")
            run_id = matches[0]
            row = self._db.execute("SELECT document FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        document = json.loads(row[0])
        raw: dict[str, DeviceRaw] = {}
        for entry in document.get("devices", []):
            raw[entry["device"]] = DeviceRaw(
                device=entry["device"],
                phases=[
                    PhaseSpan(p["name"], p["start_ns"], p["end_ns"], p.get("detail", ""), p.get("count", 0))
                    for p in entry.get("phases", [])
                ],
            )
        for device, name, kind, role, sensor, a, b in self._db.execute(
            "SELECT device, name, kind, role, sensor, a, b FROM arrays WHERE run_id = ?", (run_id,)
        ):
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
        rows = self._db.execute(
            "SELECT run_id, created_at, model_path, model_sha256, n_devices, n_ok FROM runs"
            " ORDER BY created_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [RunRow(*r) for r in rows]

    def documents(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The result documents of these runs, by run id (runs not stored are left out)."""
        if not run_ids:
            return {}
        marks = ", ".join("?" * len(run_ids))
        rows = self._db.execute(f"SELECT run_id, document FROM runs WHERE run_id IN ({marks})", tuple(run_ids))
        return {run_id: json.loads(doc) for run_id, doc in rows}

    def resolve_run_id(self, run_id: str) -> str:
        """The one run ``run_id`` names (a unique prefix is enough), stored or only pending; StoreError otherwise."""
        matches = [
            r[0]
            for r in self._db.execute(
                "SELECT run_id FROM runs WHERE run_id LIKE ?1"
                " UNION SELECT run_id FROM pending_jobs WHERE run_id LIKE ?1",
                (run_id + "%",),
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
        with self._tx() as db:
            pending = db.execute("DELETE FROM pending_jobs WHERE run_id = ?", (run_id,)).rowcount
            db.execute("DELETE FROM arrays WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return run_id, pending

    def documents_for_models(self, sha256s: list[str], exclude_run_ids: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Result documents of every stored run of these models, oldest first (the history `host compare` reads)."""
        if not sha256s:
            return []
        marks = ", ".join("?" * len(sha256s))
        rows = self._db.execute(
            f"SELECT run_id, document FROM runs WHERE model_sha256 IN ({marks}) ORDER BY created_at",
            tuple(sha256s),
        ).fetchall()
        return [json.loads(doc) for run_id, doc in rows if run_id not in exclude_run_ids]

    def last_run_id(self) -> str:
        rows = self.runs(limit=1)
        if not rows:
            raise StoreError(f"no runs stored yet in {self.path}: run `host profile MODEL` first")
        return rows[0].run_id

    def add_pending(self, job: PendingJob) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO pending_jobs (run_id, device, address, job_id, request, settings)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (job.run_id, job.device, job.address, job.job_id, json.dumps(job.request), json.dumps(job.settings)),
        )

    def pending(self, run_id: str | None = None) -> list[PendingJob]:
        query = "SELECT run_id, device, address, job_id, request, settings FROM pending_jobs"
        args: tuple[str, ...] = ()
        if run_id:
            query += " WHERE run_id LIKE ?"
            args = (run_id + "%",)
        return [
            PendingJob(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]))
            for r in self._db.execute(query, args)
        ]
