"""`host compare`: candidate run against base run, per device and metric, with run-level verdicts and a gate.

The run (repetition), not the inference, is the unit of evidence (DESIGN.md §7). A metric's change is the
Hodges-Lehmann ratio of the two sides' repetition figures with a bootstrap 95% interval over repetitions
when each side has at least MIN_REPETITIONS; otherwise its interval uses the run-to-run spread the store has
seen for that device, model and settings (host/run_history.py); with no such history only the runs' own
intervals remain ("within-run evidence only") and no change below the noise floor fails the gate. A
regression is a whole interval beyond the gate in the worse direction. p50 latency and gross energy gate by
default, dynamic energy only when asked (``gate_metrics``); p90, throughput, power and memory are shown and
never gate. Mann-Whitney on raw inferences is an informational column only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from host.energy import co2e_g
from host.report.fields import NO_SENSOR, get, num
from host.run_history import RunHistory
from host.rundata import RunData
from host.significance import (
    EVIDENCE_WITHIN_RUN,
    RunLevelChange,
    bootstrap_repetitions_change,
    history_change,
    is_run_level_regression,
    log_spread,
    mann_whitney_u,
    within_run_change,
)
from host.stats import quantile_interval
from host.store import Store, StoreError

#: A side needs this many repetitions for a bootstrap over its own repetitions.
MIN_REPETITIONS = 3
#: With within-run evidence only, no change smaller than this fails the gate: the 95% bound of the p50
#: difference between two fresh processes of `example:squeezenet --threads 1` on the 2-core dev box
#: (9.8%, docs/ci-recipe.md says how it was measured), rounded up.
NOISE_FLOOR_PCT = 10.0
#: Metrics that may gate, by the name --gate-metrics takes.
GATEABLE = ("latency-p50", "energy", "dynamic-energy")
DEFAULT_GATE_METRICS = ("latency-p50", "energy")


class CompareError(Exception):
    """A run or result file that cannot be compared; the message is one line."""


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


@dataclass
class CompareResult:
    base_id: str
    candidate_id: str
    fail_on_regression_pct: float | None
    changes: list[MetricChange]
    #: Devices in only one of the runs, or failed in either.
    skipped: list[str]
    grid_g_per_kwh: float | None = None
    #: Settings in which the two runs differ (a different model is the normal case and not listed).
    differences: list[str] = field(default_factory=list)
    noise_floor_pct: float = NOISE_FLOOR_PCT

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.regression]

    @property
    def failed(self) -> bool:
        return self.fail_on_regression_pct is not None and bool(self.regressions)

    @property
    def within_run_only(self) -> list[str]:
        return sorted({f"{c.device} {c.metric}" for c in self.changes if c.gated and c.test == EVIDENCE_WITHIN_RUN})

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "failed": self.failed,
            "regressions": [asdict(c) for c in self.regressions],
            "within_run_only": self.within_run_only,
        }


def load_side(spec: str, store: Store | None) -> RunData:
    """A result JSON file (no raw samples) when ``spec`` is an existing .json file, else a stored run id/prefix."""
    path = Path(spec)
    if path.suffix.lower() == ".json" and path.is_file():
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CompareError(f"cannot read result file {path}: {err}") from err
        if not isinstance(document, dict) or "devices" not in document:
            raise CompareError(f"{path} is not an edgeprof result document (no 'devices')")
        document.setdefault("run_id", path.name)
        return RunData(document=document, raw={})
    if store is None:
        raise CompareError(f"'{spec}' is not a result JSON file and there is no run store to look it up in")
    try:
        return store.load_run(spec)
    except StoreError as err:
        raise CompareError(str(err)) from err


def history_for(store: Store | None, base: RunData, cand: RunData) -> RunHistory:
    """Earlier runs of either model in the store, the two compared runs left out."""
    if store is None:
        return RunHistory()
    shas = sorted({(r.document.get("model") or {}).get("sha256") or "" for r in (base, cand)} - {""})
    return RunHistory(store.documents_for_models(shas, exclude_run_ids=(base.run_id, cand.run_id)))


def parse_gate_metrics(text: str | None) -> tuple[str, ...]:
    """``--gate-metrics latency-p50,energy,dynamic-energy`` as a tuple; the default when None."""
    if text is None:
        return DEFAULT_GATE_METRICS
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in GATEABLE]
    if unknown or not names:
        raise CompareError(f"unknown gate metric '{','.join(unknown) or text}' (choose from {', '.join(GATEABLE)})")
    return names


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
    values = [_number(r.get(spec.rep_key)) for r in reps]
    if len(reps) >= 2 and all(v is not None for v in values):
        return [v for v in values if v is not None]
    top = _number(get(entry, *spec.top))
    return None if top is None else [top]


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and None not in value:
        return (float(value[0]), float(value[1]))
    return None


def _within_run_ci(entry: dict[str, Any], spec: _Spec, run: RunData, device: str) -> tuple[float, float] | None:
    """The run's own 95% interval: for percentiles recomputed from raw inferences when the store has them
    (older runs stored intervals that assumed independent inferences), else the document's."""
    raw = run.raw.get(device)
    if spec.quantile is not None and raw is not None and raw.start_ns.size:
        order = np.argsort(raw.start_ns, kind="stable")
        return quantile_interval(raw.latency_ns[order] / 1e6, spec.quantile).as_ci95()
    return _interval(get(entry, *spec.ci))


