"""The run store's schema as numbered migrations, written once for both backends (SQLite and PostgreSQL).

Each migration is a list of statements; `{blob}` and `{int64}` stand for the types that differ
(BLOB/BYTEA, INTEGER/BIGINT). A store records the highest version applied in `schema_version`; opening
a store applies the missing ones under the backend's write lock, so two hosts opening a new store at
once migrate it once. Stores written before versioning started have the tables but no version row:
migration 1 only creates what is missing, and a column addition first checks that the column is absent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AddColumn:
    """ALTER TABLE … ADD COLUMN, skipped when the column exists (a store from before versioning may have it)."""

    table: str
    column: str
    definition: str


Statement = str | AddColumn

MIGRATIONS: list[list[Statement]] = [
    # 1: the tables as the first hosts wrote them.
    [
        """CREATE TABLE IF NOT EXISTS runs (
            run_id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            model_path TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            n_devices INTEGER NOT NULL,
            n_ok INTEGER NOT NULL,
            document TEXT NOT NULL
        )""",
        # Raw arrays, one row per channel (not per sample): little-endian int64 times and int64/float64 values.
        """CREATE TABLE IF NOT EXISTS arrays (
            run_id TEXT NOT NULL,
            device TEXT NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            role TEXT NOT NULL,
            sensor TEXT NOT NULL,
            a {blob} NOT NULL,
            b {blob} NOT NULL,
            PRIMARY KEY (run_id, device, name)
        )""",
        """CREATE TABLE IF NOT EXISTS pending_jobs (
            run_id TEXT NOT NULL,
            device TEXT NOT NULL,
            address TEXT NOT NULL,
            job_id TEXT NOT NULL,
            request TEXT NOT NULL,
            PRIMARY KEY (run_id, device)
        )""",
    ],
    # 2: the run's settings with each pending job, so that a run rebuilt by `host runs fetch` has them.
    [AddColumn("pending_jobs", "settings", "TEXT NOT NULL DEFAULT '{}'")],
    # 3: a fetcher's claim on a pending job (who, and until when in Unix ms), so two fetchers never collect one job.
    [
        AddColumn("pending_jobs", "claimed_by", "TEXT NOT NULL DEFAULT ''"),
        AddColumn("pending_jobs", "claimed_until_ms", "{int64} NOT NULL DEFAULT 0"),
    ],
    # 4: what the dashboard and `host compare` filter and sort by.
    [
        "CREATE INDEX IF NOT EXISTS runs_created_at ON runs (created_at)",
        "CREATE INDEX IF NOT EXISTS runs_model_sha256 ON runs (model_sha256)",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
