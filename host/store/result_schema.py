"""The result document's one declared schema (DESIGN.md §4), checked by `runs import`, every store read and reports.

Pydantic v2 models in strict mode: a number is a JSON number (never "1.5" or true), finite; text is text; the
objects readers format are typed field by field. Fields the host does not read stay open (`extra="allow"`),
so a newer host's additions load, but every value anywhere must still be plain JSON, finite, and at most
MAX_DEPTH deep. `check_document()` answers one line naming the field's path (`devices.0.latency_ms.p50:
Input should be a valid number`), so a malformed run is refused at import and skipped wherever an older
store already holds one, never taking down a listing, a report or the dashboard.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Deepest nesting of objects and lists a document may have (the host writes at most 6 levels).
MAX_DEPTH = 32

Num = Annotated[float, Field(allow_inf_nan=False)]
Int = Annotated[int, Field(ge=0)]
Text = Annotated[str, Field(max_length=100_000)]
Interval = Annotated[list[Num | None], Field(max_length=2)]


class SchemaError(ValueError):
    """A document that does not follow the result schema: one line naming the field's path."""


class _Open(BaseModel):
    """Declared fields typed strictly; undeclared ones allowed (checked as plain JSON by check_document)."""

    model_config = ConfigDict(strict=True, extra="allow")


class Model(_Open):
    path: Text
    sha256: Text
    format: Text | None = None
    size_bytes: Int | None = None


class LatencyMs(_Open):
    p50: Num | None = None
    p90: Num | None = None
    p99: Num | None = None
    mean: Num | None = None
    std: Num | None = None
    min: Num | None = None
    max: Num | None = None
    p50_ci95: Interval | None = None
    p90_ci95: Interval | None = None
    p50_ci: Interval | None = None
    p90_ci: Interval | None = None
    p50_ci_coverage: Num | None = None
    p90_ci_coverage: Num | None = None
    ci_method: Text | None = None
    p99_reliable: bool | None = None
    p99_min_n: Int | None = None
    n: Int | None = None
    outliers: Int | None = None
    outlier_fraction: Num | None = None


class Rail(_Open):
    name: Text | None = None
    role: Text | None = None
    sensor: Text | None = None
    avg_power_w: Num | None = None
    energy_mj_per_inference: Num | None = None


class Energy(_Open):
    method: Text | None = None
    sensor: Text | None = None
    problem: Text | None = None
    idle_power_w: Num | None = None
    avg_power_w: Num | None = None
    energy_mj_per_inference: Num | None = None
    dynamic_energy_mj_per_inference: Num | None = None
    energy_mj_per_inference_ci95: Interval | None = None
    dynamic_energy_mj_per_inference_ci95: Interval | None = None
    energy_j_total: Num | None = None
    duration_s: Num | None = None
    sample_count: Int | None = None
    sample_rate_hz: Num | None = None
    rails: list[Rail] | None = None
    warnings: list[Text] | None = None


class Thermal(_Open):
    max_temp_c: Num | None = None
    throttled: bool | None = None
    throttle_reason: Text | None = None
    trip_temp_c: Num | None = None


class Validity(_Open):
    valid: bool | None = None
    reasons: list[Text] = []
    warnings: list[Text] = []


class Phase(_Open):
    name: Text
    start_ns: int
    end_ns: int
    detail: Text = ""
    count: int = 0


class Repetition(_Open):
    index: int | None = None
    n: Int | None = None
    p50_ms: Num | None = None
    p90_ms: Num | None = None
    mean_ms: Num | None = None
    throughput_ips: Num | None = None
    energy_mj_per_inference: Num | None = None
    dynamic_energy_mj_per_inference: Num | None = None
    avg_power_w: Num | None = None
    idle_power_w: Num | None = None


class OpTime(_Open):
    op_type: Text | None = None
    node: Text | None = None
    provider: Text | None = None
    total_us: Num | None = None
    calls: Int | None = None


class OpProfile(_Open):
    by_type: list[OpTime] = []
    top_nodes: list[OpTime] = []