@dataclass
class _Side:
    run: RunData
    entry: dict[str, Any]


def _spread_groups(device: str, spec: _Spec, base: _Side, cand: _Side, history: RunHistory) -> list[np.ndarray]:
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
    device: str, spec: _Spec, base: _Side, cand: _Side, history: RunHistory, bv: list[float], cv: list[float]
) -> RunLevelChange:
    if len(bv) >= MIN_REPETITIONS and len(cv) >= MIN_REPETITIONS:
        return bootstrap_repetitions_change(np.asarray(bv), np.asarray(cv))
    spread = log_spread(_spread_groups(device, spec, base, cand, history))
    if spread is not None:
        return history_change(np.asarray(bv), np.asarray(cv), *spread)
    b_top, c_top = _number(get(base.entry, *spec.top)), _number(get(cand.entry, *spec.top))
    assert b_top is not None and c_top is not None  # _figures found them
    change = within_run_change(
        b_top,
        _within_run_ci(base.entry, spec, base.run, device),
        c_top,
        _within_run_ci(cand.entry, spec, cand.run, device),
    )
    return change


def _metric_change(
    device: str,
    spec: _Spec,
    base: _Side,
    cand: _Side,
    history: RunHistory,
    gate_pct: float,
    gate_metrics: Sequence[str],
    noise_floor_pct: float,
) -> MetricChange:
    b_top, c_top = _number(get(base.entry, *spec.top)), _number(get(cand.entry, *spec.top))
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
    regression = is_run_level_regression(change, True, gate_pct, noise_floor_pct)
    note = change.detail
    if change.evidence == EVIDENCE_WITHIN_RUN:
        note = "within-run evidence only" + (f": {change.detail}" if change.detail else "")
    if regression and not gated:
        regression = False
        note = (note + "; " if note else "") + "shown, does not gate"
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
        regression,
        note,
        list(change.ci_pct) if change.ci_pct is not None else None,
        gated,
    )


def _mann_whitney_p(device: str, spec: _Spec, base: RunData, cand: RunData) -> float | None:
    """Informational: Mann-Whitney on the raw inferences, which treats every inference as independent."""
    if spec.quantile != 0.5:
        return None
    b_raw, c_raw = base.raw.get(device), cand.raw.get(device)
    if b_raw is None or c_raw is None or not b_raw.start_ns.size or not c_raw.start_ns.size:
        return None
    return mann_whitney_u(b_raw.latency_ns / 1e6, c_raw.latency_ns / 1e6)[1]


def _plain_change(device: str, metric: str, unit: str, b: Any, c: Any, higher_is_worse: bool) -> MetricChange:
    b, c = _number(b), _number(c)
    if b is None or c is None:
        return MetricChange(device, metric, unit, b, c, None, "missing", None, False, False, "not measured")
    change = (c - b) / abs(b) * 100 if b else None
    direction = "higher is worse" if higher_is_worse else "lower is worse"
    return MetricChange(device, metric, unit, b, c, change, "none", None, False, False, f"no test ({direction})")


