"""This host's client key: a random secret, made once and kept, that makes the jobs it starts its own.

Agents record the owner of a job as a hash of the caller's credential and this key (agent/service/ownership.py),
so colleagues sharing a fleet token cannot read, cancel or acknowledge each other's jobs, while every
command on this machine (`host profile`, later `host runs fetch`) is the same owner. The key lives in
`$EDGEPROF_CLIENT_KEY_FILE`, else `$XDG_CONFIG_HOME/edgeprof/client.key` (~/.config by default), mode 0600.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("host.fleet.client_key")

#: 32 random bytes as hex.
KEY_HEX_CHARS = 64


def client_key_path() -> Path:
    env = os.environ.get("EDGEPROF_CLIENT_KEY_FILE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "edgeprof" / "client.key"


def _create(path: Path) -> None:
    """Write a new key atomically: concurrent first runs all end up with whichever key landed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(KEY_HEX_CHARS // 2) + "\n")
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs wins
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def _load(path: Path) -> str:
    try:
        if not path.exists():
            _create(path)
        key = path.read_text().strip()
    except OSError as err:
        # Jobs still run; only a later `host runs fetch` from another process could not claim them.
        log.warning("cannot keep a client key at %s (%s): this process's jobs are its own only", path, err.strerror)
        return secrets.token_hex(KEY_HEX_CHARS // 2)
    if len(key) < 32:
        log.warning("the client key in %s is too short; using a key for this process only", path)
        return secrets.token_hex(KEY_HEX_CHARS // 2)
    return key


def client_key() -> str:
    """This host's key, created on first use."""
    return _load(client_key_path())
