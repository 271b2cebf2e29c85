"""Validity rules: each unmet rule makes a result not valid, with the reason stated."""

from __future__ import annotations

from host.validity import assess


def _ok_entry(**over: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "status": "ok",
        "n_inferences": 200,
        "n_warmup": 10,
        "duration_s": 5.0,
        "notes": {"warmup_stable": "true"},
        "phases": [],
        "thermal": {"throttled": False},
        "latency_ms": {"outlier_fraction": 0.0, "p50_ci95": [1.9, 2.1]},
    }
    entry.update(over)
    return entry


def test_result_meeting_every_rule_is_valid() -> None:
    assert assess(_ok_entry(), runs=100, min_duration_s=2.0) == {"valid": True, "reasons": [], "warnings": []}


def test_too_few_inferences_or_too_short_is_not_valid() -> None:
    verdict = assess(_ok_entry(n_inferences=50, duration_s=1.0), runs=100, min_duration_s=2.0)
    assert verdict["valid"] is False
    assert any("fewer than the 100 required" in r for r in verdict["reasons"])
    assert any("less than the 2 s required" in r for r in verdict["reasons"])


def test_unstable_warmup_unsettled_board_and_throttling_are_reasons() -> None:
    entry = _ok_entry(
        notes={"warmup_stable": "false"},
        thermal={"throttled": True, "throttle_reason": "cpu0 at 60%"},
        phases=[{"name": "settle", "detail": "not settled: 71.0 C after 60 s (limit 50.0 C)"}],
    )
    verdict = assess(entry, runs=100, min_duration_s=2.0)
    assert verdict["valid"] is False and len(verdict["reasons"]) == 3


def test_outliers_warn_but_do_not_invalidate() -> None:
    verdict = assess(_ok_entry(latency_ms={"outlier_fraction": 0.05, "outliers": 10, "p50_ci95": [1.9, 2.1]}), runs=100, min_duration_s=2.0)
    assert verdict["valid"] is True and "outliers" in verdict["warnings"][0]


def test_failed_device_is_not_valid_with_its_error() -> None:
    assert assess({"status": "error", "error": "boom"}, runs=1, min_duration_s=0) == {
        "valid": False,
        "reasons": ["boom"],
        "warnings": [],
    }
