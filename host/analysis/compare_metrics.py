"""One metric of one device in `host compare`: its run-level change, the evidence behind its interval, its verdict.

The figures come from the device entries' ``repetitions`` (host/analysis/repetitions.py) when both sides have at least
MIN_REPETITIONS; else from the run-to-run spread of earlier runs (host/analysis/run_history.py); else from the runs'
own intervals (within-run evidence only). host/analysis/compare.py puts the metrics of every device together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from host.analysis.document import NO_SENSOR, get
from host.analysis.gate import gate_p_value
from host.analysis.generation import Generation, decode_tokens_per_s, generations
from host.analysis.run_history import RunHistory
from host.analysis.significance import (
    EVIDENCE_WITHIN_RUN,
    RunLevelChange,
    history_change,
    log_spread,
    mann_whitney_u,
    repetitions_change,
    segments_change,
    within_run_change,
)
from host.analysis.stats import quantile_interval
from host.store.rundata import RunData

#: A side needs this many repetitions for a t interval over its own repetitions (with fewer, the run-to-run
#: spread comes from the store's history): K=3 gives 2-4 degrees of freedom, a wide but honest interval.
MIN_REPETITIONS = 3
#: A run whose own interval is withheld is cut into this many contiguous segments (significance.segments_change):
#: enough for a t with about ten degrees of freedom, each segment long enough for a median (MIN_SEGMENT_VALUES).
SEGMENTS = 6
MIN_SEGMENT_VALUES = 10


@dataclass
class MetricChange:
    device: str
    metric: str
    unit: str
    base: float | None
    candidate: float | None
    change_pct: float | None
    #: Evidence of the interval: "repetitions" | "history" | "within-run"; "none" (shown, no interval) | "missing".
    test: str
    #: Mann-Whitney p on raw inferences: informational only, never part of the verdict.
    p_value: float | None
    #: The 95% interval excludes no change.
    significant: bool
    regression: bool
    note: str = ""
    #: 95% interval of change_pct.
    ci_pct: list[float] | None = None
    #: Whether this metric can fail the gate.
    gated: bool = False
    higher_is_worse: bool = True
    #: One-sided p-value of "worse by more than the gate" (host/analysis/gate.py); the verdict is Holm's over these.
    gate_p_value: float | None = None
    #: The smallest change (in %, worse direction) this comparison would fail with 80% power; gated metrics only.
    detectable_change_pct: float | None = None
    #: The change as the gate tests it (not in the JSON: compare.py fills the verdict and power from it).
    change: RunLevelChange | None = field(default=None, repr=False, compare=False)
    #: The figures change_pct compares when they are not `base`/`candidate` (the pooled run figures): the
    #: geometric means of the repetitions' figures; None where the run figures are the basis.
    base_basis: float | None = None
    candidate_basis: float | None = None


@dataclass(frozen=True)
class _Spec:
    """A metric judged from run-level figures."""

    name: str
    #: Its name for --gate-metrics; None: shown, never gates.
    gate_name: str | None
    unit: str
    rep_key: str
    top: tuple[str, ...]
    ci: tuple[str, ...]
    quantile: float | None = None
    higher_is_worse: bool = True
    #: A generative model's metric: `top`/`ci` are read in the `generation` row of this prompt length, and
    #: `rep_key` in the repetition's own `generation` row of it.
    prompt_len: int | None = None


SPECS = (
    _Spec("latency p50", "latency-p50", "ms", "p50_ms", ("latency_ms", "p50"), ("latency_ms", "p50_ci95"), 0.5),
    _Spec("latency p90", None, "ms", "p90_ms", ("latency_ms", "p90"), ("latency_ms", "p90_ci95"), 0.9),
    _Spec(
        "energy/inference",
        "energy",
        "mJ",
        "energy_mj_per_inference",
        ("energy", "energy_mj_per_inference"),
        ("energy", "energy_mj_per_inference_ci95"),
    ),
    _Spec(
        "dynamic energy/inference",
        "dynamic-energy",
        "mJ",
        "dynamic_energy_mj_per_inference",
        ("energy", "dynamic_energy_mj_per_inference"),
        ("energy", "dynamic_energy_mj_per_inference_ci95"),
    ),
)


def generation_specs(base_entry: dict[str, Any], cand_entry: dict[str, Any]) -> list[_Spec]:
    """TTFT p50 (lower is better) and decode tokens/s (higher is better) for every prompt length both generative
    entries measured; none unless both are generative."""

    def prompts(entry: dict[str, Any]) -> list[int]:
        rows = entry.get("generation")
        return [r["prompt_len"] for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    common = [p for p in prompts(base_entry) if p in prompts(cand_entry)]
    specs = []
    for p in common:
        specs.append(
            _Spec(
                f"TTFT p50, prompt {p}",
                "ttft-p50",
                "ms",
                "ttft_p50_ms",
                ("ttft_ms", "p50"),
                ("ttft_ms", "p50_ci95"),
                prompt_len=p,
            )
        )
        specs.append(
            _Spec(
                f"decode tokens/s, prompt {p}",
                "decode-tokens-per-s",
                "tok/s",
                "decode_tokens_per_s",
                ("decode_tokens_per_s",),
                ("decode_tokens_per_s_ci95",),
                higher_is_worse=False,
                prompt_len=p,
            )
        )
    return specs


def _generation_row(entry: dict[str, Any], prompt_len: int) -> dict[str, Any] | None:
    rows = entry.get("generation")
    found = (
        [r for r in rows if isinstance(r, dict) and r.get("prompt_len") == prompt_len] if isinstance(rows, list) else []
    )
    return found[0] if found else None


def _read(entry: dict[str, Any], spec: _Spec, path: tuple[str, ...]) -> Any:
    """``entry[path]``, or for a generative metric its prompt length's generation row's ``[path]``."""
    if spec.prompt_len is None:
        return get(entry, *path)
    row = _generation_row(entry, spec.prompt_len)
    return None if row is None else get(row, *path)


def _rep_value(rep: dict[str, Any], spec: _Spec) -> float | None:
    if spec.prompt_len is None:
        return _number(rep.get(spec.rep_key))
    row = _generation_row(rep, spec.prompt_len)
    return None if row is None else _number(row.get(spec.rep_key))


#: Shown with their change, never tested: (name, unit, path, higher is worse).
PLAIN: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("throughput", "inf/s", ("throughput_ips",), False),
    ("avg power", "W", ("energy", "avg_power_w"), True),
    ("peak memory", "MB", ("peak_rss_mb",), True),
)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _figures(entry: dict[str, Any], spec: _Spec) -> list[float] | None:
    """The metric per repetition when the entry has two or more, else the run's one figure; None if unmeasured."""
    reps = entry.get("repetitions") or []
    values = [_rep_value(r, spec) for r in reps]
    if len(reps) >= 2 and all(v is not None for v in values):
        return [v for v in values if v is not None]
    top = _number(_read(entry, spec, spec.top))
    return None if top is None else [top]


