"""Seeded simulation of `host compare` verdicts: A/A pairs pass, a real slowdown fails, intervals cover.

Latency per inference is lognormal around a median that moves with AR(1) drift inside a run (phi = 0.9) and
by a run-level shift from one repetition (process start) to the next, as on real boards. Each simulated run
becomes a result document with ``repetitions`` (the contract host/analysis/repetitions.py writes) and goes through
the real `compare_runs` with ``--fail-on-regression 5``. bench/bench_compare_sim.py runs the same at full size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.analysis.compare import compare_runs
from host.analysis.stats import quantile_interval
from host.store.rundata import RunData

K = 5
PAIRS = 200
GATE_PCT = 5.0
N_PER_REPETITION = 500
PHI = 0.9
WITHIN_SIGMA = 0.05
MEDIAN_MS = 4.0
ENERGY_MJ = 20.0


def ar1(rng: np.random.Generator, rows: int, n: int, phi: float) -> np.ndarray:
    """Stationary AR(1) series with unit marginal variance, one per row."""
    noise = rng.standard_normal((rows, n))
    out = np.empty((rows, n))
    out[:, 0] = noise[:, 0]
    scale = math.sqrt(1.0 - phi * phi)
    for t in range(1, n):
        out[:, t] = phi * out[:, t - 1] + scale * noise[:, t]
    return out


def simulated_runs(
    rng: np.random.Generator, pairs: int, run_shift_sd: float, slowdown: float, repetitions: int = K
) -> tuple[np.ndarray, np.ndarray]:
    """Per-repetition (p50 ms, gross energy mJ) of both sides: arrays of shape (pairs, 2, repetitions, 2).

    Every repetition is a fresh process with its own run-level shift (sd ``run_shift_sd`` on the log scale,
    as `host ab` interleaves A B A B so that no side keeps one state); the candidate is ``slowdown`` times
    slower (and hungrier) on top.
    """
    shape = (pairs, 2, repetitions)
    log_median = math.log(MEDIAN_MS) + rng.normal(0.0, run_shift_sd, size=shape)
    log_median[:, 1, :] += math.log1p(slowdown)
    series = ar1(rng, pairs * 2 * repetitions, N_PER_REPETITION, PHI).reshape(*shape, N_PER_REPETITION)
    p50 = np.median(np.exp(log_median[..., None] + WITHIN_SIGMA * series), axis=-1)
    energy = ENERGY_MJ * np.exp(log_median - math.log(MEDIAN_MS) + rng.normal(0.0, 0.005, size=shape))
    return np.stack((p50, energy), axis=-1), log_median


def document(run_id: str, reps: np.ndarray) -> RunData:
    """A result document with K repetitions for one device; figures pooled as in host/analysis/repetitions.py."""
    entry = {
        "device": "sim",
        "status": "ok",
        "latency_ms": {"p50": float(np.median(reps[:, 0])), "p50_ci95": None, "p90": None},
        "energy": {"energy_mj_per_inference": float(reps[:, 1].mean())},
        "repetitions": [
            {"index": i, "n": N_PER_REPETITION, "p50_ms": float(p), "energy_mj_per_inference": float(e)}
            for i, (p, e) in enumerate(reps)
        ],
    }
    return RunData(document={"run_id": run_id, "model": {"sha256": "m"}, "settings": {}, "devices": [entry]})


def gate_failures(figures: np.ndarray) -> np.ndarray:
    """Which simulated pairs fail `--fail-on-regression 5`, and through which metrics."""
    failed = np.zeros(figures.shape[0], dtype=bool)
    for i, pair in enumerate(figures):
        result = compare_runs(document("base", pair[0]), document("cand", pair[1]), GATE_PCT)
        failed[i] = result.failed
    return failed


@pytest.mark.parametrize("run_shift_sd", [0.01, 0.02])
def test_aa_pairs_rarely_fail_the_5_percent_gate(run_shift_sd: float) -> None:
    rng = np.random.default_rng(int(run_shift_sd * 1000))
    figures, _ = simulated_runs(rng, PAIRS, run_shift_sd, slowdown=0.0)

    failed = gate_failures(figures)

    assert failed.mean() <= 0.05, f"{failed.sum()} of {PAIRS} A/A pairs failed the gate"


@pytest.mark.parametrize(
    ("run_shift_sd", "repetitions", "caught_at_least"),
    [
        (0.01, 5, 0.95),
        # At 2% five a side cannot reach 95%: with the repetition sd s = 2.2% (shift and in-run noise) a 10%
        # change clears the one-sided 5% test of "worse by more than 5%" about 90% of the time
        # (bench/bench_compare_sim.py, RESULTS (j): p50 alone 90.3% of 2000 pairs). --repeat 8 does (99.0%).
        (0.02, 5, 0.88),
        (0.02, 8, 0.95),
    ],
)
def test_a_true_10_percent_slowdown_is_caught(run_shift_sd: float, repetitions: int, caught_at_least: float) -> None:
    rng = np.random.default_rng(100 + int(run_shift_sd * 1000) + repetitions)
    figures, _ = simulated_runs(rng, PAIRS, run_shift_sd, slowdown=0.10, repetitions=repetitions)

    failed = gate_failures(figures)

    assert failed.mean() >= caught_at_least, f"only {failed.sum()} of {PAIRS} 10% slowdowns failed the gate"


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("n", [200, 1000])
def test_p50_interval_covers_the_true_median_93_to_98_percent(phi: float, n: int) -> None:
    datasets = 1000  # coverage 0.95 has a binomial sd of 0.69% here: 93% is 2.9 sd below
    rng = np.random.default_rng(int(phi * 10) * 7 + n)
    latency_ms = MEDIAN_MS * np.exp(WITHIN_SIGMA * ar1(rng, datasets, n, phi))

    intervals = [quantile_interval(row, 0.5) for row in latency_ms]

    given = [iv for iv in intervals if iv.low is not None and iv.high is not None]
    covered = [iv.low <= MEDIAN_MS <= iv.high for iv in given if iv.low is not None and iv.high is not None]
    assert 0.93 <= np.mean(covered) <= 0.98  # the coarse-batch check leans conservative
    assert all(iv.coverage == 0.95 for iv in given)
    # phi 0.9 at n = 200 is ten autocorrelation times: a third of such runs are too short for an interval, and
    # say so (bench/RESULTS.md (w)); everything else gets one.
    assert len(given) >= (0.55 if (phi, n) == (0.9, 200) else 0.97) * datasets
    assert all("too few" in iv.method for iv in intervals if iv.low is None)
