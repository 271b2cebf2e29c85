"""The drift rule sees latency that moved and came back, oscillated or stepped late, and leaves stationary noise alone.

A monotone-trend test (Mann-Kendall over block medians) caught none of a +10% hump, a ±8% sinusoid or a +12%
step in the last fifth (issue 24). Seeded runs of 1000 inferences through the real latency_drift.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from bench.noise_models import BY_NAME, MEDIAN_MS, ar1
from host.analysis.drift import latency_drift

N = 1000


def _windows(latency_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    latency_ns = (latency_ms * 1e6).astype(np.int64)
    starts = 10**9 + np.concatenate(([0], np.cumsum(latency_ns[:-1] + 20_000)))
    return starts, starts + latency_ns


def _flagged(runs: np.ndarray) -> int:
    verdicts = [latency_drift(*_windows(row)) for row in runs]
    assert all(v is not None for v in verdicts)
    return sum(bool(v and v["drifting"]) for v in verdicts)


def _jittered(level: Callable[[np.ndarray], np.ndarray], seed: int, runs: int = 20) -> np.ndarray:
    """AR(0.5) jitter of 3% around a level that follows ``level(fraction of the run)``."""
    fraction = (np.arange(N) + 0.5) / N
    return MEDIAN_MS * np.exp(level(fraction)[None, :] + 0.03 * ar1(np.random.default_rng(seed), runs, N, 0.5))


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("a +10% hump mid-run", lambda f: np.where((f > 0.4) & (f < 0.6), math.log(1.10), 0.0)),
        ("a ±8% sinusoid", lambda f: 0.08 * np.sin(2 * np.pi * f)),
        ("a +12% step in the last fifth", lambda f: np.where(f >= 0.8, math.log(1.12), 0.0)),
    ],
)
def test_latency_that_moves_and_comes_back_or_steps_late_is_not_stationary(
    name: str, level: Callable[[np.ndarray], np.ndarray]
) -> None:
    runs = _jittered(level, seed=len(name))

    assert _flagged(runs) >= 19, name


@pytest.mark.parametrize("model", ["heavy-tail", "two-state", "bimodal", "independent"])
def test_stationary_heavy_tailed_and_two_state_latency_is_rarely_called_drifting(model: str) -> None:
    runs = BY_NAME[model].series(np.random.default_rng(7), 60, N)

    assert _flagged(runs) <= 1  # at most ~2% (bench/RESULTS.md (w): at most 1% over 300 runs)


def test_a_drifting_run_reports_its_swing_and_the_block_latencies() -> None:
    runs = _jittered(lambda f: np.where((f > 0.4) & (f < 0.6), math.log(1.10), 0.0), seed=3, runs=1)

    verdict = latency_drift(*_windows(runs[0]))

    assert verdict is not None and verdict["drifting"]
    assert verdict["swing"] == pytest.approx(0.10, abs=0.03)
    assert abs(verdict["drift"]) < 0.03  # first and last quarter agree: a trend test would have said nothing
    assert verdict["highest_block_ms"] > verdict["lowest_block_ms"] * 1.07
    assert verdict["trend_p"] < 0.01


def test_runs_too_short_for_ten_blocks_of_ten_are_not_judged() -> None:
    assert latency_drift(*_windows(np.full(99, 4.0))) is None
    assert latency_drift(*_windows(np.full(100, 4.0))) == pytest.approx(
        {
            "drift": 0.0,
            "swing": 0.0,
            "lowest_block_ms": 4.0,
            "highest_block_ms": 4.0,
            "first_quarter_p50_ms": 4.0,
            "last_quarter_p50_ms": 4.0,
            "trend_p": 1.0,
            "drifting": False,
        }
    )
