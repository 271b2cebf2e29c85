"""llama-bench's output (`-o json`, `jsonl`, `csv`, `md`) read into one record per test.

What llama-bench prints (tools/llama-bench in llama.cpp): one result per test, a test being a prompt-processing
run of n_prompt tokens ("pp512"), a text-generation run of n_gen tokens ("tg128"), or both ("pp512+tg128"),
optionally at a context depth ("pp512 @ d512", "tg128@d512"). Each test is repeated `-r` times; JSON and JSONL
carry every repetition's time (`samples_ns`) besides the mean (`avg_ns`, `stddev_ns`) and the throughput
(`avg_ts`, `stddev_ts`, tokens/s); CSV carries only the aggregates; Markdown only "t/s" as "mean ± stddev".
Timings exclude tokenization and sampling (llama-bench's README says so). Where a format has no repetitions,
`samples_ns` is empty and the test's time is its mean only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("jsonl", "json", "csv", "md")
#: "pp512", "tg128", "pp512+tg128", "pp 512" (older builds), each optionally " @ d512" or "@d512".
_TEST = re.compile(r"^(?:pp\s*(\d+))?(?:\+)?(?:tg\s*(\d+))?\s*(?:@\s*d(\d+))?$")
_TS = re.compile(r"^\s*([0-9.eE+-]+)\s*±\s*([0-9.eE+-]+)\s*$")


class BenchOutputError(ValueError):
    """llama-bench printed something this reader cannot take; the message is one line."""


@dataclass(frozen=True)
class BenchTest:
    n_prompt: int
    n_gen: int
    n_depth: int
    #: Mean time of one repetition, ns (from tokens/s for Markdown, which prints nothing else).
    avg_ns: float
    stddev_ns: float | None
    #: Every repetition's time, ns, in order; empty when the format prints aggregates only (csv, md).
    samples_ns: tuple[int, ...]
    #: The test's other fields as printed (build_commit, backends, n_threads, n_batch, n_gpu_layers, ...).
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        parts = (f"pp{self.n_prompt}" if self.n_prompt else "", f"tg{self.n_gen}" if self.n_gen else "")
        text = "+".join(p for p in parts if p)
        return text + (f" @ d{self.n_depth}" if self.n_depth else "")


def parse(text: str, fmt: str) -> list[BenchTest]:
    """Every test llama-bench printed in format `fmt`; BenchOutputError when there is none or one is malformed."""
    if fmt not in FORMATS:
        raise BenchOutputError(f"unknown llama-bench output format '{fmt}' (known: {', '.join(FORMATS)})")
    if fmt == "jsonl":
        tests = [_from_json(_json(line)) for line in text.splitlines() if line.strip()]
    elif fmt == "json":
        found = _json(text)
        if not isinstance(found, list):
            raise BenchOutputError("llama-bench -o json printed no array of tests")
        tests = [_from_json(item) for item in found]
    elif fmt == "csv":
        tests = [_from_json(row) for row in csv.DictReader(io.StringIO(text.strip()))]
    else:
        tests = _markdown(text)
    if not tests:
        raise BenchOutputError("llama-bench printed no test results")
    return tests


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise BenchOutputError(f"llama-bench printed malformed JSON: {text.strip()[:80]!r}") from err


def _int(value: Any, key: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BenchOutputError(f"llama-bench's {key} is not a whole number: {str(value)[:40]!r}") from None
    if number < 0:
        raise BenchOutputError(f"llama-bench's {key} is negative: {number}")
    return number


def _float(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BenchOutputError(f"llama-bench's {key} is not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number) or number < 0:
        raise BenchOutputError(f"llama-bench's {key} is not a finite positive number: {number}")
    return number


def _from_json(item: Any) -> BenchTest:
    """One test from a JSON object or a CSV row (the same field names; CSV values are all strings)."""
    if not isinstance(item, dict):
        raise BenchOutputError("llama-bench printed a test that is not an object")
    missing = [k for k in ("n_prompt", "n_gen", "avg_ns") if k not in item]
    if missing:
        raise BenchOutputError(f"llama-bench's test lacks {', '.join(missing)} (not llama-bench output?)")
    samples = item.get("samples_ns") or []
    if not isinstance(samples, list):
        raise BenchOutputError("llama-bench's samples_ns is not a list")
    stddev = item.get("stddev_ns")
    test = BenchTest(
        n_prompt=_int(item["n_prompt"], "n_prompt"),
        n_gen=_int(item["n_gen"], "n_gen"),
        n_depth=_int(item.get("n_depth", 0) or 0, "n_depth"),
        avg_ns=_float(item["avg_ns"], "avg_ns"),
        stddev_ns=None if stddev in (None, "") else _float(stddev, "stddev_ns"),
        samples_ns=tuple(_int(s, "samples_ns") for s in samples),
        fields={k: v for k, v in item.items() if k not in ("samples_ns", "samples_ts")},
    )
    if not test.n_prompt and not test.n_gen:
        raise BenchOutputError("llama-bench printed a test with neither prompt nor generated tokens")
    return test


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _markdown(text: str) -> list[BenchTest]:
    lines = [line for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return []
    header = _cells(lines[0])
    if "test" not in header or "t/s" not in header:
        raise BenchOutputError("llama-bench's Markdown table has no 'test' and 't/s' columns")
    tests = []
    for line in lines[2:]:  # after the header and its ---: row
        row = dict(zip(header, _cells(line), strict=False))
        match = _TEST.match(row.get("test", ""))
        ts = _TS.match(row.get("t/s", ""))
        if not match or not ts or not (match.group(1) or match.group(2)):
            raise BenchOutputError(f"llama-bench's Markdown row is not a test: {line.strip()[:80]!r}")
        n_prompt, n_gen = int(match.group(1) or 0), int(match.group(2) or 0)
        avg_ts, std_ts = _float(ts.group(1), "t/s"), _float(ts.group(2), "t/s stddev")
        if avg_ts <= 0:
            raise BenchOutputError(f"llama-bench's Markdown row has no speed: {line.strip()[:80]!r}")
        tokens = n_prompt + n_gen
        avg_ns = tokens / avg_ts * 1e9
        # First-order spread of tokens/t from the spread of t: the table keeps nothing better.
        std_ns = avg_ns * std_ts / avg_ts
        fields = {k: v for k, v in row.items() if k not in ("test", "t/s")}
        tests.append(BenchTest(n_prompt, n_gen, int(match.group(3) or 0), avg_ns, std_ns, (), fields))
    return tests
