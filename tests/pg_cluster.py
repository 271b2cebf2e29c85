"""A throwaway PostgreSQL server for the test session: initdb in a temp dir, 127.0.0.1 on a free port.

Uses Debian's `postgresql` package (binaries under /usr/lib/postgresql/*/bin; `.ci/run` installs it). The
server refuses to run as root, so as root it runs as the `postgres` user the package creates. Tests that
need it get a fresh database each (`pg_url`); without the package or psycopg they are skipped, saying why.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class PgCluster:
    port: int
    user: str = "edgeprof"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def start_cluster() -> tuple[PgCluster, Path, Path] | str:
    """(cluster, its bin dir, its data dir), or why no server can be had."""
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    bin_dir = _bin_dir()
    if bin_dir is None:
        return "no PostgreSQL server binaries (apt-get install postgresql)"
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        return "running as root and there is no 'postgres' user to run the server as"
    root = Path(tempfile.mkdtemp(prefix="edgeprof-pg-"))
    root.chmod(0o755)
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    init = subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "edgeprof", "-A", "trust", "--no-sync"]),
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return f"initdb failed: {init.stderr.strip()[-300:]}"
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    start = subprocess.run(
        _as_server_user(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
        ),
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        return f"the PostgreSQL server did not start: {log.strip()[-300:]}"
    return PgCluster(port=port), bin_dir, data


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    started = start_cluster()
    if isinstance(started, str):
        pytest.skip(f"no PostgreSQL server for the store tests: {started}")
    cluster, bin_dir, data = started
    try:
        yield cluster
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A new, empty database on the session's server."""
    return pg_cluster.create_database()
