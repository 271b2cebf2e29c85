"""Latency noise as boards make it, for calibrating the intervals and the gate (bench/bench_calibration.py).

Each model draws per-inference latency series in measurement order (rows x n, ms) and, separately, independent
draws of the distribution a run of it samples: the stationary marginal, or for a run whose level moves on a
schedule (a step, a drift), the mixture over the run's time. The truth a "95%" interval must cover is that
distribution's quantile (by Monte Carlo over MARGINAL_DRAWS draws, far more precise than any interval here).
Repetitions add a run-level shift per process start (RUN_SHIFT_SD on the log scale), and the outlying-
repetition model a rare large one. Vectorised numpy; seeded by the caller's generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

MEDIAN_MS = 4.0
#: Run-to-run (process start) shift of the log latency between repetitions.
RUN_SHIFT_SD = 0.02
MARGINAL_DRAWS = 2_000_000


def ar1(rng: np.random.Generator, rows: int, n: int, phi: float) -> np.ndarray:
    """Stationary AR(1) series with unit marginal variance, one per row (a linear filter, vectorised over rows)."""
    noise = rng.standard_normal((rows, n))
    if phi == 0.0:
        return noise
    out = np.empty((rows, n))
    out[:, 0] = noise[:, 0]
    scale = math.sqrt(1.0 - phi * phi)
    for t in range(1, n):
        out[:, t] = phi * out[:, t - 1] + scale * noise[:, t]
    return out


def markov_states(rng: np.random.Generator, rows: int, n: int, dwell: tuple[float, float]) -> np.ndarray:
    """Two-state Markov chains (0/1) with mean dwell times ``dwell`` inferences, started from the stationary law."""
    leave = np.array([1.0 / dwell[0], 1.0 / dwell[1]])
    p_one = dwell[1] / (dwell[0] + dwell[1])
    state = (rng.random(rows) < p_one).astype(np.int64)
    out = np.empty((rows, n), dtype=np.int64)
    flips = rng.random((rows, n))
    for t in range(n):
        out[:, t] = state
        state = np.where(flips[:, t] < leave[state], 1 - state, state)
    return out


def _fraction(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


@dataclass(frozen=True)
class NoiseModel:
    """One kind of latency noise: ``series(rng, rows, n)`` in measurement order, ``marginal(rng, size)`` iid."""

    name: str
    description: str
    series: Callable[[np.random.Generator, int, int], np.ndarray]
    marginal: Callable[[np.random.Generator, int], np.ndarray]
    #: Its integrated autocorrelation time in inferences (None: not stationary within a run, a step or drift).
    tau: float | None = 1.0
    #: Repetition-level: the log shift of each of rows x k repetitions (default: normal, RUN_SHIFT_SD).
    run_shift: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None
    #: How often a repetition is an outlier (a rare run-level event K repetitions may all miss).
    rare_run_rate: float = 0.0

    def shifts(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.run_shift is not None:
            return self.run_shift(rng, shape)
        return rng.normal(0.0, RUN_SHIFT_SD, size=shape)

    def truth(self, q: float) -> float:
        return _truth(self.name, q)

    def pooled_truth(self, q: float) -> float:
        """The quantile of the distribution repetitions sample: the marginal times each run's shift."""
        return _pooled_truth(self.name, q)


def _lognormal(sigma: float, phi: float) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    return (
        lambda rng, rows, n: MEDIAN_MS * np.exp(sigma * ar1(rng, rows, n, phi)),
        lambda rng, size: MEDIAN_MS * np.exp(sigma * rng.standard_normal(size)),
    )


