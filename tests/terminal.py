"""Run a real `host` process on a pseudo-terminal of a fixed width and read what a user would see on it.

The pty's window size is set (TIOCSWINSZ) and COLUMNS exported, so rich, shutil and the kernel all agree on
the width; the output is returned with colour and cursor sequences removed and lines split on CR LF.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[=>()][0-9A-Za-z]?")


@dataclass
class Screen:
    returncode: int
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


def run_in_terminal(argv: list[str], columns: int, env: dict[str, str], timeout_s: float = 240) -> Screen:
    """`argv` with stdout and stderr on a pty `columns` wide; its exit status and the plain text it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env={**env, "COLUMNS": str(columns)}
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise TimeoutError(f"{argv} did not end within {timeout_s} s")
        returncode = proc.wait(timeout=30)
    finally:
        os.close(master)
    text = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n").replace("\r", "")
    return Screen(returncode, text)