def basis_figures(entry: dict[str, Any], spec: _Spec) -> list[float] | None:
    """The figures a metric's change is computed from: one per repetition, or the run's one figure."""
    return _figures(entry, spec)


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and None not in value:
        return (float(value[0]), float(value[1]))
    return None


def _within_run_ci(entry: dict[str, Any], spec: _Spec, run: RunData, device: str) -> tuple[float, float] | None:
    """The run's own 95% interval: for percentiles recomputed from raw inferences when the store has them
    (older runs stored intervals that assumed independent inferences), else the document's. A phone's raw
    windows repeat each block's mean (latency_source block_means): its interval is the document's, over blocks."""
    raw = run.raw.get(device)
    per_inference = entry.get("latency_source", "per_inference") == "per_inference" and spec.prompt_len is None
    if spec.quantile is not None and per_inference and raw is not None and raw.start_ns.size:
        order = np.argsort(raw.start_ns, kind="stable")
        return quantile_interval(raw.latency_ns[order] / 1e6, spec.quantile).as_ci95()
    return _interval(_read(entry, spec, spec.ci))


@dataclass
class Side:
    run: RunData
    entry: dict[str, Any]


def _spread_groups(device: str, spec: _Spec, base: Side, cand: Side, history: RunHistory) -> list[np.ndarray]:
    """Groups whose spread is run-to-run noise: the sides' own repetitions and the store's earlier runs."""

    def figures_of(entry: dict[str, Any]) -> list[float] | None:
        values = _figures(entry, spec)
        return values if values and min(values) > 0 else None

    groups = [np.asarray(v) for v in (figures_of(base.entry), figures_of(cand.entry)) if v and len(v) >= 2]
    groups += history.groups(device, (base.run.document, base.entry), figures_of)
    if (base.run.document.get("model") or {}).get("sha256") != (cand.run.document.get("model") or {}).get("sha256"):
        groups += history.groups(device, (cand.run.document, cand.entry), figures_of)
    return groups


def _run_level_change(
    device: str, spec: _Spec, base: Side, cand: Side, history: RunHistory, bv: list[float], cv: list[float]
) -> RunLevelChange:
    if len(bv) >= MIN_REPETITIONS and len(cv) >= MIN_REPETITIONS:
        return repetitions_change(np.asarray(bv), np.asarray(cv))
    spread = log_spread(_spread_groups(device, spec, base, cand, history))
    if spread is not None:
        return history_change(np.asarray(bv), np.asarray(cv), *spread)
    b_top, c_top = _number(_read(base.entry, spec, spec.top)), _number(_read(cand.entry, spec, spec.top))
    assert b_top is not None and c_top is not None  # _figures found them
    change = within_run_change(
        b_top,
        _within_run_ci(base.entry, spec, base.run, device),
        c_top,
        _within_run_ci(cand.entry, spec, cand.run, device),
    )
    if change.ci_pct is None and b_top > 0 and c_top > 0:
        b_segments, c_segments = _segment_figures(base, spec, device), _segment_figures(cand, spec, device)
        if b_segments is not None and c_segments is not None:
            return segments_change(b_top, b_segments, c_top, c_segments)
    return change