#: Run settings that do not change what is measured, left out of the differences.
_IGNORED_SETTINGS = frozenset({"reconnect_s", "timeout_s"})
#: Device-entry fields whose difference is printed: (label, path).
_DEVICE_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("board", ("board", "hostname")),
    ("profile", ("profile",)),
    ("runtime", ("runtime",)),
    ("execution provider", ("execution_provider",)),
    ("agent version", ("board", "agent_version")),
    ("threads used", ("threads",)),
    ("inputs", ("inputs",)),
)


def _shown(value: Any) -> str:
    return "–" if value is None else json.dumps(value, default=str) if not isinstance(value, str) else value


def settings_differences(
    base: dict[str, Any], cand: dict[str, Any], pairs: Sequence[tuple[str, dict[str, Any], dict[str, Any]]]
) -> list[str]:
    """What differs between the runs besides the model: run settings, then each device's runtime and board."""
    out = []
    b_set, c_set = base.get("settings") or {}, cand.get("settings") or {}
    for key in sorted((set(b_set) | set(c_set)) - _IGNORED_SETTINGS):
        if b_set.get(key) != c_set.get(key):
            out.append(f"{key}: {_shown(b_set.get(key))} (base) vs {_shown(c_set.get(key))} (candidate)")
    for device, b, c in pairs:
        for label, path in _DEVICE_FIELDS:
            if get(b, *path) != get(c, *path):
                out.append(f"{device}: {label} {_shown(get(b, *path))} (base) vs {_shown(get(c, *path))} (candidate)")
    return out


def compare_runs(
    base: RunData,
    cand: RunData,
    fail_on_regression_pct: float | None = None,
    grid_g_per_kwh: float | None = None,
    *,
    gate_metrics: Sequence[str] = DEFAULT_GATE_METRICS,
    history: RunHistory | None = None,
    noise_floor_pct: float = NOISE_FLOOR_PCT,
) -> CompareResult:
    """Every metric of every device both runs measured successfully; regressions beyond the PCT gate."""
    gate_pct = fail_on_regression_pct if fail_on_regression_pct is not None else 0.0
    history = history or RunHistory()
    base_devices = {d["device"]: d for d in base.document.get("devices") or []}
    cand_devices = {d["device"]: d for d in cand.document.get("devices") or []}
    changes: list[MetricChange] = []
    skipped: list[str] = []
    pairs = []
    for device in list(base_devices) + [d for d in cand_devices if d not in base_devices]:
        b, c = base_devices.get(device), cand_devices.get(device)
        if b is None or c is None:
            skipped.append(f"{device}: only in the {'base' if c is None else 'candidate'} run")
            continue
        if b.get("status") != "ok" or c.get("status") != "ok":
            side = "base" if b.get("status") != "ok" else "candidate"
            error = (b if side == "base" else c).get("error") or "failed"
            skipped.append(f"{device}: failed in the {side} run ({error})")
            continue
        pairs.append((device, b, c))
        sides = (_Side(base, b), _Side(cand, c))
        changes += [
            _metric_change(device, spec, *sides, history, gate_pct, gate_metrics, noise_floor_pct) for spec in SPECS
        ]
        changes += [_plain_change(device, name, unit, get(b, *p), get(c, *p), hw) for name, unit, p, hw in PLAIN]
    differences = settings_differences(base.document, cand.document, pairs)
    return CompareResult(
        base.run_id, cand.run_id, fail_on_regression_pct, changes, skipped, grid_g_per_kwh, differences, noise_floor_pct
    )


def _change_text(c: MetricChange) -> str:
    if c.change_pct is None:
        return "–"
    return f"{c.change_pct:+.1f}%" if math.isfinite(c.change_pct) else "∞"


def _ci_text(c: MetricChange) -> str:
    return f"[{c.ci_pct[0]:+.1f}%, {c.ci_pct[1]:+.1f}%]" if c.ci_pct else "–"


