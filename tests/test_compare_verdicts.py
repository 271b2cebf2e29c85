"""`host compare` verdicts: which evidence decides, what gates, what differs, devices on one side only."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from host.analysis.compare import compare_runs, history_for, render_markdown, render_text
from host.cli import _register, app
from host.store.open import open_store
from host.store.rundata import RunData


def _entry(device: str, p50s: list[float], energies: list[float], **extra: Any) -> dict[str, Any]:
    """A device entry as host/analysis/repetitions.py writes it: repetitions plus pooled top-level figures."""
    reps = [
        {
            "index": i,
            "n": 500,
            "p50_ms": p,
            "p90_ms": p * 1.2,
            "energy_mj_per_inference": e,
            "dynamic_energy_mj_per_inference": e / 2,
        }
        for i, (p, e) in enumerate(zip(p50s, energies, strict=True))
    ]
    entry: dict[str, Any] = {
        "device": device,
        "status": "ok",
        "runtime": "onnxruntime 1.20",
        "profile": "generic-linux",
        "threads": 1,
        "latency_ms": {"p50": float(np.median(p50s)), "p90": float(np.median(p50s)) * 1.2, "p50_ci95": None},
        "energy": {
            "energy_mj_per_inference": float(np.mean(energies)),
            "dynamic_energy_mj_per_inference": float(np.mean(energies)) / 2,
        },
        "throughput_ips": 1000 / float(np.median(p50s)),
        "peak_rss_mb": 80.0,
        **extra,
    }
    if len(reps) >= 2:
        entry["repetitions"] = reps
    return entry


def _run(run_id: str, devices: list[dict[str, Any]], threads: int = 1, sha: str = "aa" * 32) -> RunData:
    return RunData(
        document={
            "run_id": run_id,
            "created_at": f"2026-01-01T00:00:{int(run_id[-2:]):02d}+00:00",
            "model": {"path": "m.onnx", "sha256": sha},
            "settings": {"runs": 500, "threads": threads, "reconnect_s": 300.0},
            "devices": devices,
        }
    )


#: The footnote of the starred figures, which are the repetitions' geometric means (issue 29 item 6).
BASIS_NOTE_MD = (
    "\\* geometric mean of the repetitions' figures: what the change and its interval compare (the pooled"
    " figures over every inference are in each run's report and JSON)\n"
)
FIVE = [4.00, 4.04, 3.98, 4.02, 3.96]
ENERGY = [20.0, 20.1, 19.9, 20.05, 19.95]


def test_p90_alone_never_fails_the_gate() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = copy.deepcopy(base.document)
    cand["run_id"] = "cand-02"
    for rep in cand["devices"][0]["repetitions"]:
        rep["p90_ms"] *= 1.5
    cand["devices"][0]["latency_ms"]["p90"] *= 1.5

    result = compare_runs(base, RunData(document=cand), fail_on_regression_pct=5)

    p90 = next(c for c in result.changes if c.metric == "latency p90")
    assert p90.significant and p90.change_pct == pytest.approx(50.0)
    assert not p90.regression and not p90.gated
    assert "does not gate" in p90.note
    assert not result.failed


def test_a_slower_candidate_with_five_repetitions_fails_and_names_the_evidence() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = _run("cand-02", [_entry("pi", [p * 1.12 for p in FIVE], ENERGY)])

    result = compare_runs(base, cand, fail_on_regression_pct=5)
    text = render_text(result)

    p50 = next(c for c in result.changes if c.metric == "latency p50")
    assert p50.test == "repetitions" and p50.regression and p50.gated
    assert p50.ci_pct is not None and p50.ci_pct[0] > 5.0
    assert result.failed and [c.metric for c in result.regressions] == ["latency p50"]
    assert "t over 5 + 5 repetitions, df 8.0" in text and "FAIL: 1 regression(s)" in text


def test_dynamic_energy_gates_only_when_asked() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand_doc = copy.deepcopy(base.document)
    cand_doc["run_id"] = "cand-02"
    for rep in cand_doc["devices"][0]["repetitions"]:
        rep["dynamic_energy_mj_per_inference"] *= 1.3  # idle baseline moved, gross energy did not
    cand = RunData(document=cand_doc)

    default = compare_runs(base, cand, fail_on_regression_pct=5)
    asked = compare_runs(base, cand, fail_on_regression_pct=5, gate_metrics=("latency-p50", "dynamic-energy"))

    assert not default.failed
    assert asked.failed and [c.metric for c in asked.regressions] == ["dynamic energy/inference"]


def test_devices_in_only_one_run_are_shown_and_the_rest_compared() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY), _entry("jetson", FIVE, ENERGY)])
    cand = _run("cand-02", [_entry("pi", FIVE, ENERGY), _entry("nuc", FIVE, ENERGY)])

    result = compare_runs(base, cand, fail_on_regression_pct=5)
    text = render_text(result)

    assert {c.device for c in result.changes} == {"pi"}
    assert result.skipped == ["jetson: only in the base run", "nuc: only in the candidate run"]
    assert "skipped jetson: only in the base run" in text and "skipped nuc: only in the candidate run" in text
    assert not result.failed


def test_different_settings_are_printed_at_the_top_and_a_different_model_is_not() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)], threads=1, sha="aa" * 32)
    cand = _run("cand-02", [_entry("pi", FIVE, ENERGY, runtime="onnxruntime 1.21")], threads=2, sha="bb" * 32)

    result = compare_runs(base, cand)
    md = render_markdown(result)
    text_lines = render_text(result).splitlines()

    assert result.differences == [
        "threads: 1 (base) vs 2 (candidate)",
        "pi: runtime onnxruntime 1.20 (base) vs onnxruntime 1.21 (candidate)",
    ]
    assert md.index("Differs from the base") < md.index("| device | metric |")
    assert text_lines[1:3] == [f"DIFFERS: {d}" for d in result.differences]
    assert compare_runs(base, _run("cand-03", [_entry("pi", FIVE, ENERGY)], sha="cc" * 32)).differences == []


def _single(run_id: str, p50: float, width: float = 0.002) -> RunData:
    """An old-style run: one repetition, no repetitions[], a tight within-run interval."""
    entry = _entry("pi", [p50], [20.0])
    entry["latency_ms"]["p50_ci95"] = [p50 * (1 - width), p50 * (1 + width)]
    entry["energy"]["energy_mj_per_inference_ci95"] = [19.9, 20.1]
    return _run(run_id, [entry])


def test_single_runs_without_history_never_fail_under_the_noise_floor(tmp_path: Path) -> None:
    store = open_store(tmp_path / "runs.sqlite")
    base, cand = _single("base-01", 4.0), _single("cand-02", 4.0 * 1.07)  # 7%: tight intervals, disjoint

    result = compare_runs(base, cand, 5, history=history_for(store, base, cand))
    store.close()

    p50 = next(c for c in result.changes if c.metric == "latency p50")
    assert p50.test == "within-run" and p50.significant and not p50.regression
    assert not result.failed
    assert result.within_run_only == ["pi energy/inference", "pi latency p50"]
    assert "under the 10.0% noise floor" in render_text(result)


def test_single_runs_use_the_run_to_run_spread_the_store_has_seen(tmp_path: Path) -> None:
    store = open_store(tmp_path / "runs.sqlite")
    for i, p50 in enumerate([4.0, 4.01, 3.99, 4.005, 3.995], start=10):  # earlier A/A runs: 0.2% apart
        store.save_run(_single(f"hist-{i:02d}", p50))
    base, cand = _single("base-01", 4.0), _single("cand-02", 4.0 * 1.07)

    quiet = compare_runs(base, cand, 5, history=history_for(store, base, cand))
    for i, p50 in enumerate([3.6, 4.4, 3.8, 4.3], start=20):  # a noisy board: 10% apart
        store.save_run(_single(f"hist-{i:02d}", p50))
    noisy = compare_runs(base, cand, 5, history=history_for(store, base, cand))
    store.close()

    quiet_p50 = next(c for c in quiet.changes if c.metric == "latency p50")
    noisy_p50 = next(c for c in noisy.changes if c.metric == "latency p50")
    assert quiet_p50.test == "history" and quiet_p50.regression and quiet.failed
    assert "from history (df 4)" in quiet_p50.note
    assert noisy_p50.test == "history" and not noisy_p50.regression and not noisy.failed


def test_history_of_other_settings_is_not_used(tmp_path: Path) -> None:
    store = open_store(tmp_path / "runs.sqlite")
    for i, p50 in enumerate([4.0, 4.01, 3.99, 4.005], start=10):
        run = _single(f"hist-{i:02d}", p50)
        run.document["settings"]["threads"] = 4
        store.save_run(run)
    base, cand = _single("base-01", 4.0), _single("cand-02", 4.0 * 1.07)

    result = compare_runs(base, cand, 5, history=history_for(store, base, cand))
    store.close()

    assert next(c for c in result.changes if c.metric == "latency p50").test == "within-run"


def test_cli_gate_metrics_and_stored_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPROF_DB", str(tmp_path / "runs.sqlite"))
    store = open_store()
    store.save_run(_single("base-01", 4.0))
    store.save_run(_single("cand-02", 4.0 * 1.3))
    store.close()
    _register()
    runner = CliRunner()

    failed = runner.invoke(app, ["compare", "base-01", "cand-02", "--fail-on-regression", "5", "--format", "json"])
    bad = runner.invoke(app, ["compare", "base-01", "cand-02", "--gate-metrics", "p99"])

    verdict = json.loads(failed.stdout)
    assert failed.exit_code == 1
    assert [c["metric"] for c in verdict["regressions"]] == ["latency p50"]
    assert verdict["regressions"][0]["test"] == "within-run"
    assert bad.exit_code != 0
    assert "unknown gate metric 'p99'" in bad.output and "Traceback" not in bad.output


def test_old_stored_runs_compare_with_intervals_recomputed_from_their_raw_inferences() -> None:
    from host.report.synthetic import synthetic_run

    base = synthetic_run(n_devices=1, n_inferences=600, unpowered=1)
    cand = copy.deepcopy(base)
    cand.document["run_id"] = "cand"
    device = cand.document["devices"][0]["device"]
    raw = cand.raw[device]
    raw.end_ns = raw.start_ns + (raw.latency_ns * 1.3).astype(np.int64)
    cand.document["devices"][0]["latency_ms"]["p50"] *= 1.3
    for run in (base, cand):  # what an old document might say: an interval that decides nothing
        run.document["devices"][0]["latency_ms"]["p50_ci95"] = [0.001, 1000.0]

    result = compare_runs(base, cand, fail_on_regression_pct=5)

    p50 = next(c for c in result.changes if c.metric == "latency p50")
    assert p50.test == "within-run" and p50.ci_pct is not None
    assert 20.0 < p50.ci_pct[0] < 30.0 < p50.ci_pct[1] < 40.0  # from the raw inferences, not [0.001, 1000]
    assert p50.regression and result.failed
    assert p50.p_value is not None and p50.p_value < 1e-6  # Mann-Whitney: shown, informational


def test_a_repeated_side_lends_its_spread_to_a_single_run() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])  # 5 repetitions: sd of log p50 about 1%
    cand = _single("cand-02", 4.0 * 1.12)

    result = compare_runs(base, cand, fail_on_regression_pct=5)

    p50 = next(c for c in result.changes if c.metric == "latency p50")
    assert p50.test == "history" and "df 4" in p50.note
    assert p50.ci_pct is not None and p50.ci_pct[0] > 5.0 and p50.regression


def test_mann_whitney_on_thousands_of_inferences_no_longer_decides() -> None:
    from host.report.synthetic import synthetic_run

    base = synthetic_run(n_devices=1, n_inferences=5000, unpowered=1)
    cand = copy.deepcopy(base)
    cand.document["run_id"] = "cand"
    device = cand.document["devices"][0]["device"]
    raw = cand.raw[device]
    raw.end_ns = raw.start_ns + (raw.latency_ns * 1.03).astype(np.int64)  # 3%: what a new process start does
    cand.document["devices"][0]["latency_ms"]["p50"] *= 1.03

    result = compare_runs(base, cand, fail_on_regression_pct=1)

    p50 = next(c for c in result.changes if c.metric == "latency p50")
    assert p50.p_value is not None and p50.p_value < 1e-6  # "highly significant" on 5000 inferences a side
    assert p50.test == "within-run" and not p50.regression and not result.failed


# Reports as a whole (issue 18: mutation testing showed the rendered comparison's text unchecked).
def _mixed_runs() -> tuple[RunData, RunData]:
    """pi 12% slower; nano failed in the base, jetson in the candidate (no error text); old/new on one side."""
    base = _run(
        "base-01",
        [
            _entry("pi", FIVE, ENERGY),
            _entry("nano", FIVE, ENERGY, status="error", error="worker died"),
            _entry("jetson", FIVE, ENERGY),
            _entry("old", FIVE, ENERGY),
        ],
    )
    cand = _run(
        "cand-02",
        [
            _entry("pi", [p * 1.12 for p in FIVE], ENERGY),
            _entry("nano", FIVE, ENERGY),
            _entry("jetson", FIVE, ENERGY, status="error"),
            _entry("new", FIVE, ENERGY),
        ],
    )
    return base, cand


GATE_5 = (
    "FAIL: 1 regression(s) worse by more than 5.00% (one-sided test, at most 5% false failures across the"
    " 2 gated metric(s), Holm)"
)
SKIPPED = [
    "nano: failed in the base run (worker died)",
    "jetson: failed in the candidate run (failed)",
    "old: only in the base run",
    "new: only in the candidate run",
]


def test_markdown_of_a_failing_comparison_reads_whole() -> None:
    result = compare_runs(*_mixed_runs(), fail_on_regression_pct=5, grid_g_per_kwh=400)

    md = render_markdown(result)

    assert result.skipped == SKIPPED
    assert md.startswith(
        "### edgeprof compare: `cand-02` (candidate) vs `base-01` (base)\n\n"
        f"**❌ {GATE_5}**\n\n"
        "smallest change this comparison would catch (80% of the time, from its own spread and repetitions):"
        " pi latency p50 +6.7%, pi energy/inference +5.8%\n\n"
        "| device | metric | base | candidate | change | 95% CI | evidence | verdict | Mann-Whitney p (info) |\n"
    )
    rows = md.splitlines()
    p50 = next(r for r in rows if r.startswith("| pi | latency p50 (ms) |"))
    assert p50.endswith(
        "| +12.0% | [+10.7%, +13.3%] | repetitions | ❌ regression (t over 5 + 5 repetitions, df 8.0) | – |"
    )
    assert "| pi | throughput (inf/s) | 250.0 | 223.2 | -10.7% | – | – | no test (lower is worse) | – |" in rows
    assert "| pi | avg power (W) | – | – | – | – | – | not measured | – |" in rows
    assert md.endswith(
        "| pi | peak memory (MB) | 80.00 | 80.00 | +0.0% | – | – | no test (higher is worse) | – |\n\n"
        + "".join(f"- skipped {s}\n" for s in SKIPPED)
        + "- pi: +0 g CO2e per million inferences (estimate: energy × 400 g/kWh)\n"
        + BASIS_NOTE_MD
    )


def test_markdown_of_a_passing_gate_and_of_no_gate() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = _run("cand-02", [_entry("pi", FIVE, ENERGY)])

    gated = render_markdown(compare_runs(base, cand, fail_on_regression_pct=7.5))
    ungated = render_markdown(compare_runs(base, cand))

    assert "\n**✅ PASS: 0 regression(s) worse by more than 7.50% (one-sided test, at most 5% false failures" in gated
    assert "smallest change this comparison would catch" in gated
    assert "PASS" not in ungated and "FAIL" not in ungated
    assert ungated.startswith("### edgeprof compare: `cand-02` (candidate) vs `base-01` (base)\n\n| device |")
    # No skipped devices: after the table only what the starred figures are.
    assert ungated.endswith("| no test (higher is worse) | – |\n\n" + BASIS_NOTE_MD)


def test_text_of_a_failing_comparison_ends_with_the_gate_line() -> None:
    result = compare_runs(*_mixed_runs(), fail_on_regression_pct=5)

    lines = render_text(result).split("\n")

    assert lines[0] == "candidate cand-02 vs base base-01"
    throughput = next(line for line in lines if "throughput" in line)
    assert throughput.startswith("pi      throughput inf/s                    250.0 ->      223.2    -10.7%")
    assert lines[-8:] == [
        *(f"skipped {s}" for s in SKIPPED),
        BASIS_NOTE_MD[1:-1],
        "smallest change this comparison would catch (80% of the time, from its own spread and repetitions):"
        " pi latency p50 +6.7%, pi energy/inference +5.8%",
        GATE_5,
        "",
    ]


def _single_runs_1_5_pct_apart() -> tuple[RunData, RunData]:
    """One repetition a side: p50 4.00 ms [3.98, 4.02] vs 4.06 ms [4.04, 4.08], energy without an interval."""
    base_entry = _entry("pi", [4.0], [20.0])
    base_entry["latency_ms"]["p50_ci95"] = [3.98, 4.02]
    cand_entry = _entry("pi", [4.06], [20.0])
    cand_entry["latency_ms"]["p50_ci95"] = [4.04, 4.08]
    return _run("base-01", [base_entry]), _run("cand-02", [cand_entry])


def test_single_runs_under_the_noise_floor_say_so_in_every_format() -> None:
    from host.analysis.compare import render_json

    base, cand = _single_runs_1_5_pct_apart()

    result = compare_runs(base, cand, fail_on_regression_pct=1)
    lines = render_text(result).splitlines()
    as_json = json.loads(render_json(result))

    assert not result.failed
    p50 = next(line for line in lines if "latency p50" in line)
    assert p50.endswith("within-run   within-run evidence only: under the 10.0% noise floor")
    p90 = next(line for line in lines if "latency p90" in line)
    assert p90.endswith("within-run   no interval (within-run evidence only: no interval)")
    assert (
        "within-run evidence only for pi energy/inference, pi latency p50: no repetitions or earlier runs of the "
        "same model and settings tell the run-to-run spread, so changes under the 10.0% noise floor never fail "
        "the gate (use `host ab` or `--repeat`)"
    ) in lines
    assert as_json["within_run_only"] == ["pi energy/inference", "pi latency p50"]
    # Under a 1% floor the same +1.5% (interval +0.8% to +2.2%, above the 0% default gate) is a regression.
    lower = compare_runs(base, cand, noise_floor_pct=1.0)
    assert next(line for line in render_text(lower).splitlines() if "latency p50" in line).endswith(
        "within-run   ❌ regression (within-run evidence only)"
    )


def test_unknown_gate_metrics_are_refused_naming_the_choices() -> None:
    from host.analysis.compare import DEFAULT_GATE_METRICS, GATEABLE, CompareError, parse_gate_metrics

    choices = ", ".join(GATEABLE)

    assert parse_gate_metrics(None) == DEFAULT_GATE_METRICS
    assert parse_gate_metrics(" energy , latency-p50 ") == ("energy", "latency-p50")
    with pytest.raises(CompareError) as unknown:
        parse_gate_metrics("energy,p95,watts")
    assert str(unknown.value) == f"unknown gate metric 'p95,watts' (choose from {choices})"
    with pytest.raises(CompareError) as empty:
        parse_gate_metrics(" , ")
    assert str(empty.value) == f"unknown gate metric ' , ' (choose from {choices})"


def test_markdown_lists_each_difference_as_json_with_a_dash_for_missing() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = _run("cand-02", [_entry("pi", FIVE, ENERGY)])
    base.document["settings"]["providers"] = ["CPUExecutionProvider"]
    cand.document["settings"]["providers"] = ["XnnpackExecutionProvider", "CPUExecutionProvider"]
    cand.document["settings"]["warmup"] = 10

    md = render_markdown(compare_runs(base, cand))

    assert md.startswith(
        "### edgeprof compare: `cand-02` (candidate) vs `base-01` (base)\n\n"
        "**Differs from the base besides the model:**\n\n"
        '- providers: ["CPUExecutionProvider"] (base) vs ["XnnpackExecutionProvider", "CPUExecutionProvider"]'
        " (candidate)\n"
        "- warmup: – (base) vs 10 (candidate)\n"
        "\n| device | metric |"
    )
    # An A/A pair: the same five repetitions a side.
    p50 = next(r for r in md.splitlines() if r.startswith("| pi | latency p50 (ms) |"))
    assert p50.endswith("| repetitions | no significant change (t over 5 + 5 repetitions, df 8.0) | – |")


def test_the_noise_floor_asked_for_is_the_one_every_format_names() -> None:
    base, cand = _single_runs_1_5_pct_apart()

    result = compare_runs(base, cand, noise_floor_pct=20.0)

    assert result.noise_floor_pct == 20.0
    p50 = next(line for line in render_text(result).splitlines() if "latency p50" in line)
    assert p50.endswith("within-run evidence only: under the 20.0% noise floor")


def _generative(p50s: list[float], ttft_ms: float, tokens_per_s: float) -> dict[str, Any]:
    entry = _entry("jetson", p50s, ENERGY)
    entry["generation"] = [
        {"prompt_len": 16, "ttft_ms": {"p50": ttft_ms}, "decode_tokens_per_s": tokens_per_s},
        {"prompt_len": 64, "ttft_ms": {"p50": ttft_ms * 3}, "decode_tokens_per_s": tokens_per_s * 0.9},
    ]
    return entry


def test_generative_runs_compare_ttft_and_decode_for_each_prompt_both_measured() -> None:
    base = _run("base-01", [_generative(FIVE, 50.0, 40.0)])
    cand_entry = _generative(FIVE, 60.0, 30.0)
    cand_entry["generation"] = cand_entry["generation"][:1]  # the candidate measured prompt 16 only
    result = compare_runs(base, _run("cand-02", [cand_entry]))

    generative = {c.metric: (c.base, c.candidate) for c in result.changes if "prompt" in c.metric}
    assert generative == {"TTFT p50, prompt 16": (50.0, 60.0), "decode tokens/s, prompt 16": (40.0, 30.0)}
    # And none when one side is not generative.
    plain = compare_runs(base, _run("cand-03", [_entry("jetson", FIVE, ENERGY)]))
    assert [c.metric for c in plain.changes if "prompt" in c.metric] == []


def test_co2e_estimate_of_an_energy_change_per_million_inferences() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = _run("cand-02", [_entry("pi", FIVE, [e * 1.1 for e in ENERGY])])  # 20 -> 22 mJ per inference

    md = render_markdown(compare_runs(base, cand, grid_g_per_kwh=400))

    # 2 mJ x 1e6 inferences = 2000 J = 0.000556 kWh; x 400 g/kWh = 0.222 g.
    assert md.endswith("- pi: +0.222 g CO2e per million inferences (estimate: energy × 400 g/kWh)\n" + BASIS_NOTE_MD)


def test_a_significant_improvement_passes_any_gate_and_says_significant() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = _run("cand-02", [_entry("pi", [p * 0.9 for p in FIVE], ENERGY)])

    result = compare_runs(base, cand, fail_on_regression_pct=0)

    p50 = next(r for r in render_markdown(result).splitlines() if r.startswith("| pi | latency p50 (ms) |"))
    assert p50.endswith("| repetitions | significant (t over 5 + 5 repetitions, df 8.0) | – |")
    assert not result.failed


def test_a_regression_within_the_gate_passes_and_beyond_it_fails() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = _run("cand-02", [_entry("pi", [p * 1.03 for p in FIVE], ENERGY)])  # +3%, tight repetitions

    assert not compare_runs(base, cand, fail_on_regression_pct=5).failed
    assert compare_runs(base, cand, fail_on_regression_pct=1).failed


def test_a_device_that_failed_in_the_candidate_is_skipped_with_the_candidates_error() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = _run("cand-02", [{"device": "pi", "status": "error", "error": "worker died"}])

    assert compare_runs(base, cand).skipped == ["pi: failed in the candidate run (worker died)"]


def test_json_keeps_finite_numbers_and_has_null_where_there_is_no_change(tmp_path: Path) -> None:
    from host.analysis.compare import render_json

    base_entry = _entry("pi", FIVE, ENERGY)
    base_entry["peak_rss_mb"] = 0.0  # a change from zero has no percentage
    result = compare_runs(_run("base-01", [base_entry]), _run("cand-02", [_entry("pi", FIVE, ENERGY)]))

    changes = {c["metric"]: c for c in json.loads(render_json(result))["changes"]}
    peak = changes["peak memory"]
    assert (peak["base"], peak["candidate"], peak["change_pct"]) == (0.0, 80.0, None)
    assert changes["throughput"]["base"] == pytest.approx(1000 / 4.0) and changes["throughput"]["change_pct"] == 0.0


def test_history_leaves_out_the_two_runs_being_compared(tmp_path: Path) -> None:
    store = open_store(tmp_path / "runs.sqlite")
    base, cand = _single("base-01", 4.0), _single("cand-02", 4.0 * 1.07)
    store.save_run(base)
    store.save_run(cand)
    store.save_run(_single("hist-04", 4.01))
    # Runs whose model hash is unknown are no history for each other: their models may differ.
    unknown = [_single(f"nohash-{i:02d}", 4.0) for i in (5, 6, 7)]
    for run in unknown:
        run.document["model"]["sha256"] = ""
    store.save_run(unknown[2])

    assert [d["run_id"] for d in history_for(store, base, cand).documents] == ["hist-04"]
    assert history_for(store, unknown[0], unknown[1]).documents == []
    store.close()


def test_markdown_table_right_aligns_the_number_columns() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])

    rows = render_markdown(compare_runs(base, _run("cand-02", [_entry("pi", FIVE, ENERGY)]))).splitlines()

    header = rows.index(
        "| device | metric | base | candidate | change | 95% CI | evidence | verdict | Mann-Whitney p (info) |"
    )
    assert rows[header + 1] == "|---|---|---:|---:|---:|---|---|---|---:|"


def test_a_significant_change_under_the_noise_floor_from_repetitions_says_significant() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY)])
    cand = _run("cand-02", [_entry("pi", [p * 1.03 for p in FIVE], ENERGY)])  # +3%: the floor is for single runs

    result = compare_runs(base, cand, fail_on_regression_pct=5)

    p50 = next(r for r in render_markdown(result).splitlines() if r.startswith("| pi | latency p50 (ms) |"))
    assert p50.endswith("| repetitions | significant (t over 5 + 5 repetitions, df 8.0) | – |")
    assert not result.failed


def test_a_within_run_change_beyond_the_noise_floor_is_not_called_under_it() -> None:
    result = compare_runs(_single("base-01", 4.0), _single("cand-02", 4.0 * 0.7))  # 30% faster

    p50 = next(r for r in render_markdown(result).splitlines() if r.startswith("| pi | latency p50 (ms) |"))
    assert p50 == (
        "| pi | latency p50 (ms) | 4.000 | 2.800 | -30.0% | [-30.2%, -29.8%] | within-run "
        "| significant (within-run evidence only) | – |"
    )


def test_a_within_run_change_of_exactly_the_noise_floor_reaches_it() -> None:
    base = _single("base-01", 4.0)

    faster = compare_runs(base, _single("cand-02", 2.0), noise_floor_pct=50.0)  # exactly -50.0%
    slower = compare_runs(base, _single("cand-03", 6.0), noise_floor_pct=50.0)  # exactly +50.0%

    faster_p50 = next(r for r in render_markdown(faster).splitlines() if r.startswith("| pi | latency p50 (ms) |"))
    assert faster_p50.endswith(
        "| -50.0% | [-50.1%, -49.9%] | within-run | significant (within-run evidence only) | – |"
    )
    assert [c.metric for c in slower.regressions] == ["latency p50"]


def test_a_change_too_large_for_a_float_shows_as_infinity_and_as_null_in_json() -> None:
    from host.analysis.compare import render_json

    # A base figure next to zero: candidate / base overflows a float.
    base = _run("base-01", [_entry("pi", FIVE, ENERGY, peak_rss_mb=1e-306)])
    result = compare_runs(base, _run("cand-02", [_entry("pi", FIVE, ENERGY)]))

    peak = next(r for r in render_markdown(result).splitlines() if r.startswith("| pi | peak memory (MB) |"))
    assert peak.endswith("| 80.00 | ∞ | – | – | no test (higher is worse) | – |")
    changes = {c["metric"]: c for c in json.loads(render_json(result))["changes"]}
    assert changes["peak memory"]["change_pct"] is None


# Validity (issue 29 item 3): said in every format, and a gate that refuses to judge results not valid.
NOT_VALID = {"valid": False, "reasons": ["no warmup inferences: the first were measured"], "warnings": ["p99 few"]}
VALID = {"valid": True, "reasons": [], "warnings": []}


def _slower_invalid_candidate() -> tuple[RunData, RunData]:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY, validity=VALID)])
    cand = _run("cand-02", [_entry("pi", [p * 1.12 for p in FIVE], ENERGY, validity=NOT_VALID)])
    return base, cand


def test_a_gate_refuses_to_judge_a_result_that_is_not_valid_and_says_so_in_every_format() -> None:
    from host.analysis.compare import EXIT_NOT_JUDGED, render_json

    result = compare_runs(*_slower_invalid_candidate(), fail_on_regression_pct=5)
    text, md, as_json = render_text(result), render_markdown(result), json.loads(render_json(result))

    assert not result.failed and result.refused and result.exit_code == EXIT_NOT_JUDGED == 3
    assert "NOT VALID: pi, candidate run cand-02: no warmup inferences: the first were measured" in text
    assert "VALID: pi, base run base-01" in text and "WARNING: pi, candidate run cand-02: p99 few" in text
    assert text.splitlines()[-1].startswith("NOT JUDGED: the gate does not judge results that are not valid (pi)")
    p50 = next(line for line in text.splitlines() if "latency p50" in line)
    assert "regression, not judged: a result is not valid" in p50 and "❌" not in p50
    assert "**Validity:**\n\n- ✅ valid: pi, base run base-01\n- ❌ not valid: pi, candidate run cand-02:" in md
    assert "**⛔ NOT JUDGED:" in md
    assert as_json["valid"] is False and as_json["refused"] is True and as_json["not_judged"] == ["pi"]
    assert as_json["validity"]["pi"]["candidate"]["reasons"] == NOT_VALID["reasons"]
    assert as_json["validity"]["pi"]["base"]["valid"] is True


def test_judge_invalid_lets_the_gate_fail_a_regression_on_results_not_valid() -> None:
    result = compare_runs(*_slower_invalid_candidate(), fail_on_regression_pct=5, judge_invalid=True)

    assert result.failed and result.exit_code == 1 and not result.refused
    assert "NOT VALID: pi, candidate run cand-02" in render_text(result)  # still said


def test_a_regression_on_a_valid_device_fails_even_when_another_is_not_judged() -> None:
    base = _run("base-01", [_entry("pi", FIVE, ENERGY, validity=VALID), _entry("nano", FIVE, ENERGY, validity=VALID)])
    cand = _run(
        "cand-02",
        [
            _entry("pi", [p * 1.12 for p in FIVE], ENERGY, validity=VALID),
            _entry("nano", FIVE, ENERGY, validity=NOT_VALID),
        ],
    )

    result = compare_runs(base, cand, fail_on_regression_pct=5)

    assert result.failed and result.exit_code == 1 and result.not_judged == ["nano"]
    assert render_text(result).splitlines()[-1].endswith("gated metric(s), Holm); not judged, results not valid: nano")


def test_the_figures_beside_a_change_are_the_ones_it_is_computed_from() -> None:
    # Pooled p50s 35.04 -> 35.09 while the repetitions' geometric means fell: what `host ab` printed as
    # "35.04 -> 35.09 -1.1%". The row now shows the geometric means, starred, and their ratio is the change.
    base_reps, cand_reps = [35.04, 35.5, 35.9, 34.6, 35.04], [35.09, 34.6, 35.0, 34.2, 35.09]
    base = _run("base-01", [_entry("pi", base_reps, ENERGY)])
    cand = _run("cand-02", [_entry("pi", cand_reps, ENERGY)])
    base.document["devices"][0]["latency_ms"]["p50"], cand.document["devices"][0]["latency_ms"]["p50"] = 35.04, 35.09

    result = compare_runs(base, cand)
    row = next(line for line in render_text(result).splitlines() if "latency p50" in line)

    p50 = next(c for c in result.changes if c.metric == "latency p50")
    shown = row.split()[4:7]  # pi latency p50 ms "35.22*" "->" "34.80*"
    b, c = (float(x.rstrip("*")) for x in (shown[0], shown[2]))
    assert shown[0].endswith("*") and shown[2].endswith("*") and p50.change_pct is not None
    assert p50.change_pct < 0 and c < b  # sign of the change agrees with the figures beside it
    assert abs((c / b - 1) * 100 - p50.change_pct) < 0.05
    assert (p50.base, p50.candidate) == (35.04, 35.09)  # the pooled figures stay in the JSON
    assert render_text(result).splitlines()[-1].startswith("* geometric mean of the repetitions' figures")


def test_text_folds_at_word_boundaries_to_the_width_given() -> None:
    result = compare_runs(*_slower_invalid_candidate(), fail_on_regression_pct=5)

    lines = render_text(result, width=120).splitlines()
    words = render_text(result).split()

    assert max(len(line) for line in lines) <= 120
    assert " ".join(lines).split() == words  # nothing cut: every word whole, in order
