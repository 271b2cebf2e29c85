"""One phone reached through the adb server (adbutils): shell commands, long-lived shells, file pushes.

Every adbutils or socket failure is re-raised as PhoneUnavailable naming the serial and what adb says
about the device now (offline, unauthorized, gone), so the job runner can end a job with one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.errors import AgentError

#: Where everything edgeprof puts on a phone lives (app-writable without root on every Android).
PHONE_DIR = "/data/local/tmp/edgeprof"
DEFAULT_SERVER_PORT = 5037
#: The longest output line kept from a phone command; the rest of a longer line is read and dropped, so a
#: runner printing without newlines cannot grow the bridge agent (it grew 60 MB in 40 s before).
MAX_LINE_BYTES = 64 * 1024

log = logging.getLogger("agent.adb.phone")


class PhoneUnavailable(AgentError):
    """The phone cannot be reached: unplugged, offline, unauthorized, or the adb server is down."""

    kind = "device_lost"


def server_address() -> tuple[str, int]:
    """The adb server this bridge uses: ANDROID_ADB_SERVER_PORT (adb's own variable), else 5037."""
    port = os.environ.get("ANDROID_ADB_SERVER_PORT", "")
    return "127.0.0.1", int(port) if port.isdigit() else DEFAULT_SERVER_PORT


def adb_client() -> Any:
    """An adbutils client for the adb server; RuntimeMissing-style one line when adbutils is absent."""
    try:
        import adbutils
    except ImportError as err:
        raise PhoneUnavailable("adbutils is not installed: pip install 'edgeprof[adb]'") from err
    host, port = server_address()
    return adbutils.AdbClient(host=host, port=port, socket_timeout=30)


def list_serials() -> list[tuple[str, str]]:
    """(serial, state) of every phone the adb server knows."""
    try:
        return [(d.serial, d.state) for d in adb_client().list()]
    except Exception as err:
        host, port = server_address()
        raise PhoneUnavailable(f"no adb server at {host}:{port}: {err} (start one with `adb start-server`)") from err


class Phone:
    """The phone with adb serial `serial`."""

    def __init__(self, serial: str) -> None:
        self.serial = serial
        self._device = adb_client().device(serial)

    def state(self) -> str:
        """What adb says about the phone now: "device", "offline", "unauthorized", or "gone"."""
        try:
            return dict(list_serials()).get(self.serial, "gone")
        except PhoneUnavailable:
            return "gone (no adb server)"

    def unavailable(self, doing: str, err: BaseException | None = None) -> PhoneUnavailable:
        state = self.state()
        why = "not attached" if state == "gone" else f"adb says {state}"
        if state == "device" and err is not None:
            why = f"adb error: {' '.join(str(err).split())[:200]}"
        return PhoneUnavailable(f"phone {self.serial} disconnected {doing} ({why}): check the cable or adb over Wi-Fi")

    def check(self) -> None:
        """PhoneUnavailable unless adb lists the phone as ready."""
        state = self.state()
        if state != "device":
            raise PhoneUnavailable(
                f"phone {self.serial} is not ready (adb says {state}): attach it, accept the USB debugging prompt, "
                "or `adb connect` it"
            )

    def shell(self, command: str, timeout_s: float = 60.0, doing: str = "") -> str:
        """Output (stdout and stderr) of one shell command on the phone."""
        try:
            return str(self._device.shell(command, timeout=timeout_s, rstrip=False))
        except Exception as err:
            raise self.unavailable(doing or f"while running `{command[:60]}`", err) from err

    def stream(self, command: str) -> ShellStream:
        """A shell command whose output is read as it comes (the battery loop, the runner)."""
        try:
            conn = self._device.shell(command, stream=True, timeout=None)
        except Exception as err:
            raise self.unavailable(f"while starting `{command[:60]}`", err) from err
        return ShellStream(conn)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        try:
            self._device.sync.push(str(local), remote, mode=mode)
        except Exception as err:
            raise self.unavailable(f"while pushing {local.name}", err) from err

    def size(self, remote: str) -> int | None:
        """The size of a file on the phone, None when it is not there."""
        try:
            info = self._device.sync.stat(remote)
        except Exception as err:
            raise self.unavailable(f"while checking {remote}", err) from err
        return int(info.size) if info.mode else None


class ShellStream:
    """Output lines of a running phone command; `close()` ends it (adbd hangs up the command)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._sock: socket.socket = conn.conn
        self._sock.settimeout(None)
        self._lock = threading.Lock()
        self._closed = False

    def lines(self, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
        """Each output line as it arrives; ends when the command exits or the phone goes away.

        A line longer than `max_line_bytes` is cut there and ends with CUT_MARK; what it had beyond that is
        read and dropped, so memory stays bounded however the command prints.
        """
        buffer = bytearray()
        dropped = 0  # bytes of the current line dropped beyond the cap
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                if buffer or dropped:
                    yield _line(bytes(buffer), dropped)
                return
            *complete, rest = chunk.split(b"\n")
            for piece in complete:
                dropped += _append_capped(buffer, piece, max_line_bytes)
                yield _line(bytes(buffer), dropped)
                buffer.clear()
                dropped = 0
            dropped += _append_capped(buffer, rest, max_line_bytes)

    def close(self) -> None:
        """Idempotent: a cancel may close the stream while its reader is closing it too."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()


#: What ends a line that was cut at MAX_LINE_BYTES (parsers see it as text they do not know).
CUT_MARK = " [edgeprof: line cut, {dropped} more bytes dropped]"


def _append_capped(buffer: bytearray, piece: bytes, max_bytes: int) -> int:
    """Append what fits under max_bytes; returns how many bytes of `piece` did not fit."""
    room = max(0, max_bytes - len(buffer))
    buffer += piece[:room]
    return max(0, len(piece) - room)


def _line(data: bytes, dropped: int) -> str:
    text = data.decode(errors="replace").rstrip("\r")
    if dropped:
        log.warning("a phone command printed a line of %d bytes: kept the first %d", len(data) + dropped, len(data))
        text += CUT_MARK.format(dropped=dropped)
    return text
