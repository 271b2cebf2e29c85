"""The run store on a team's PostgreSQL server (psycopg 3): the SQLite store's SQL and migrations, shared.

Selected by `EDGEPROF_DB=postgresql://user@host:port/db` (or the config file's `db`). Many hosts write at
once: each run is saved in one transaction, pending jobs are claimed with SELECT … FOR UPDATE SKIP LOCKED,
and migrations run under a transaction-scoped advisory lock, so two hosts opening a new database at once
create the schema once. psycopg is imported only here: a SQLite user never needs it (`pip install
edgeprof[team]`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from host.store.sqlite import Store, StoreError
from host.store.url_redact import redact, scrub

#: pg_advisory_xact_lock key that serialises schema migrations across hosts ("edgeprof" in ASCII, truncated).
_MIGRATION_LOCK_KEY = 0x6564676570726F66 >> 1


class PgStore(Store):
    _TYPES = {"blob": "BYTEA", "int64": "BIGINT"}
    _CLAIM_LOCK = " FOR UPDATE SKIP LOCKED"

    def _open(self, target: Path | str) -> None:
        url = str(target)
        self.path = redact(url)
        try:
            import psycopg
        except ModuleNotFoundError as err:
            raise StoreError(
                f"EDGEPROF_DB is a PostgreSQL URL ({self.path}) but psycopg is not installed:"
                " pip install 'edgeprof[team]'"
            ) from err
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise StoreError(f"cannot open the run store {self.path}: {scrub(reason, url)}") from err

    @staticmethod
    def _sql(sql: str) -> str:
        # The shared SQL uses '?' placeholders and no literal '%' or '?' (LIKE patterns travel as parameters).
        return sql.replace("?", "%s")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._conn.cursor() as cur:
            cur.execute(self._sql(sql), args or None)
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cur.fetchall()]

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock, self._conn.cursor() as cur:
            cur.execute(self._sql(sql), args or None)
            return cur.rowcount

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock, self._conn.cursor() as cur:
            cur.executemany(self._sql(sql), rows)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock, self._conn.transaction():
            yield

    def _lock_schema(self) -> None:
        self._run("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))

    def _columns(self, table: str) -> set[str]:
        rows = self._query(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {r[0] for r in rows}

    def close(self) -> None:
        with self._lock:
            self._conn.close()
