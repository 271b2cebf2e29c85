"""How precisely the mean of a correlated series is known: its integrated autocorrelation time and a long-run variance.

Consecutive inferences (and consecutive generations, blocks of power samples) share slow state: clocks,
temperature, caches, DVFS. The variance of a mean of n such values is sigma^2 tau / n, where tau, the
integrated autocorrelation time 1 + 2 sum_k rho_k, must see slow components as well as fast ones: a lag-1
correlation does not (fast jitter plus slow wander has a small lag-1 correlation and a large tau).

``mean_precision`` sums the autocovariances over a self-consistent window (Sokal: the smallest M with
M >= WINDOW_FACTOR x tau(M), extended while Geyer's initial pair sums stay positive, so a slow component
that the first window would cut off is kept), and corrects the sum for the mean it was taken around: with
the mean subtracted every autocovariance is too small by about Var(mean), so the window's sum estimates
(n - 2M - 1) Var(mean), not n Var(mean). The estimate's own uncertainty is carried as degrees of freedom
n / (2M + 1) (a truncated lag window, Priestley), so a t interval widens when the window is long against
the series; the result is checked against the means of 8 and 16 coarse batches, which see a weak slow
component the window can miss. When the window would need more than a quarter of the series, or there are
fewer than MIN_VALUES values, the series is too short for its correlation: no estimate, and the reason says so.

What no estimate from one series can see is variation slower than the series itself: a wander of the
thermal state over minutes, a step between process starts. That is run-to-run variance, the repetitions'
business (DESIGN.md §7): bench/RESULTS.md (w) shows where one run's intervals stop covering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from host.analysis.distributions import chi2_sf, regularized_beta

#: Sokal's self-consistent window: lags are summed up to at least this many autocorrelation times.
WINDOW_FACTOR = 3.0
#: Fewest values for which an autocorrelation time is estimated at all.
MIN_VALUES = 50
#: Fewest degrees of freedom an estimate may have and still be given (n / (2M + 1)): a window of at most
#: about a quarter of the series.
MIN_DF = 2.0
#: Coarse batch counts the lag window is checked against (_coarse_check), and the F test's level.
CHECK_BATCHES = (8, 16)
CHECK_ALPHA = 0.2
#: Rounds of the mean correction (each window is chosen on autocovariances corrected by the last Var(mean)).
_ROUNDS = 3


@dataclass(frozen=True)
class MeanPrecision:
    """The variance of a series' mean, its autocorrelation time, and how much the estimate itself is worth.

    ``var_of_mean`` is None (and ``reason`` says why) when the series is too short for its correlation.
    """

    n: int
    var_of_mean: float | None
    #: Integrated autocorrelation time: n Var(mean) / variance; 1 for independent values.
    tau: float
    #: Lags summed.
    window: int
    #: Degrees of freedom of var_of_mean, for a Student-t critical value.
    df: float
    reason: str | None = None

    @property
    def se(self) -> float | None:
        return None if self.var_of_mean is None else math.sqrt(self.var_of_mean)


def autocovariances(values: np.ndarray) -> np.ndarray:
    """Autocovariances at lags 0..n-1 around the series' mean (divisor n - lag), by FFT in O(n log n)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    d = x - x.mean()
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(d, size)
    return np.asarray(np.fft.irfft(spectrum * np.conj(spectrum), size)[:n] / (n - np.arange(n)))


