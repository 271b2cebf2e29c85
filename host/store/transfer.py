"""Runs moved between stores: `host runs export` (JSON lines with raw arrays), `host runs import`.

The CSV summary that `runs export -f csv` writes is a report (host/report/flat.py).

One JSON line per run: its result document and every raw array, base64 of the same little-endian
int64/float64 bytes the store keeps, so a run exported from a laptop's SQLite and imported into the team's
PostgreSQL loads back identical, samples included.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from host.store.result_schema import SchemaError, check_document
from host.store.rundata import DeviceRaw, PhaseSpan, RunData, Series

FORMAT = "edgeprof-run"
VERSION = 1


class TransferError(ValueError):
    """A line that is not an exported run: one line for the user, naming the line."""


def _b64(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


def _array(text: Any, dtype: str, what: str) -> np.ndarray:
    if not isinstance(text, str):
        raise TransferError(f"{what} is not base64 text")
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError as err:
        raise TransferError(f"{what} is not valid base64") from err
    if len(data) % 8:
        raise TransferError(f"{what} is not a whole number of 8-byte values")
    return np.frombuffer(data, dtype=dtype).astype(np.int64 if dtype == "<i8" else np.float64)


def run_line(run: RunData) -> str:
    """One run as one JSON line (no newline inside)."""
    raw = {
        device: {
            "start_ns": _b64(r.start_ns, "<i8"),
            "end_ns": _b64(r.end_ns, "<i8"),
            "warmup_start_ns": _b64(r.warmup_start_ns, "<i8"),
            "warmup_end_ns": _b64(r.warmup_end_ns, "<i8"),
            "series": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "role": s.role,
                    "sensor": s.sensor,
                    "t_ns": _b64(s.t_ns, "<i8"),
                    "value": _b64(s.value, "<f8"),
                }
                for s in r.series
            ],
        }
        for device, r in run.raw.items()
    }
    line = {"format": FORMAT, "version": VERSION, "document": run.document, "raw": raw}
    return json.dumps(line, separators=(",", ":"), allow_nan=False)


def parse_run_line(text: str) -> RunData:
    """The run one exported line holds; TransferError saying what is wrong with it."""
    try:
        line = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise TransferError("nested too deep to be an exported run") from None
    except TransferError:
        raise
    except ValueError as err:
        raise TransferError(f"not JSON ({err})") from err
    if not isinstance(line, dict) or line.get("format") != FORMAT:
        raise TransferError(f'not an exported run (no "format": "{FORMAT}")')
    if line.get("version") != VERSION:
        raise TransferError(f"export version {line.get('version')!r}; this host reads version {VERSION}")
    doc, raw_in = line.get("document"), line.get("raw")
    if not isinstance(doc, dict) or not isinstance(raw_in, dict):
        raise TransferError('"document" and "raw" must be objects')
    for key in ("run_id", "created_at"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise TransferError(f"the document has no {key}")
    model = doc.get("model")
    if (
        not isinstance(model, dict)
        or not isinstance(model.get("path"), str)
        or not isinstance(model.get("sha256"), str)
    ):
        raise TransferError("the document has no model path and sha256")
    if not isinstance(doc.get("devices", []), list):
        raise TransferError("the document's devices is not a list")
    phases: dict[str, Any] = {}  # device name -> its phase list; names checked unique (arrays are kept by name)
    for number, entry in enumerate(doc.get("devices") or [], start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("device"), str) or not entry["device"]:
            raise TransferError(f"device entry {number} of the document has no device name")
        if entry["device"] in phases:
            raise TransferError(f"device {entry['device']!r} appears twice in the document")
        phases[entry["device"]] = entry.get("phases") or []
    try:  # the one declared schema (host/store/result_schema.py), as every reader of the store checks it
        check_document(doc)
    except SchemaError as err:
        raise TransferError(f"document.{err}" if not str(err).startswith("the ") else str(err)) from err
    raw: dict[str, DeviceRaw] = {}
    for device, r in raw_in.items():
        if not isinstance(r, dict) or not isinstance(r.get("series", []), list):
            raise TransferError(f"raw arrays of device {device!r} are malformed")
        where = f"device {device!r}"
        try:
            spans = [
                PhaseSpan(p["name"], int(p["start_ns"]), int(p["end_ns"]), p.get("detail", ""), p.get("count", 0))
                for p in phases.get(device, [])
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise TransferError(f"the phases of {where} are malformed") from err
        dev = DeviceRaw(
            device=device,
            start_ns=_array(r.get("start_ns"), "<i8", f"{where} start_ns"),
            end_ns=_array(r.get("end_ns"), "<i8", f"{where} end_ns"),
            warmup_start_ns=_array(r.get("warmup_start_ns"), "<i8", f"{where} warmup_start_ns"),
            warmup_end_ns=_array(r.get("warmup_end_ns"), "<i8", f"{where} warmup_end_ns"),
            phases=spans,
        )
        if len(dev.start_ns) != len(dev.end_ns) or len(dev.warmup_start_ns) != len(dev.warmup_end_ns):
            raise TransferError(f"{where}: start and end arrays differ in length")
        for s in r.get("series", []):
            if not isinstance(s, dict) or not all(
                isinstance(s.get(k), str) for k in ("name", "kind", "role", "sensor")
            ):
                raise TransferError(f"{where}: a series without name, kind, role and sensor")
            series = Series(
                s["name"], s["kind"], s["role"], s["sensor"],
                _array(s.get("t_ns"), "<i8", f"{where} {s['name']} t_ns"),
                _array(s.get("value"), "<f8", f"{where} {s['name']} value"),
            )  # fmt: skip
            if len(series.t_ns) != len(series.value):
                raise TransferError(
                    f"{where}: series {s['name']!r} has {len(series.t_ns)} times but {len(series.value)} values"
                )
            dev.series.append(series)
        raw[device] = dev
    return RunData(document=doc, raw=raw)


def _refuse_constant(name: str) -> float:
    raise TransferError(f"holds {name}: not strict JSON (an exported run has null, never NaN or Infinity)")


def read_runs(lines: Iterable[str]) -> Iterator[RunData]:
    """Runs from exported lines (blank lines skipped); TransferError names the line number. A run id on two
    lines is refused: the second would silently replace the first."""
    first_line: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            run = parse_run_line(text)
        except TransferError as err:
            raise TransferError(f"line {number}: {err}") from err
        if run.run_id in first_line:
            raise TransferError(
                f"line {number}: run {run.run_id} is also on line {first_line[run.run_id]}: an export holds each run"
                " once (keep the line you want)"
            )
        first_line[run.run_id] = number
        yield run
