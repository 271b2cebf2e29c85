"""`--op-profile`'s raw trace kept as a file: the runtime's own profiler trace (Chrome trace JSON), as Perfetto
(ui.perfetto.dev) and chrome://tracing open it, written beside where the user ran `host profile`.

The agent sends it gzip-compressed in the job's end (at most 8 MB); it is decompressed here with a bound, so
a hostile or broken agent cannot make the host write or hold more than MAX_TRACE_BYTES, and checked to be a
trace before it is written.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

#: Largest trace written, decompressed.
MAX_TRACE_BYTES = 256 * 1024 * 1024


class TraceError(Exception):
    """The trace cannot be kept; the message is one line."""


def unpack_trace(gz: bytes) -> bytes:
    """The trace JSON from its gzip bytes, decompressed to at most MAX_TRACE_BYTES and checked to be a trace."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflate.decompress(gz, MAX_TRACE_BYTES)
    except zlib.error as err:
        raise TraceError(f"the agent's trace is not gzip data ({err})") from err
    if inflate.unconsumed_tail:
        raise TraceError(f"the agent's trace is over {MAX_TRACE_BYTES // 2**20} MB decompressed")
    try:
        events = json.loads(data)
    except ValueError as err:
        raise TraceError(f"the agent's trace is not JSON ({err})") from err
    if not isinstance(events, list) and not (isinstance(events, dict) and "traceEvents" in events):
        raise TraceError("the agent's trace is not a Chrome trace (a list of events, or traceEvents)")
    return data


def trace_path(directory: Path, run_id: str, device: str) -> Path:
    """`op-trace-RUN-DEVICE.json`, the device name reduced to letters, digits, - and _."""
    safe = re.sub(r"[^A-Za-z0-9-]+", "_", device).strip("_") or "device"
    return directory / f"op-trace-{run_id}-{safe[:80]}.json"


def write_trace(gz: bytes, directory: Path, run_id: str, device: str) -> Path:
    """Write one device's trace; TraceError (one line) when it cannot be kept."""
    data = unpack_trace(gz)
    path = trace_path(directory, run_id, device)
    try:
        path.write_bytes(data)
    except OSError as err:
        raise TraceError(f"cannot write {path}: {err.strerror or err}") from err
    return path
