"""One agent per data directory: an exclusive lock on `DATA_DIR/agent.lock`, held while the agent runs.

Two agents on one data directory would share a journal (each marking the other's jobs as "agent restarted")
and a model cache; SQLite's "database is locked" was all the second one said. The lock is an flock, so the
kernel drops it when the process ends, however it ends: no stale lock files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class DataDirInUse(Exception):
    """Another live process holds the lock; the message is one line saying what to do."""


def lock_data_dir(data_dir: Path, name: str = "agent.lock") -> IO[str]:
    """Take the lock or raise DataDirInUse; keep the returned file open for as long as the lock is needed."""
    path = data_dir / name
    handle = open(path, "a+")  # noqa: SIM115 - the open file is the lock; its owner closes it
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataDirInUse(
            f"data directory {data_dir} is in use by {holder}: give this agent its own --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle
