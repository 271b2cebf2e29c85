"""`host compare`: candidate run against base run, per device and metric, with run-level verdicts and a gate.

The run (repetition), not the inference, is the unit of evidence (DESIGN.md §7). A metric's change is the
ratio of the geometric means of the two sides' repetition figures with a bootstrap 95% interval over
repetitions when each side has enough (host/analysis/compare_metrics.py); otherwise its interval uses the
run-to-run spread the store has seen for that device, model and settings (host/analysis/run_history.py); with no
such history only the runs' own intervals remain ("within-run evidence only") and no change below the
noise floor fails the gate. A regression is a one-sided test that the metric is worse by more than the gate,
Holm-adjusted so that all the gated metrics together fail an unchanged candidate at most 5% of the time
(host/analysis/gate.py), and each gated metric says the smallest change it could reliably catch. p50
latency and gross energy gate by default, and when both runs are generative TTFT p50 and decode tokens/s (higher
is better) per prompt length both measured; dynamic energy only when asked (``gate_metrics``); p90,
throughput, power and memory are shown and never gate. Mann-Whitney on raw inferences is informational.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from host.analysis.compare_metrics import (
    PLAIN,
    SPECS,
    MetricChange,
    Side,
    basis_figures,
    generation_specs,
    metric_change,
    plain_change,
)
from host.analysis.document import get, num
from host.analysis.energy import co2e_g
from host.analysis.gate import DETECT_POWER, GATE_ALPHA, detectable_pct, holm_rejections
from host.analysis.run_history import RunHistory
from host.analysis.significance import EVIDENCE_HISTORY, EVIDENCE_REPETITIONS, EVIDENCE_WITHIN_RUN
from host.store.rundata import RunData
from host.store.sqlite import Store, StoreError

#: With within-run evidence only, no change smaller than this fails the gate: the 95% bound of the p50
#: difference between two fresh processes of `example:squeezenet --threads 1` on the 2-core dev box
#: (9.8%, docs/ci-recipe.md says how it was measured), rounded up.
NOISE_FLOOR_PCT = 10.0
#: Metrics that may gate, by the name --gate-metrics takes.
GATEABLE = ("latency-p50", "energy", "dynamic-energy", "ttft-p50", "decode-tokens-per-s")
#: TTFT p50 and decode tokens/s exist only when both runs are generative (per prompt length both measured).
DEFAULT_GATE_METRICS = ("latency-p50", "energy", "ttft-p50", "decode-tokens-per-s")
#: Exit status of a gate that refused to judge: a device's base or candidate result is not valid.
EXIT_NOT_JUDGED = 3
SIDES = ("base", "candidate")


class CompareError(Exception):
    """A run or result file that cannot be compared; the message is one line."""


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
    #: Per compared device, each side's validity as its run recorded it: {"base": {valid, reasons, warnings},
    #: "candidate": {...}}; valid is None for a result that recorded none (an old or hand-made document).
    validity: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: --judge-invalid: the gate judges devices whose results are not valid too.
    judge_invalid: bool = False

    @property
    def invalid_devices(self) -> list[str]:
        """Compared devices whose base or candidate result is not valid."""
        return [d for d, sides in self.validity.items() if any(sides[s]["valid"] is False for s in SIDES)]

    @property
    def valid(self) -> bool | None:
        """Every compared result valid (None when no result recorded its validity)."""
        known = [sides[s]["valid"] for sides in self.validity.values() for s in SIDES if sides[s]["valid"] is not None]
        return None if not known else all(known)

    @property
    def not_judged(self) -> list[str]:
        """Devices the gate leaves unjudged: results not valid, unless --judge-invalid."""
        return [] if self.judge_invalid else self.invalid_devices

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.regression and c.device not in self.not_judged]

    @property
    def failed(self) -> bool:
        return self.fail_on_regression_pct is not None and bool(self.regressions)

    @property
    def untested(self) -> list[MetricChange]:
        """Gated metrics the gate cannot test (no interval to test with) whose change is worse than the gate.

        A PASS over them would be a verdict nobody made: a +300% p50 whose runs withheld their intervals must
        not pass silently."""
        pct = self.fail_on_regression_pct
        if pct is None:
            return []
        return [
            c
            for c in self.changes
            if c.gated
            and c.gate_p_value is None
            and c.device not in self.not_judged
            and c.change_pct is not None
            and (c.change_pct if c.higher_is_worse else -c.change_pct) > max(pct, 0.0)
        ]

    @property
    def refused(self) -> bool:
        """The gate would not judge everything (and found no regression elsewhere): a device's results are not
        valid, or a gated metric worse than the gate has no interval to test."""
        unjudged = bool(self.not_judged) or bool(self.untested)
        return self.fail_on_regression_pct is not None and unjudged and not self.failed

    @property
    def exit_code(self) -> int:
        """1 on a regression, EXIT_NOT_JUDGED when the gate refused to judge (invalid results, untestable
        changes worse than the gate), else 0."""
        return 1 if self.failed else EXIT_NOT_JUDGED if self.refused else 0

    @property
    def within_run_only(self) -> list[str]:
        return sorted({f"{c.device} {c.metric}" for c in self.changes if c.gated and c.test == EVIDENCE_WITHIN_RUN})

    def to_dict(self) -> dict[str, Any]:
        def plain(c: MetricChange) -> dict[str, Any]:
            out = asdict(c)
            out.pop("change", None)
            return out

        return {
            **asdict(self),
            "changes": [plain(c) for c in self.changes],
            "failed": self.failed,
            "regressions": [plain(c) for c in self.regressions],
            "within_run_only": self.within_run_only,
            "valid": self.valid,
            "invalid_devices": self.invalid_devices,
            "not_judged": self.not_judged,
            "refused": self.refused,
            "untested": [f"{c.device} {c.metric}" for c in self.untested],
            "gate_alpha": GATE_ALPHA,
            "gate_test": "one-sided, Holm across the gated metrics",
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
    ("compile recipe", ("recipe", "steps")),
)


def _shown(value: Any) -> str:
    return "–" if value is None else json.dumps(value, default=str) if not isinstance(value, str) else value


def _short_hash(key: str, value: Any) -> Any:
    """A file's sha256 as its first 12 hex digits (enough to tell two files apart on one line)."""
    return value[:12] if key.endswith("_sha256") and isinstance(value, str) else value


def settings_differences(
    base: dict[str, Any], cand: dict[str, Any], pairs: Sequence[tuple[str, dict[str, Any], dict[str, Any]]]
) -> list[str]:
    """What differs between the runs besides the model: run settings, then each device's runtime and board."""
    out = []
    b_set, c_set = base.get("settings") or {}, cand.get("settings") or {}
    for key in sorted((set(b_set) | set(c_set)) - _IGNORED_SETTINGS):
        if b_set.get(key) != c_set.get(key):
            b_shown, c_shown = (_shown(_short_hash(key, v)) for v in (b_set.get(key), c_set.get(key)))
            out.append(f"{key}: {b_shown} (base) vs {c_shown} (candidate)")
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
    judge_invalid: bool = False,
) -> CompareResult:
    """Every metric of every device both runs measured successfully; regressions beyond the PCT gate.

    A device whose base or candidate result is not valid is compared and shown, but the gate does not judge it
    unless `judge_invalid`: its regressions do not fail, and a gate that leaves one unjudged is `refused`.
    """
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
        sides = (Side(base, b), Side(cand, c))
        for spec in (*SPECS, *generation_specs(b, c)):
            change = metric_change(device, spec, *sides, history, gate_pct, gate_metrics)
            changes.append(_with_basis(change, basis_figures(b, spec), basis_figures(c, spec)))
        changes += [plain_change(device, name, unit, get(b, *p), get(c, *p), hw) for name, unit, p, hw in PLAIN]
    apply_gate(changes, gate_pct, noise_floor_pct)
    differences = settings_differences(base.document, cand.document, pairs)
    validity = {device: {"base": _validity(b), "candidate": _validity(c)} for device, b, c in pairs}
    return CompareResult(
        base.run_id,
        cand.run_id,
        fail_on_regression_pct,
        changes,
        skipped,
        grid_g_per_kwh,
        differences,
        noise_floor_pct,
        validity,
        judge_invalid,
    )


#: Control characters (escape sequences start with one) and bidirectional overrides: reasons can quote an
#: agent's words, and this wing may not use host/report/escape.py (a higher one).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _inert(text: Any) -> str:
    return _CONTROL.sub(" ", str(text))


def _markdown_inert(text: str) -> str:
    return re.sub(r"([\\`*_\[\]|<>])", r"\\\1", text)


def _validity(entry: dict[str, Any]) -> dict[str, Any]:
    found = entry.get("validity")
    recorded: dict[str, Any] = found if isinstance(found, dict) else {}
    valid = recorded.get("valid")
    return {
        "valid": valid if isinstance(valid, bool) else None,
        "reasons": [_inert(r) for r in recorded.get("reasons") or []],
        "warnings": [_inert(w) for w in recorded.get("warnings") or []],
    }


def _geometric_mean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _with_basis(change: MetricChange, base: list[float] | None, cand: list[float] | None) -> MetricChange:
    """Record the geometric means a repetitions-based change compares, where they are not the pooled figures.

    `host ab` printed "35.04 -> 35.09  -1.1%": pooled p50s beside a change of the repetitions' geometric means.
    """
    over_repetitions = change.test in (EVIDENCE_REPETITIONS, EVIDENCE_HISTORY)
    if over_repetitions and base and cand and max(len(base), len(cand)) > 1 and min(base + cand) > 0:
        change.base_basis, change.candidate_basis = _geometric_mean(base), _geometric_mean(cand)
    return change


def _beyond_floor(c: MetricChange, noise_floor_pct: float) -> bool:
    """Within-run evidence only knows nothing of run-to-run spread: such a change must also reach the floor."""
    if c.test != EVIDENCE_WITHIN_RUN:
        return True
    worse = c.change_pct if c.higher_is_worse else -(c.change_pct or 0.0)
    return worse is not None and worse >= noise_floor_pct


def apply_gate(changes: list[MetricChange], gate_pct: float, noise_floor_pct: float) -> None:
    """Verdicts in place: Holm over the gated metrics' one-sided p-values, and each one's detectable change."""
    gated = [c for c in changes if c.gated and c.gate_p_value is not None]
    for c, rejected in zip(gated, holm_rejections([c.gate_p_value for c in gated]), strict=True):
        c.regression = rejected and _beyond_floor(c, noise_floor_pct)
        if c.change is not None:
            reach = detectable_pct(c.change, c.higher_is_worse, gate_pct, len(gated))
            if reach is not None and c.test == EVIDENCE_WITHIN_RUN:
                reach = max(reach, noise_floor_pct) if c.higher_is_worse else min(reach, -noise_floor_pct)
            c.detectable_change_pct = reach
    for c in changes:
        worse = c.gate_p_value is not None and c.gate_p_value <= GATE_ALPHA and _beyond_floor(c, noise_floor_pct)
        if not c.gated and worse:
            c.note = (c.note + "; " if c.note else "") + "shown, does not gate"


def _power_line(result: CompareResult) -> list[str]:
    """One line: the smallest change each gated metric could reliably catch in this comparison."""
    parts = [
        f"{c.device} {c.metric} {c.detectable_change_pct:+.1f}%"
        for c in result.changes
        if c.gated and c.detectable_change_pct is not None and math.isfinite(c.detectable_change_pct)
    ]
    if not parts:
        return []
    return [
        f"smallest change this comparison would catch ({DETECT_POWER:.0%} of the time, from its own spread and "
        f"repetitions): " + ", ".join(parts)
    ]


def _change_text(c: MetricChange) -> str:
    if c.change_pct is None:
        return "–"
    return f"{c.change_pct:+.1f}%" if math.isfinite(c.change_pct) else "∞"


def _ci_text(c: MetricChange) -> str:
    return f"[{c.ci_pct[0]:+.1f}%, {c.ci_pct[1]:+.1f}%]" if c.ci_pct else "–"


def _verdict(c: MetricChange, floor_pct: float, not_judged: Sequence[str] = ()) -> str:
    note = f" ({c.note})" if c.note else ""
    if c.regression and c.device in not_judged:
        return "regression, not judged: a result is not valid" + note
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
    if result.refused and result.not_judged:
        return (
            f"NOT JUDGED: the gate does not judge results that are not valid ({', '.join(result.not_judged)});"
            f" make them valid and run again, or pass --judge-invalid (exit {EXIT_NOT_JUDGED})"
        )
    if result.refused:
        worse = ", ".join(f"{c.device} {c.metric} {_change_text(c)}" for c in result.untested)
        return (
            f"NOT JUDGED: worse than the {num(result.fail_on_regression_pct, 3)}% gate with no interval to test it"
            f" ({worse}); run repetitions (`host ab`, or --repeat 3 on both runs) (exit {EXIT_NOT_JUDGED})"
        )
    gated = sum(1 for c in result.changes if c.gated and c.gate_p_value is not None)
    line = (
        f"{'FAIL' if result.failed else 'PASS'}: {len(result.regressions)} regression(s) worse by more than "
        f"{num(result.fail_on_regression_pct, 3)}% (one-sided test, at most {GATE_ALPHA:.0%} false failures across "
        f"the {gated} gated metric(s), Holm)"
    )
    if result.not_judged:
        line += f"; not judged, results not valid: {', '.join(result.not_judged)}"
    return line


def validity_lines(result: CompareResult) -> list[tuple[str, str]]:
    """(label, text) per side of every compared device: NOT VALID with its reasons, each warning, else VALID."""
    lines: list[tuple[str, str]] = []
    for device, sides in result.validity.items():
        for side in SIDES:
            v = sides[side]
            run_id = result.base_id if side == "base" else result.candidate_id
            where = f"{device}, {side} run {run_id}"
            if v["valid"] is False:
                lines.append(("NOT VALID", f"{where}: {'; '.join(v['reasons'])}"))
            elif v["valid"] is True:
                lines.append(("VALID", where))
            lines += [("WARNING", f"{where}: {w}") for w in v["warnings"]]
    return lines