def _segments(count: int) -> list[slice] | None:
    """SEGMENTS contiguous slices of ``count`` values in order, or None when a segment would be too short."""
    if count < SEGMENTS * MIN_SEGMENT_VALUES:
        return None
    edges = np.linspace(0, count, SEGMENTS + 1).round().astype(int)
    return [slice(int(lo), int(hi)) for lo, hi in itertools.pairwise(edges)]


def _segment_figures(side: Side, spec: _Spec, device: str) -> np.ndarray | None:
    """The metric on each of SEGMENTS contiguous parts of one run's raw measurements in order, where the store
    has them: latency quantiles of per-inference runs, TTFT p50 and decode tokens/s of a prompt length's
    generations. None for what has no per-unit series (energy, a phone's block means) or too few units."""
    raw = side.run.raw.get(device)
    if raw is None:
        return None
    if spec.prompt_len is not None:
        group = [g for g in generations(raw) if g.prompt_tokens == spec.prompt_len]
        parts = _segments(len(group))
        if parts is None:
            return None
        return _positive(np.array([_generation_figure(group[p], spec) for p in parts]))
    if spec.quantile is None or side.entry.get("latency_source", "per_inference") != "per_inference":
        return None
    order = np.argsort(raw.start_ns, kind="stable")
    latency_ms = raw.latency_ns[order] / 1e6
    parts = _segments(latency_ms.size)
    return None if parts is None else _positive(np.array([np.quantile(latency_ms[p], spec.quantile) for p in parts]))


def _positive(figures: np.ndarray) -> np.ndarray | None:
    return figures if bool(np.all(figures > 0)) else None


def _generation_figure(group: list[Generation], spec: _Spec) -> float:
    """TTFT p50 (ms) or decode tokens/s of some generations, as the run's generation row computes it."""
    if spec.rep_key == "ttft_p50_ms":
        return float(np.median([g.ttft_ns / 1e6 for g in group]))
    return decode_tokens_per_s(group) or 0.0  # 0: no rate, refused by _positive


def metric_change(
    device: str,
    spec: _Spec,
    base: Side,
    cand: Side,
    history: RunHistory,
    gate_pct: float,
    gate_metrics: Sequence[str],
) -> MetricChange:
    """One metric's change, interval and one-sided gate p-value; the verdict (Holm across metrics) is compare.py's."""
    b_top, c_top = _number(_read(base.entry, spec, spec.top)), _number(_read(cand.entry, spec, spec.top))
    gated = spec.gate_name is not None and spec.gate_name in gate_metrics
    bv, cv = _figures(base.entry, spec), _figures(cand.entry, spec)
    if bv is None or cv is None:
        why = NO_SENSOR if spec.unit == "mJ" else "not measured"
        return MetricChange(device, spec.name, spec.unit, b_top, c_top, None, "missing", None, False, False, why)
    if min(bv + cv) <= 0:
        change_pct = (c_top - b_top) / abs(b_top) * 100 if b_top and c_top is not None else None
        return MetricChange(
            device, spec.name, spec.unit, b_top, c_top, change_pct, "none", None, False, False, "not positive: no ratio"
        )
    change = _run_level_change(device, spec, base, cand, history, bv, cv)
    note = change.detail
    if change.evidence == EVIDENCE_WITHIN_RUN:
        note = "within-run evidence only" + (f": {change.detail}" if change.detail else "")
    return MetricChange(
        device,
        spec.name,
        spec.unit,
        b_top,
        c_top,
        change.change_pct,
        change.evidence,
        _mann_whitney_p(device, spec, base.run, cand.run),
        change.significant,
        False,
        note,
        list(change.ci_pct) if change.ci_pct is not None else None,
        gated,
        spec.higher_is_worse,
        gate_p_value(change, spec.higher_is_worse, gate_pct),
        change=change,
    )


def _mann_whitney_p(device: str, spec: _Spec, base: RunData, cand: RunData) -> float | None:
    """Informational: Mann-Whitney on the raw inferences, which treats every inference as independent."""
    if spec.quantile != 0.5:
        return None
    b_raw, c_raw = base.raw.get(device), cand.raw.get(device)
    if b_raw is None or c_raw is None or not b_raw.start_ns.size or not c_raw.start_ns.size:
        return None
    return mann_whitney_u(b_raw.latency_ns / 1e6, c_raw.latency_ns / 1e6)[1]


def plain_change(device: str, metric: str, unit: str, b: Any, c: Any, higher_is_worse: bool) -> MetricChange:
    b, c = _number(b), _number(c)
    if b is None or c is None:
        return MetricChange(device, metric, unit, b, c, None, "missing", None, False, False, "not measured")
    change = (c - b) / abs(b) * 100 if b else None
    direction = "higher is worse" if higher_is_worse else "lower is worse"
    return MetricChange(device, metric, unit, b, c, change, "none", None, False, False, f"no test ({direction})")