def _window(acov: np.ndarray, limit: int) -> int:
    """The lags to sum: Sokal's self-consistent window, extended over Geyer's initial positive pair sums."""
    rho = acov[1 : limit + 1] / acov[0]
    tau_at = 1.0 + 2.0 * np.cumsum(rho)
    lags = np.arange(1, rho.size + 1)
    consistent = np.flatnonzero(lags >= WINDOW_FACTOR * tau_at)
    sokal = int(lags[consistent[0]]) if consistent.size else limit + 1
    pairs = acov[: 2 * ((limit + 1) // 2)].reshape(-1, 2).sum(axis=1)
    negative = np.flatnonzero(pairs[1:] <= 0.0)
    geyer = int(2 * (negative[0] + 1) - 1) if negative.size else limit + 1
    return max(1, sokal, min(geyer, limit + 1))


def mean_precision(values: np.ndarray) -> MeanPrecision:
    """Var(mean) of a series in its given order, from its autocovariances over a self-consistent window."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n < MIN_VALUES:
        return MeanPrecision(n, None, math.nan, 0, 0.0, f"{n} values are too few to tell how correlated they are")
    acov = autocovariances(x)
    if acov[0] <= 0.0:  # a constant series: its mean is exact
        return MeanPrecision(n, 0.0, 1.0, 0, math.inf)
    variance = float(acov[0]) * n / (n - 1)
    limit = max(1, int((n / MIN_DF - 1) / 2))
    var_of_mean = variance / n
    window = 1
    for _ in range(_ROUNDS):
        # Around the sample mean every autocovariance is short by about Var(mean): put it back before choosing.
        window = _window(acov[: limit + 2] + var_of_mean, limit)
        if window > limit:
            why = f"{n} values are too few for their correlation (it outlasts a quarter of them)"
            return MeanPrecision(n, None, math.nan, window, 0.0, why)
        summed = float(acov[0] + 2.0 * acov[1 : window + 1].sum())
        var_of_mean = max(summed, 0.0) / (n - 2 * window - 1)
    # Negative correlation would shrink the interval below the independent one: not claimed from a noisy sum.
    var_of_mean = max(var_of_mean, variance / n)
    found = MeanPrecision(n, var_of_mean, var_of_mean * n / variance, window, n / (2 * window + 1))
    return _coarse_check(x, found, variance)


def _coarse_check(x: np.ndarray, found: MeanPrecision, variance: float) -> MeanPrecision:
    """The lag window checked against batch means of CHECK_BATCHES coarse batches.

    A weak slow component under strong fast noise (thermal wander under jitter, a drifting power level) hides
    in the noise of the autocovariances and the window stops short of it; the means of a few long batches
    still show it. When their variance says the mean is less precise than the window did (F test at
    CHECK_ALPHA), the batch means' estimate is used, with its B-1 degrees of freedom.
    """
    n, best = x.size, found
    assert found.var_of_mean is not None
    for batches in CHECK_BATCHES:
        size = n // batches
        means = x[: size * batches].reshape(batches, size).mean(axis=1)
        var_of_mean = float(means.var(ddof=1)) * size / n
        ratio = var_of_mean / found.var_of_mean if found.var_of_mean > 0 else math.inf
        if var_of_mean > (best.var_of_mean or 0.0) and _f_sf(ratio, batches - 1, found.df) < CHECK_ALPHA:
            best = MeanPrecision(n, var_of_mean, var_of_mean * n / variance, size, batches - 1)
    return best


def _f_sf(f: float, d1: float, d2: float) -> float:
    """P(F > f) for an F(d1, d2) variable (d2 may be infinite)."""
    if f <= 0:
        return 1.0
    if math.isinf(d2):
        return chi2_sf(f * d1, d1)
    return regularized_beta(d2 / 2.0, d1 / 2.0, d2 / (d2 + d1 * f))


def ratio_precision(numerators: np.ndarray, denominators: np.ndarray) -> MeanPrecision:
    """Var of the ratio sum(numerators) / sum(denominators) over units in order (energy / inferences, time / tokens).

    Linearised: each unit's residual numerator - ratio x denominator is a correlated series, and
    Var(ratio) = (units / sum(denominators))^2 Var(mean residual), from mean_precision of the residuals.
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    total = float(den.sum())
    if num.shape != den.shape or total <= 0:
        raise ValueError("a ratio needs as many numerators as denominators, and a positive total denominator")
    residuals = num - float(num.sum()) / total * den
    if float(np.max(np.abs(residuals), initial=0.0)) <= 1e-9 * float(np.max(np.abs(num), initial=0.0)):
        return MeanPrecision(num.size, 0.0, 1.0, 0, math.inf)  # exactly proportional, up to rounding
    residual = mean_precision(residuals)
    if residual.var_of_mean is None:
        return residual
    return MeanPrecision(
        residual.n, residual.var_of_mean * (num.size / total) ** 2, residual.tau, residual.window, residual.df
    )