class Generation(_Open):
    prompt_len: Int | None = None
    gen_len: Int | None = None
    n_generations: Int | None = None
    ttft_ms: LatencyMs | None = None
    itl_ms: LatencyMs | None = None
    e2e_ms: LatencyMs | None = None
    prefill_tokens_per_s: Num | None = None
    decode_tokens_per_s: Num | None = None
    tokens_generated: Int | None = None
    energy_mj_per_prompt_token: Num | None = None
    energy_mj_per_generated_token: Num | None = None
    tokens_per_joule: Num | None = None


class Board(_Open):
    hostname: Text | None = None
    board: Text | None = None
    os: Text | None = None
    kernel: Text | None = None
    machine: Text | None = None
    cpu_model: Text | None = None
    cpu_cores: Int | None = None
    ram_mb: Num | None = None
    agent_version: Text | None = None
    runtimes: dict[str, Text] | None = None
    metadata: dict[str, Text] | None = None


class DeviceEntry(_Open):
    device: Annotated[str, Field(min_length=1, max_length=1000)]
    status: Literal["ok", "error"]
    error: Text | None = None
    error_kind: Text | None = None
    profile: Text | None = None
    address: Text | None = None
    runtime: Text | None = None
    execution_provider: Text | None = None
    execution_providers: list[Text] | None = None
    job_id: Text | None = None
    n_inferences: Int | None = None
    n_warmup: Int | None = None
    upload_bytes: Int | None = None
    threads: int | None = None
    latency_ms: LatencyMs | None = None
    latency_source: Text | None = None
    throughput_ips: Num | None = None
    duration_s: Num | None = None
    load_time_ms: Num | None = None
    first_inference_ms: Num | None = None
    peak_rss_mb: Num | None = None
    sample_rate_hz: Num | None = None
    energy: Energy | None = None
    thermal: Thermal | None = None
    validity: Validity | None = None
    phases: list[Phase] | None = None
    repetitions: list[Repetition] | None = None
    op_profile: OpProfile | None = None
    generation: list[Generation] | None = None
    notes: dict[str, Text] | None = None
    board: Board | None = None


class RunDocument(_Open):
    run_id: Annotated[str, Field(min_length=1, max_length=200)]
    created_at: Annotated[str, Field(min_length=1, max_length=100)]
    model: Model
    devices: list[DeviceEntry] = []
    settings: dict[str, Any] | None = None
    host_version: Text | None = None


def _check_json(document: Any) -> None:
    """Plain JSON only, finite numbers, at most MAX_DEPTH deep: checked without recursion (a 200k-deep
    document must be one line, not a RecursionError)."""
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SchemaError(f"{path or 'the document'}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SchemaError(f"{path or 'the document'}: a key that is not text")
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}.{i}" if path else str(i), depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise SchemaError(f"{path}: {value} is not finite (the result format has null, never NaN)")
        elif not (value is None or isinstance(value, str | int | bool)):
            raise SchemaError(f"{path}: a {type(value).__name__} is not JSON")


def check_document(document: Any) -> dict[str, Any]:
    """The document when it follows the schema; SchemaError (one line, the first problem's path) otherwise."""
    if not isinstance(document, dict):
        raise SchemaError("the result document is not a JSON object")
    _check_json(document)
    try:
        RunDocument.model_validate(document)
    except ValidationError as err:
        first = err.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "the document"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise SchemaError(f"{path}: {first['msg']}{more}") from None
    devices = [d["device"] for d in document.get("devices") or []]
    twice = sorted({d for d in devices if devices.count(d) > 1})
    if twice:
        raise SchemaError(f"devices: {twice[0]!r} appears twice")
    return document


def _no_constants(name: str) -> float:
    raise SchemaError(f"holds {name}: not strict JSON (the result format has null, never NaN or Infinity)")


def parse_document(text: str | bytes) -> dict[str, Any]:
    """A result document from its JSON text, checked; SchemaError (one line) for anything else."""
    try:
        document = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise SchemaError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:
        if isinstance(err, SchemaError):
            raise
        raise SchemaError(f"not JSON ({err})") from None
    return check_document(document)