def _heavy_series(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    body = MEDIAN_MS * np.exp(0.04 * ar1(rng, rows, n, 0.5))
    return body * _stragglers(rng, (rows, n))


def _stragglers(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """3% of inferences are stragglers, 1 + 0.5 x Pareto(1.5) times slower (page faults, preemption)."""
    hit = rng.random(shape) < 0.03
    return np.where(hit, 1.0 + 0.5 * (rng.pareto(1.5, shape) + 1.0), 1.0)


def _two_state(dwell: tuple[float, float]) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    """A slow state 35% slower than the fast one, mean dwell times ``dwell`` (fast, slow) inferences, 2% jitter."""
    return (
        lambda rng, rows, n: (
            MEDIAN_MS * np.exp(0.3 * markov_states(rng, rows, n, dwell) + 0.02 * rng.standard_normal((rows, n)))
        ),
        lambda rng, size: (
            MEDIAN_MS * np.exp(0.3 * (rng.random(size) < dwell[1] / sum(dwell)) + 0.02 * rng.standard_normal(size))
        ),
    )


def _bimodal_series(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    return _bimodal_marginal(rng, rows * n).reshape(rows, n) * np.exp(0.02 * ar1(rng, rows, n, 0.5))


def _bimodal_marginal(rng: np.random.Generator, size: int) -> np.ndarray:
    """15% of inferences miss a cache and take 40% longer; independent of each other."""
    return MEDIAN_MS * np.exp(0.34 * (rng.random(size) < 0.15))


def _bimodal_marginal_full(rng: np.random.Generator, size: int) -> np.ndarray:
    return _bimodal_marginal(rng, size) * np.exp(0.02 * rng.standard_normal(size))


def _fast_slow_series(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """Fast jitter (AR 0.5) and slow thermal wander (AR 0.98, tau ~ 100 inferences), equal shares of variance."""
    return MEDIAN_MS * np.exp(0.03 * ar1(rng, rows, n, 0.5) + 0.03 * ar1(rng, rows, n, 0.98))


def _fast_slow_marginal(rng: np.random.Generator, size: int) -> np.ndarray:
    return MEDIAN_MS * np.exp(0.03 * math.sqrt(2.0) * rng.standard_normal(size))


def _scheduled(
    level: Callable[[np.ndarray], np.ndarray],
) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    """A run whose log level follows ``level(fraction of the run)`` on top of AR(0.5) jitter (sigma 0.03)."""
    return (
        lambda rng, rows, n: MEDIAN_MS * np.exp(level(_fraction(n))[None, :] + 0.03 * ar1(rng, rows, n, 0.5)),
        lambda rng, size: MEDIAN_MS * np.exp(level(rng.random(size)) + 0.03 * rng.standard_normal(size)),
    )


def _step(fraction: np.ndarray) -> np.ndarray:
    return np.where(fraction >= 0.7, math.log(1.08), 0.0)


def _drift(fraction: np.ndarray) -> np.ndarray:
    return np.log1p(0.06 * fraction)


def _outlying_shift(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Run shifts with an outlier: one repetition in twenty lands 15% slow (a bad core, a background job)."""
    return rng.normal(0.0, RUN_SHIFT_SD, size=shape) + np.where(rng.random(shape) < 0.05, math.log(1.15), 0.0)


_INDEPENDENT = _lognormal(0.05, 0.0)
_AR = _lognormal(0.05, 0.9)
_STEP = _scheduled(_step)
_DRIFT = _scheduled(_drift)

MODELS: tuple[NoiseModel, ...] = (
    NoiseModel("independent", "lognormal sigma 0.05, independent inferences", *_INDEPENDENT),
    NoiseModel("ar1-0.9", "lognormal sigma 0.05 with AR(1) phi 0.9 (issue 11's model)", *_AR, tau=19.0),
    NoiseModel(
        "heavy-tail",
        "AR(0.5) lognormal sigma 0.04 body, 3% stragglers 1 + 0.5 Pareto(1.5) times slower",
        _heavy_series,
        lambda rng, size: MEDIAN_MS * np.exp(0.04 * rng.standard_normal(size)) * _stragglers(rng, (size,)),
        tau=3.0,
    ),
    NoiseModel(
        "two-state",
        "DVFS/cache states: +35% slow state, mean dwell 8 fast / 5 slow inferences, 2% jitter",
        *_two_state((8.0, 5.0)),
        tau=5.2,
    ),
    NoiseModel(
        "slow-states",
        "the same states dwelling 40 fast / 25 slow inferences: a run of 200 sees about six switches",
        *_two_state((40.0, 25.0)),
        tau=29.8,
    ),
    NoiseModel(
        "bimodal",
        "15% of inferences 40% slower, independently; AR(0.5) 2% jitter",
        _bimodal_series,
        _bimodal_marginal_full,
        tau=1.2,
    ),
    NoiseModel(
        "fast+slow",
        "fast AR(0.5) jitter and slow AR(0.98) thermal wander, 3% each",
        _fast_slow_series,
        _fast_slow_marginal,
        tau=51.0,
    ),
    NoiseModel("step", "+8% step at 70% of the run, AR(0.5) 3% jitter", *_STEP, tau=None),
    NoiseModel("slow-drift", "linear drift to +6% over the run, AR(0.5) 3% jitter", *_DRIFT, tau=None),
    NoiseModel(
        "outlying-rep",
        "AR(0.5) lognormal 3%; one repetition in twenty 15% slower",
        *_lognormal(0.03, 0.5),
        tau=3.0,
        run_shift=_outlying_shift,
        rare_run_rate=0.05,
    ),
)

BY_NAME = {m.name: m for m in MODELS}


@cache
def _truth(name: str, q: float) -> float:
    rng = np.random.default_rng(12345)
    return float(np.quantile(BY_NAME[name].marginal(rng, MARGINAL_DRAWS), q))


@cache
def _pooled_truth(name: str, q: float) -> float:
    model = BY_NAME[name]
    rng = np.random.default_rng(54321)
    draws = model.marginal(rng, MARGINAL_DRAWS) * np.exp(model.shifts(rng, (MARGINAL_DRAWS,)))
    return float(np.quantile(draws, q))
