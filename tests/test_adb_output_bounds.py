"""Output of phone commands is bounded in memory: a runner printing without newlines cannot grow the bridge."""

from __future__ import annotations

import socket
import threading
import tracemalloc
from types import SimpleNamespace

from agent.adb.phone import MAX_LINE_BYTES, ShellStream

MIB = 1024**2


def _stream_of(*parts: bytes) -> tuple[ShellStream, threading.Thread]:
    """A ShellStream over a real loopback TCP connection whose far end sends `parts`, then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    near = socket.create_connection(listener.getsockname())
    far, _ = listener.accept()
    listener.close()

    def send() -> None:
        with far:
            for part in parts:
                far.sendall(part)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return ShellStream(SimpleNamespace(conn=near, close=near.close)), sender


def test_a_runner_printing_40_mb_without_a_newline_keeps_the_bridge_small() -> None:
    endless = b"x" * MIB
    stream, sender = _stream_of(*([endless] * 40), b"\nINFO: Inference timings in us: Init: 1\n")

    tracemalloc.start()
    try:
        lines = list(stream.lines())
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stream.close()
        sender.join(10)

    assert peak_bytes < 4 * MIB, f"reading the output held {peak_bytes / MIB:.0f} MiB"  # 80+ MiB before
    assert len(lines) == 2
    assert lines[0].startswith("x" * MAX_LINE_BYTES) and lines[0].endswith(
        f"[edgeprof: line cut, {40 * MIB - MAX_LINE_BYTES} more bytes dropped]"
    )
    assert lines[1] == "INFO: Inference timings in us: Init: 1"  # the lines after it still parse


def test_lines_split_across_reads_come_out_whole() -> None:
    stream, sender = _stream_of(b"count=5 first=1", b"2 curr=3\r\nlast", b" line")

    lines = list(stream.lines())
    stream.close()
    sender.join(10)

    assert lines == ["count=5 first=12 curr=3", "last line"]
