"""`agent serve` start-up mistakes end in one line and exit 2, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from host.fleet.local_agent import read_listen_port


def _serve(*args: str, data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "serve", "--no-advertise", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGEPROF_SYSFS_ROOT": str(data_dir / "no-sysfs")},
    )


def test_port_in_use_is_one_line_naming_the_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("--listen", f"127.0.0.1:{port}", data_dir=tmp_path / "a")
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()

    assert proc.returncode == 2
    assert "Traceback" not in err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("agent: ")
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in last
    assert "--listen" in last


def test_second_agent_on_one_data_dir_is_refused_with_one_line(tmp_path: Path) -> None:
    first = _serve("--listen", "127.0.0.1:0", data_dir=tmp_path)
    try:
        assert read_listen_port(first, timeout_s=60) is not None
        second = _serve("--listen", "127.0.0.1:0", data_dir=tmp_path)
        try:
            _, err = second.communicate(timeout=60)
        finally:
            second.kill()  # it must have exited by itself; when it did not, it must not outlive the test

        assert second.returncode == 2
        assert "Traceback" not in err and "database is locked" not in err
        assert f"data directory {tmp_path} is in use by pid {first.pid}" in err
        assert "--data-dir" in err
    finally:
        first.terminate()
        first.communicate(timeout=30)
