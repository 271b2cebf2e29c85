"""Whether a device's result can be trusted, and why not (MLPerf-style rules, reported, never hidden)."""

from __future__ import annotations

from typing import Any

from host.analysis import contention
from host.analysis.accelerator import jetson_warnings

#: A result with more far-out latency outliers than this fraction gets a warning, not a failure.
OUTLIER_WARNING_FRACTION = 0.01


def assess(entry: dict[str, Any], runs: int, min_duration_s: float) -> dict[str, Any]:
    """{"valid": bool, "reasons": [...], "warnings": [...]} for one device entry of the result document."""
    reasons: list[str] = []
    warnings: list[str] = []
    if entry.get("status") != "ok":
        return {"valid": False, "reasons": [entry.get("error") or "the job failed"], "warnings": []}
    n = int(entry.get("n_inferences") or 0)
    if n < runs:
        reasons.append(f"measured {n} inferences, fewer than the {runs} required")
    duration = float(entry.get("duration_s") or 0.0)
    if duration + 1e-3 < min_duration_s:
        reasons.append(f"measured for {duration:.2f} s, less than the {min_duration_s:g} s required")
    notes = entry.get("notes") or {}
    if notes.get("warmup_stable") == "false":
        reasons.append(
            f"latency did not stabilise during warmup ({entry.get('n_warmup', 0)} inferences before the time cap)"
        )
    for phase in entry.get("phases") or []:
        if phase["name"] == "settle" and str(phase.get("detail", "")).startswith("not settled"):
            reasons.append(f"the board did not cool down before measuring: {phase['detail']}")
    thermal = entry.get("thermal") or {}
    if thermal.get("throttled"):
        reasons.append(
            "the board throttled during measurement"
            + (f": {thermal['throttle_reason']}" if thermal.get("throttle_reason") else "")
        )
    reasons += _measurement_rules(entry, notes)
    warnings += _measurement_warnings(entry, notes)
    warnings += _quantization_hints(entry)
    warnings += _oversubscription(entry)
    warnings += jetson_warnings(entry)
    load_reasons, load_warnings = contention.findings(entry.get("machine_load"))
    reasons += load_reasons
    warnings += load_warnings
    if notes.get("sampler_problems"):
        warnings.append(f"sensor read errors: {notes['sampler_problems']}")
    latency = entry.get("latency_ms") or {}
    if float(latency.get("outlier_fraction") or 0.0) > OUTLIER_WARNING_FRACTION:
        warnings.append(
            f"{latency.get('outliers')} far-out latency outliers ({100 * latency['outlier_fraction']:.1f}%),"
            " kept in the statistics"
        )
    return {"valid": not reasons, "reasons": reasons, "warnings": warnings}


def _oversubscription(entry: dict[str, Any]) -> list[str]:
    """More intra-op threads than the board has CPU cores (`--threads 64` on 2 cores): said, not silent."""
    threads = int(entry.get("threads") or 0)
    cores = int((entry.get("board") or {}).get("cpu_cores") or 0)
    if cores <= 0 or threads <= cores:
        return []
    return [
        f"{threads} intra-op threads on {cores} CPU cores: threads beyond the cores wait for each other (and spin),"
        f" so the figures are not what the board gives with at most {cores}; leave --threads at 0 or lower it"
    ]


def _quantization_hints(entry: dict[str, Any]) -> list[str]:
    """Why an int8 model may run slower than its float original, where the recipe shows the likely cause."""
    steps = (entry.get("recipe") or {}).get("steps") or []
    if "quantize-int8-dynamic" not in steps:
        return []
    hint = (
        "dynamic int8 quantizes activations at run time on every inference, which can cost more than it saves"
        " on a CPU; compare with the float model (`host ab`) or use --quantize-mode static with --calibration"
    )
    metadata = (entry.get("board") or {}).get("metadata") or {}
    if metadata.get("cpu_int8_dot") == "no":
        hint += "; this CPU has no int8 dot-product instructions (VNNI, SDOT), so int8 kernels gain little here"
    return [hint]


