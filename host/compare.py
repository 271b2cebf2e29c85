"""`host compare`: candidate run against base run, per device and metric, with significance and a gate.

Latency is tested on the raw per-inference samples (Mann-Whitney U) when both runs have them, else by
whether the two p50 intervals overlap (a result JSON file carries no samples); energy has one estimate
and an interval per run, so it is always judged by interval overlap. Throughput and memory have no
interval: their change is shown but never gates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from host.energy import co2e_g
from host.report.fields import NO_SENSOR, get, num
from host.rundata import RunData
from host.significance import compare_estimates, compare_metric
from host.store import Store, StoreError

#: Mann-Whitney significance level for latency.
ALPHA = 0.01


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
    #: "mann-whitney" | "interval-overlap" | "none" (no test: shown, never gates) | "missing".
    test: str
    p_value: float | None
    significant: bool
    regression: bool
    note: str = ""


@dataclass
class CompareResult:
    base_id: str
    candidate_id: str
    fail_on_regression_pct: float | None
    changes: list[MetricChange]
    #: Devices in only one of the runs, or failed in either.
    skipped: list[str]
    grid_g_per_kwh: float | None = None

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.regression]

    @property
    def failed(self) -> bool:
        return self.fail_on_regression_pct is not None and bool(self.regressions)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed, "regressions": [asdict(c) for c in self.regressions]}


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


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and None not in value:
        return (float(value[0]), float(value[1]))
    return None


def _estimate_change(
    device: str,
    metric: str,
    unit: str,
    base: dict[str, Any],
    cand: dict[str, Any],
    path: tuple[str, ...],
    ci_path: tuple[str, ...],
    min_pct: float,
    higher_is_worse: bool = True,
) -> MetricChange:
    b, c = get(base, *path), get(cand, *path)
    b_ci, c_ci = _interval(get(base, *ci_path)), _interval(get(cand, *ci_path))
    if b is None or c is None:
        why = NO_SENSOR if "energy" in metric else "not measured"
        return MetricChange(device, metric, unit, b, c, None, "missing", None, False, False, why)
    if b_ci is None or c_ci is None:
        change = (c - b) / abs(b) * 100 if b else None
        return MetricChange(device, metric, unit, b, c, change, "none", None, False, False, "no interval")
    result = compare_estimates(float(b), b_ci, float(c), c_ci, higher_is_worse, min_pct)
    return MetricChange(
        device, metric, unit, b, c, result.change_pct, "interval-overlap", None, result.significant, result.regression
    )


def _plain_change(device: str, metric: str, unit: str, b: Any, c: Any, higher_is_worse: bool) -> MetricChange:
    if b is None or c is None:
        return MetricChange(device, metric, unit, b, c, None, "missing", None, False, False, "not measured")
    change = (c - b) / abs(b) * 100 if b else None
    direction = "higher is worse" if higher_is_worse else "lower is worse"
    return MetricChange(device, metric, unit, b, c, change, "none", None, False, False, f"no test ({direction})")


def _latency_change(
    device: str, base: RunData, cand: RunData, b: dict[str, Any], c: dict[str, Any], min_pct: float
) -> MetricChange:
    b_raw, c_raw = base.raw.get(device), cand.raw.get(device)
    if b_raw is not None and c_raw is not None and b_raw.start_ns.size and c_raw.start_ns.size:
        result = compare_metric(b_raw.latency_ns / 1e6, c_raw.latency_ns / 1e6, True, ALPHA, min_pct)
        return MetricChange(
            device,
            "latency p50",
            "ms",
            result.base,
            result.candidate,
            result.change_pct,
            "mann-whitney",
            result.p_value,
            result.significant,
            result.regression,
        )
    change = _estimate_change(
        device, "latency p50", "ms", b, c, ("latency_ms", "p50"), ("latency_ms", "p50_ci95"), min_pct
    )
    change.note = "no raw samples: p50 intervals compared"
    return change


def _informative(change: MetricChange) -> MetricChange:
    """Shown with its test but never gating: a tail percentile moves with background load on the board."""
    if change.regression:
        change.regression = False
        change.note = "tail: shown, does not gate"
    return change


_Metric = Callable[[str, RunData, RunData, dict[str, Any], dict[str, Any], float], MetricChange]

METRICS: tuple[_Metric, ...] = (
    _latency_change,
    lambda d, _b, _c, b, c, pct: _informative(
        _estimate_change(d, "latency p90", "ms", b, c, ("latency_ms", "p90"), ("latency_ms", "p90_ci95"), pct)
    ),
    lambda d, _b, _c, b, c, _p: _plain_change(
        d, "throughput", "inf/s", b.get("throughput_ips"), c.get("throughput_ips"), higher_is_worse=False
    ),
    lambda d, _b, _c, b, c, pct: _estimate_change(
        d,
        "energy/inference",
        "mJ",
        b,
        c,
        ("energy", "energy_mj_per_inference"),
        ("energy", "energy_mj_per_inference_ci95"),
        pct,
    ),
    lambda d, _b, _c, b, c, pct: _estimate_change(
        d,
        "dynamic energy/inference",
        "mJ",
        b,
        c,
        ("energy", "dynamic_energy_mj_per_inference"),
        ("energy", "dynamic_energy_mj_per_inference_ci95"),
        pct,
    ),
    lambda d, _b, _c, b, c, _p: _plain_change(
        d, "avg power", "W", get(b, "energy", "avg_power_w"), get(c, "energy", "avg_power_w"), higher_is_worse=True
    ),
    lambda d, _b, _c, b, c, _p: _plain_change(
        d, "peak memory", "MB", b.get("peak_rss_mb"), c.get("peak_rss_mb"), higher_is_worse=True
    ),
)


def compare_runs(
    base: RunData, cand: RunData, fail_on_regression_pct: float | None = None, grid_g_per_kwh: float | None = None
) -> CompareResult:
    """Every metric of every device both runs measured successfully; regressions beyond the PCT gate."""
    min_pct = fail_on_regression_pct if fail_on_regression_pct is not None else 0.0
    base_devices = {d["device"]: d for d in base.document.get("devices") or []}
    cand_devices = {d["device"]: d for d in cand.document.get("devices") or []}
    changes: list[MetricChange] = []
    skipped: list[str] = []
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
        changes += [metric(device, base, cand, b, c, min_pct) for metric in METRICS]
    return CompareResult(base.run_id, cand.run_id, fail_on_regression_pct, changes, skipped, grid_g_per_kwh)


def _change_text(c: MetricChange) -> str:
    if c.change_pct is None:
        return "–"
    return f"{c.change_pct:+.1f}%" if math.isfinite(c.change_pct) else "∞"


def _verdict(c: MetricChange) -> str:
    if c.regression:
        return "❌ regression" + (f" ({c.note})" if c.note else "")
    if c.test in ("none", "missing"):
        return c.note or "–"
    if not c.significant:
        return "no significant change" + (f" ({c.note})" if c.note else "")
    return "significant" + (f" ({c.note})" if c.note else "")


def _test_text(c: MetricChange) -> str:
    if c.test == "mann-whitney":
        return f"Mann-Whitney p={c.p_value:.2g}"
    return {
        "interval-overlap": "95% intervals " + ("disjoint" if c.significant else "overlap"),
        "none": "–",
        "missing": "–",
    }[c.test]


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


def render_markdown(result: CompareResult) -> str:
    gate = result.fail_on_regression_pct
    head = f"### edgeprof compare: `{result.candidate_id}` (candidate) vs `{result.base_id}` (base)\n\n" + (
        f"**{'❌ FAIL' if result.failed else '✅ PASS'}**: "
        f"{len(result.regressions)} significant regression(s) above {num(gate, 3)}%\n\n"
        if gate is not None
        else ""
    )
    rows = ["| device | metric | base | candidate | change | test | verdict |", "|---|---|---:|---:|---:|---|---|"]
    for c in result.changes:
        rows.append(
            f"| {c.device} | {c.metric} ({c.unit}) | {num(c.base)} | {num(c.candidate)} | "
            f"{_change_text(c)} | {_test_text(c)} | {_verdict(c)} |"
        )
    tail = [f"- skipped {s}" for s in result.skipped] + _co2_lines(result)
    return head + "\n".join(rows) + "\n" + ("\n" + "\n".join(tail) + "\n" if tail else "")


def render_text(result: CompareResult) -> str:
    width = max([len(c.device) for c in result.changes] + [6])
    lines = [f"candidate {result.candidate_id} vs base {result.base_id}"]
    for c in result.changes:
        lines.append(
            f"{c.device:<{width}}  {c.metric + ' ' + c.unit:<30} {num(c.base):>10} -> {num(c.candidate):>10}"
            f"  {_change_text(c):>8}  {_test_text(c):<28} {_verdict(c)}"
        )
    lines += [f"skipped {s}" for s in result.skipped] + _co2_lines(result)
    if result.fail_on_regression_pct is not None:
        lines.append(
            f"{'FAIL' if result.failed else 'PASS'}: {len(result.regressions)} significant regression(s) "
            f"above {num(result.fail_on_regression_pct, 3)}%"
        )
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
