"""Which store a target names: `open_store()` picks the backend, so neither backend needs to know the other.

A postgresql:// URL (EDGEPROF_DB, the config file's `db`, or the caller's) opens the team's PostgreSQL
store (psycopg imported only then); anything else is a SQLite file.
"""

from __future__ import annotations

from pathlib import Path

from host.store.sqlite import Store, is_postgres_url, store_target


def open_store(target: Path | str | None = None) -> Store:
    """The run store ``target`` names (flag > EDGEPROF_DB > config `db` > the default SQLite file)."""
    resolved = store_target(target)
    if is_postgres_url(resolved):
        from host.store.postgres import PgStore

        return PgStore(resolved)
    return Store(resolved)
