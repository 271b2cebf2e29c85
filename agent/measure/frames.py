"""Framing of worker -> agent messages over a pipe: length-prefixed JSON events and raw latency arrays."""

from __future__ import annotations

import json
import struct
from typing import IO, Any

EVENT = b"E"
LATENCY = b"L"
_HEADER = struct.Struct("<Ic")  # payload length, frame type
#: How often latency windows (and token timings) are flushed to the agent while measuring.
FLUSH_INTERVAL_NS = 100_000_000


def write_event(out: IO[bytes], event: dict[str, Any]) -> None:
    payload = json.dumps(event, separators=(",", ":")).encode()
    out.write(_HEADER.pack(len(payload), EVENT) + payload)
    out.flush()


def write_latency(out: IO[bytes], phase: int, start_ns: list[int], end_ns: list[int]) -> None:
    """One block of inference windows; the two arrays travel as raw little-endian int64."""
    import numpy as np  # here, not at the top: the idle agent process never needs numpy

    count = len(start_ns)
    payload = (
        struct.pack("<iI", phase, count) + np.asarray(start_ns, "<i8").tobytes() + np.asarray(end_ns, "<i8").tobytes()
    )
    out.write(_HEADER.pack(len(payload), LATENCY) + payload)
    out.flush()


def read_frame(stream: IO[bytes]) -> tuple[bytes, Any] | None:
    """The next frame as (type, decoded payload), or None at end of stream (worker exited)."""
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    length, kind = _HEADER.unpack(header)
    payload = _read_exact(stream, length)
    if payload is None:
        return None
    if kind == EVENT:
        return EVENT, json.loads(payload)
    if kind == LATENCY:
        import numpy as np

        phase, count = struct.unpack_from("<iI", payload)
        arrays = np.frombuffer(payload, "<i8", offset=8)
        return LATENCY, (phase, arrays[:count].astype(np.int64), arrays[count : 2 * count].astype(np.int64))
    raise ValueError(f"unknown frame type {kind!r} from worker")


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
