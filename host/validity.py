"""Whether a device's result can be trusted, and why not (MLPerf-style rules, reported, never hidden)."""

from __future__ import annotations

from typing import Any

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
    if notes.get("sampler_problems"):
        warnings.append(f"sensor read errors: {notes['sampler_problems']}")
    latency = entry.get("latency_ms") or {}
    if float(latency.get("outlier_fraction") or 0.0) > OUTLIER_WARNING_FRACTION:
        warnings.append(
            f"{latency.get('outliers')} far-out latency outliers ({100 * latency['outlier_fraction']:.1f}%),"
            " kept in the statistics"
        )
    return {"valid": not reasons, "reasons": reasons, "warnings": warnings}
