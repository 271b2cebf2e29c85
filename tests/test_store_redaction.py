"""Database passwords never print, in any URL form: `runs ls`, `runs import`, the dashboard's footer, errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from host.report.synthetic import synthetic_run
from host.store.open import open_store
from host.store.sqlite import StoreError
from host.store.transfer import run_line
from host.store.url_redact import redact
from tests.conftest import console_script
from tests.faultlib import isolated_env

SECRET = "Hunter2-s3cret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://ci:{SECRET}@db:5432/edgeprof", "postgresql://ci:***@db:5432/edgeprof"),
        (f"postgresql://ci:{SECRET}@x@db/edgeprof", "postgresql://ci:***@db/edgeprof"),  # an unencoded '@'
        (f"postgres://ci:{SECRET}/x?y@db/edgeprof", "postgres://ci:***@db/edgeprof"),  # '/' and '?' too
        (f"postgresql://db/edgeprof?sslmode=require&password={SECRET}&x=1", None),
        (f"postgresql://db/edgeprof?PASSWORD={SECRET}", None),
        (f"postgresql://ci@db/edgeprof?password='{SECRET} &x'", None),
        (f"postgresql://:{SECRET}@db/edgeprof", "postgresql://:***@db/edgeprof"),
        ("postgresql://ci:Hunter2%40s3cret@db/edgeprof", "postgresql://ci:***@db/edgeprof"),
    ],
)
def test_every_url_form_of_a_password_is_redacted(url: str, shown: str | None) -> None:
    redacted = redact(url)

    assert "Hunter2" not in redacted and "s3cret" not in redacted, redacted
    assert "db" in redacted and "edgeprof" in redacted
    if shown is not None:
        assert redacted == shown


def test_a_url_that_is_not_postgresql_is_refused_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as err:
        open_store(f"mysql://ci:{SECRET}@db/edgeprof")

    assert "neither a SQLite file path nor a postgresql:// URL" in str(err.value)
    assert "Hunter2" not in str(err.value) and not list(tmp_path.iterdir())


def _host(tmp_path: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = isolated_env(tmp_path, EDGEPROF_DB=db)
    return subprocess.run([console_script("host"), *args], capture_output=True, text=True, timeout=60, env=env)


def test_password_in_the_query_never_prints_in_runs_ls_import_or_the_dashboard(pg_url: str, tmp_path: Path) -> None:
    from host.dashboard.serve import Dashboard, ServeOptions

    db = f"{pg_url}?password={SECRET}"  # the test server trusts local connections: the password is not checked
    export = tmp_path / "runs.jsonl"
    export.write_text(run_line(synthetic_run(n_devices=1, n_inferences=50, seed=1)) + "\n")

    listed_empty = _host(tmp_path, db, "runs", "ls")
    imported = _host(tmp_path, db, "runs", "import", str(export))
    listed = _host(tmp_path, db, "runs", "ls")
    store = open_store(db)
    try:
        _status, page = Dashboard(store, ServeOptions(listen="127.0.0.1:0")).render("/", {})
    finally:
        store.close()

    assert "no runs yet in" in listed_empty.stdout and "imported 1 run(s)" in imported.stdout
    assert "20260101-000000-000001" in listed.stdout and "20260101-000000-000001" in page
    for shown in (listed_empty, imported, listed):
        assert SECRET not in shown.stdout + shown.stderr
    assert "password=***" in imported.stdout and SECRET not in page and "password=***" in page


def test_a_password_with_an_unencoded_at_sign_is_not_echoed_by_the_connect_error(pg_url: str, tmp_path: Path) -> None:
    host_part = pg_url.split("@", 1)[1]
    db = f"postgresql://edgeprof:Hunter2@s3cret@{host_part}"  # libpq splits at the first '@'

    listed = _host(tmp_path, db, "runs", "ls")

    assert listed.returncode != 0 and "cannot open the run store" in listed.stdout + listed.stderr
    assert "Hunter2" not in listed.stdout + listed.stderr and "s3cret" not in listed.stdout + listed.stderr
    assert "Traceback" not in listed.stderr