def _measurement_rules(entry: dict[str, Any], notes: dict[str, Any]) -> list[str]:
    """Rules on what was measured: warmup done, no drift, intervals possible, energy honestly formed."""
    reasons: list[str] = []
    if "n_warmup" in entry and int(entry.get("n_warmup") or 0) == 0:
        reasons.append("no warmup inferences: the first (cold caches, lazy initialisation) were measured")
    drift = entry.get("latency_drift") or {}
    if drift.get("drifting"):
        swing = f" over a {100 * drift['swing']:.1f}% swing" if drift.get("swing") is not None else ""
        reasons.append(
            f"latency drifted during measurement{swing} (first quarter p50 {drift['first_quarter_p50_ms']:.3f} ms,"
            f" last {drift['last_quarter_p50_ms']:.3f} ms: {100 * drift['drift']:+.1f}%; change-point"
            f" p={drift['trend_p']:.3g}): not stationary"
        )
    latency = entry.get("latency_ms") or {}
    if latency and latency.get("p50_ci95") is None:
        why = f"{entry.get('n_inferences', 0)} inferences give no 95% interval for p50"
        if latency.get("ci_method"):
            why += f" ({latency['ci_method']})"
        if entry.get("latency_source") != "block_means":  # a phone's blocks: a warning (_measurement_warnings)
            reasons.append(f"too short for its own intervals: {why}")
    energy = entry.get("energy") or {}
    if energy.get("problem"):
        reasons.append(f"energy not measured: {energy['problem']}")
    # A phone's few gauge samples give an interval over its blocks that says what it assumes: a warning instead.
    elif (
        energy.get("energy_mj_per_inference") is not None
        and energy.get("energy_mj_per_inference_ci95") is None
        and not energy.get("ci_assumes")
    ):
        why = f": {energy['interval_problem']}" if energy.get("interval_problem") else ""
        reasons.append(
            f"too short for its own intervals: {energy.get('sample_count')} power samples give no energy interval{why}"
        )
    if energy.get("alias_risk"):
        reasons.append(f"energy may be aliased: {energy['alias_risk']}")
    return reasons


def _measurement_warnings(entry: dict[str, Any], notes: dict[str, Any]) -> list[str]:
    """Doubts worth showing that do not make the result untrustworthy on their own."""
    energy = entry.get("energy") or {}
    warnings = list(energy.get("warnings") or [])
    if energy.get("refused"):
        # A phone on a USB cable: latency is as valid as ever, energy is absent and the user is told why.
        warnings.append(f"energy not measured: {energy['refused']}")
    if energy.get("energy_mj_per_inference_ci95") is None and energy.get("ci_assumes"):
        warnings.append(
            f"energy interval assumes {energy['ci_assumes']}: {energy.get('interval_problem') or ''}".rstrip(": ")
        )
    thermal = entry.get("thermal") or {}
    if thermal.get("throttle_monitored") is False:
        judged = (
            f"judged by temperature alone, against {thermal['trip_temp_c']:.1f} °C"
            if thermal.get("trip_temp_c")
            else "and no temperature limit is known: throttling is unknown"
        )
        warnings.append(f"throttling not monitored: the board reports no CPU frequency or throttle state ({judged})")
    if notes.get("measure_extended"):
        warnings.append(f"measure window extended: {notes['measure_extended']}")
    latency = entry.get("latency_ms") or {}
    if entry.get("latency_source") == "block_means" and latency:
        interval = (
            ""
            if latency.get("p50_ci95")
            else (f"; its p50 interval assumes independent blocks ({latency.get('n')} are too few to check)")
        )
        warnings.append(
            f"latency from {latency.get('n')} block means (a runner invocation each): p50 is their median, close to"
            f" the mean latency; no per-inference p90/p99{interval}"
        )
    if latency.get("p99_reliable") is False:
        warnings.append(
            f"p99 from {latency.get('n')} inferences is unreliable: a tail percentile needs at least "
            f"{latency.get('p99_min_n')} (LoadGen-style minimum count); raise --runs"
        )
    return warnings
