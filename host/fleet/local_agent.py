"""The embedded default: a local agent on loopback with a random token, started and stopped by the host."""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from host.fleet import parent_death
from host.fleet.client import Credentials

#: How many hosts on one machine may each run an embedded agent at once (each has its own data dir).
MAX_LOCAL_AGENTS = 32

_LISTENING = re.compile(r"listening on (?P<host>[^\s]+):(?P<port>\d+)")


def read_listen_port(proc: subprocess.Popen[str], timeout_s: float) -> int | None:
    """The port from the first line `agent serve` prints ("... listening on HOST:PORT ..."), or None.

    Read in a thread so a silent or hung agent cannot block the caller past `timeout_s`.
    """
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout_s)
    match = _LISTENING.search(result[0] if result else "")
    return int(match.group("port")) if match else None


class LocalAgentError(Exception):
    pass


def default_local_data_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "edgeprof" / "local-agent"


def claim_data_dir(preferred: Path) -> tuple[Path, IO[str]]:
    """The first of ``preferred``, ``preferred-2``, … that no other host holds, and the lock that holds it.

    Two `host profile` commands at once (two terminals, parallel CI jobs) must not share an agent's data
    directory: one journal and model cache per agent. The lock is an flock the kernel drops when this host
    ends, however it ends. Keep the returned file open while the agent runs.
    """
    for n in range(1, MAX_LOCAL_AGENTS + 1):
        candidate = preferred if n == 1 else preferred.with_name(f"{preferred.name}-{n}")
        candidate.mkdir(parents=True, exist_ok=True)
        handle = open(candidate / "host.lock", "a")  # noqa: SIM115 - the open file is the lock
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return candidate, handle
    raise LocalAgentError(
        f"{MAX_LOCAL_AGENTS} hosts on this machine already run a local agent ({preferred}-N):"
        " wait for one to finish, or profile on an agent with --device"
    )


class LocalAgent:
    """`with LocalAgent() as agent:` runs `agent serve` on 127.0.0.1, a free port, with a fresh token.

    The model cache lives in a persistent directory, so a second run of the same model uploads nothing.
    """

    def __init__(
        self, data_dir: Path | None = None, extra_args: list[str] | None = None, start_timeout_s: float = 60.0
    ) -> None:
        self.preferred_data_dir = data_dir or default_local_data_dir()
        self.data_dir = self.preferred_data_dir
        self._data_dir_lock: IO[str] | None = None
        self.extra_args = extra_args or []
        self.start_timeout_s = start_timeout_s
        self.address = ""
        self.credentials = Credentials(token=secrets.token_urlsafe(32))
        self._proc: subprocess.Popen[str] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeprof-host-")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "agent.log"

    def start(self) -> str:
        self.data_dir, self._data_dir_lock = claim_data_dir(self.preferred_data_dir)
        token_file = Path(self._tmp.name) / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(str(self.credentials.token))
        cmd = [
            sys.executable,
            "-m",
            "agent",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            str(token_file),
            "--data-dir",
            str(self.data_dir),
            "--no-advertise",
            *self.extra_args,
        ]
        log = open(self.log_path, "a")  # noqa: SIM115 - handed to the child, closed below
        try:
            # Dies with the host, even a SIGKILLed one; armed after exec, never in a preexec_fn (see parent_death).
            self._proc = subprocess.Popen(
                parent_death.command(cmd), stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
            )
        finally:
            log.close()
        port = read_listen_port(self._proc, self.start_timeout_s)
        if port is None:
            self.stop()
            tail = self._log_tail()
            raise LocalAgentError(f"the local agent did not start{': ' + tail if tail else ''} (log: {self.log_path})")
        self.address = f"127.0.0.1:{port}"
        return self.address

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, timeout_s: float = 15.0) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        self._proc = None
        self._tmp.cleanup()
        if self._data_dir_lock is not None:
            self._data_dir_lock.close()  # only now: the agent that used the directory has exited
            self._data_dir_lock = None

    def __enter__(self) -> LocalAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