def _figure(c: MetricChange, side: str) -> str:
    """The figure the change compares: the geometric mean of repetitions (marked *) where it is not the pooled one."""
    basis = c.base_basis if side == "base" else c.candidate_basis
    if basis is not None:
        return num(basis) + "*"
    return num(c.base if side == "base" else c.candidate)


def _basis_note(result: CompareResult) -> list[str]:
    if not any(c.base_basis is not None for c in result.changes):
        return []
    return [
        "* geometric mean of the repetitions' figures: what the change and its interval compare (the pooled"
        " figures over every inference are in each run's report and JSON)"
    ]


def render_markdown(result: CompareResult) -> str:
    head = f"### edgeprof compare: `{result.candidate_id}` (candidate) vs `{result.base_id}` (base)\n\n"
    if result.differences:
        head += "**Differs from the base besides the model:**\n\n" + "".join(f"- {d}\n" for d in result.differences)
        head += "\n"
    validity = validity_lines(result)
    if validity:
        icons = {"NOT VALID": "❌ not valid", "VALID": "✅ valid", "WARNING": "⚠️ warning"}
        items = "".join(f"- {icons[label]}: {_markdown_inert(text)}\n" for label, text in validity)
        head += f"**Validity:**\n\n{items}\n"
    if result.fail_on_regression_pct is not None:
        icon = "⛔" if result.refused else "❌" if result.failed else "✅"
        head += f"**{icon} {_gate_line(result)}**\n\n"
        head += "".join(f"{line}\n\n" for line in _power_line(result))
    rows = [
        "| device | metric | base | candidate | change | 95% CI | evidence | verdict | Mann-Whitney p (info) |",
        "|---|---|---:|---:|---:|---|---|---|---:|",
    ]
    for c in result.changes:
        rows.append(
            f"| {c.device} | {c.metric} ({c.unit}) | {_figure(c, 'base')} | {_figure(c, 'candidate')} | "
            f"{_change_text(c)} | {_ci_text(c)} | {_evidence_text(c)} | "
            f"{_verdict(c, result.noise_floor_pct, result.not_judged)} | {_mw_text(c)} |"
        )
    tail = [f"- skipped {s}" for s in result.skipped] + [f"- {line}" for line in _caveats(result)]
    tail += _co2_lines(result)
    tail += [line.replace("* ", "\\* ", 1) for line in _basis_note(result)]
    return head + "\n".join(rows) + "\n" + ("\n" + "\n".join(tail) + "\n" if tail else "")


def render_text(result: CompareResult, width: int | None = None) -> str:
    """Plain text, one line per metric; with `width` (a terminal's) a metric's verdict that does not fit beside
    its figures goes on the next line, and every line longer than `width` is folded at word boundaries under
    an indent, so the terminal never wraps one mid-word."""
    device_width = max([len(c.device) for c in result.changes] + [6])
    indent = device_width + 2
    lines = [f"candidate {result.candidate_id} vs base {result.base_id}"]
    lines += [f"DIFFERS: {d}" for d in result.differences]
    lines += [f"{label}: {text}" for label, text in validity_lines(result)]
    for c in result.changes:
        figures = (
            f"{c.device:<{device_width}}  {c.metric + ' ' + c.unit:<30} {_figure(c, 'base'):>10} ->"
            f" {_figure(c, 'candidate'):>10}  {_change_text(c):>8}  {_ci_text(c):<20} {_evidence_text(c):<12}"
        )
        verdict = _verdict(c, result.noise_floor_pct, result.not_judged)
        if width is not None and len(figures) + 1 + len(verdict) > width and len(figures.rstrip()) <= width:
            lines += [figures.rstrip(), " " * indent + verdict]
        else:
            lines.append(f"{figures} {verdict}")
    lines += [f"skipped {s}" for s in result.skipped] + _caveats(result) + _co2_lines(result) + _basis_note(result)
    if result.fail_on_regression_pct is not None:
        lines += [*_power_line(result), _gate_line(result)]
    if width is not None:
        lines = [_fold(line, width, indent) for line in lines]
    return "\n".join(lines) + "\n"


def _fold(line: str, width: int, indent: int) -> str:
    if len(line) <= width:
        return line
    import textwrap

    lead = len(line) - len(line.lstrip(" "))  # a verdict line keeps its indent when folded further
    return "\n".join(
        textwrap.wrap(
            line.lstrip(" "),
            width=width,
            initial_indent=" " * lead,
            subsequent_indent=" " * max(lead, min(indent, width // 3)),
            break_long_words=False,
            break_on_hyphens=False,
            drop_whitespace=True,
        )
    )


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