def _verdict(c: MetricChange, floor_pct: float) -> str:
    note = f" ({c.note})" if c.note else ""
    if c.regression:
        return "❌ regression" + note
    if c.test in ("none", "missing"):
        return c.note or "–"
    if c.ci_pct is None:
        return "no interval" + note
    if not c.significant:
        return "no significant change" + note
    if c.test == EVIDENCE_WITHIN_RUN and c.change_pct is not None and abs(c.change_pct) < floor_pct:
        return f"within-run evidence only: under the {num(floor_pct, 3)}% noise floor"
    return "significant" + note


def _evidence_text(c: MetricChange) -> str:
    return {"none": "–", "missing": "–"}.get(c.test, c.test)


def _mw_text(c: MetricChange) -> str:
    return f"{c.p_value:.2g}" if c.p_value is not None else "–"


def _co2_lines(result: CompareResult) -> list[str]:
    if result.grid_g_per_kwh is None:
        return []
    lines = []
    for c in result.changes:
        if c.metric == "energy/inference" and c.base is not None and c.candidate is not None:
            delta_j = (c.candidate - c.base) * 1e-3 * 1e6
            lines.append(
                f"- {c.device}: {co2e_g(delta_j, result.grid_g_per_kwh):+.3g} g CO2e per million "
                f"inferences (estimate: energy × {num(result.grid_g_per_kwh, 3)} g/kWh)"
            )
    return lines


def _caveats(result: CompareResult) -> list[str]:
    if not result.within_run_only:
        return []
    return [
        f"within-run evidence only for {', '.join(result.within_run_only)}: no repetitions or earlier runs of the "
        f"same model and settings tell the run-to-run spread, so changes under the "
        f"{num(result.noise_floor_pct, 3)}% noise floor never fail the gate (use `host ab` or `--repeat`)"
    ]


def _gate_line(result: CompareResult) -> str:
    return (
        f"{'FAIL' if result.failed else 'PASS'}: {len(result.regressions)} regression(s) whose whole 95% interval "
        f"lies above {num(result.fail_on_regression_pct, 3)}%"
    )


def render_markdown(result: CompareResult) -> str:
    head = f"### edgeprof compare: `{result.candidate_id}` (candidate) vs `{result.base_id}` (base)\n\n"
    if result.differences:
        head += "**Differs from the base besides the model:**\n\n" + "".join(f"- {d}\n" for d in result.differences)
        head += "\n"
    if result.fail_on_regression_pct is not None:
        head += f"**{'❌' if result.failed else '✅'} {_gate_line(result)}**\n\n"
    rows = [
        "| device | metric | base | candidate | change | 95% CI | evidence | verdict | Mann-Whitney p (info) |",
        "|---|---|---:|---:|---:|---|---|---|---:|",
    ]
    for c in result.changes:
        rows.append(
            f"| {c.device} | {c.metric} ({c.unit}) | {num(c.base)} | {num(c.candidate)} | {_change_text(c)} | "
            f"{_ci_text(c)} | {_evidence_text(c)} | {_verdict(c, result.noise_floor_pct)} | {_mw_text(c)} |"
        )
    tail = [f"- skipped {s}" for s in result.skipped] + [f"- {line}" for line in _caveats(result)]
    tail += _co2_lines(result)
    return head + "\n".join(rows) + "\n" + ("\n" + "\n".join(tail) + "\n" if tail else "")


def render_text(result: CompareResult) -> str:
    width = max([len(c.device) for c in result.changes] + [6])
    lines = [f"candidate {result.candidate_id} vs base {result.base_id}"]
    lines += [f"DIFFERS: {d}" for d in result.differences]
    for c in result.changes:
        lines.append(
            f"{c.device:<{width}}  {c.metric + ' ' + c.unit:<30} {num(c.base):>10} -> {num(c.candidate):>10}"
            f"  {_change_text(c):>8}  {_ci_text(c):<20} {_evidence_text(c):<12} {_verdict(c, result.noise_floor_pct)}"
        )
    lines += [f"skipped {s}" for s in result.skipped] + _caveats(result) + _co2_lines(result)
    if result.fail_on_regression_pct is not None:
        lines.append(_gate_line(result))
    return "\n".join(lines) + "\n"


def render_json(result: CompareResult) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    return json.dumps(clean(result.to_dict()), indent=2) + "\n"
