"""One cell of the calibration table each: simulated data through the project's own interval and gate code.

bench/bench_calibration.py lays the cells out; bench/noise_models.py draws the latency. Every function is
seeded by the generator it is given and returns plain figures: coverage among the intervals given as 95%,
the share given, and what the others said. Vectorised numpy for the data, one call of the real function per
simulated run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.noise_models import NoiseModel, ar1
from host.analysis.compare import compare_runs
from host.analysis.energy import EnergyStats, energy_stats
from host.analysis.generation import Generation, decode_rate_ci95
from host.analysis.intervals import batch_means_ci95, pooled_quantile_interval, quantile_interval
from host.store.rundata import PhaseSpan, RunData, Series

S = 1_000_000_000


@dataclass
class Coverage:
    """Of `datasets` simulated runs: how many got a 95% interval, and how many of those covered the truth."""

    datasets: int = 0
    given: int = 0
    covered: int = 0
    #: Runs whose interval was given with its coverage resting on an unchecked assumption, and their hits.
    assumed: int = 0
    assumed_covered: int = 0

    def add(self, low: float | None, high: float | None, truth: float, labelled_95: bool = True) -> None:
        self.datasets += 1
        if low is None or high is None:
            return
        hit = low <= truth <= high
        if labelled_95:
            self.given += 1
            self.covered += hit
        else:
            self.assumed += 1
            self.assumed_covered += hit

    def text(self) -> str:
        """ "95.3% (98% given)", with what the unchecked ones covered where there were any."""
        if not self.given and not self.assumed:
            return f"none given ({self.datasets})"
        parts = []
        if self.given:
            share = f" ({100 * self.given / self.datasets:.0f}% given)" if self.given < self.datasets else ""
            parts.append(f"{100 * self.covered / self.given:.1f}%{share}")
        if self.assumed:
            parts.append(f"if-independent: {100 * self.assumed_covered / self.assumed:.1f}%")
        return "; ".join(parts)

    @property
    def rate(self) -> float | None:
        return self.covered / self.given if self.given else None


def single_run(model: NoiseModel, n: int, q: float, datasets: int, rng: np.random.Generator) -> Coverage:
    """quantile_interval on one run of n inferences: coverage of the model's true q-quantile."""
    truth = model.truth(q)
    cell = Coverage()
    for row in model.series(rng, datasets, n):
        iv = quantile_interval(row, q)
        cell.add(iv.low, iv.high, truth, labelled_95=iv.as_ci95() is not None)
    return cell


def pooled(model: NoiseModel, k: int, n: int, q: float, datasets: int, rng: np.random.Generator) -> Coverage:
    """pooled_quantile_interval over K repetitions of n: coverage of the process's quantile, run shifts included."""
    truth = model.pooled_truth(q)
    runs = (
        model.series(rng, datasets * k, n).reshape(datasets, k, n) * np.exp(model.shifts(rng, (datasets, k)))[..., None]
    )
    cell = Coverage()
    for groups in runs:
        iv = pooled_quantile_interval(list(groups), q)
        cell.add(iv.low, iv.high, truth, labelled_95=iv.as_ci95() is not None)
    return cell


# --- energy -------------------------------------------------------------------------------------------------

#: Power noise models: (name, white sd W, correlated sd W, correlation time s, level-wander sd W, its time s).
ENERGY_MODELS = (
    ("white power noise", 0.25, 0.0, 0.0, 0.0, 0.0),
    ("power correlated over 0.2 s", 0.05, 0.25, 0.2, 0.0, 0.0),
    ("power correlated over 1 s", 0.05, 0.25, 1.0, 0.0, 0.0),
    ("level wandering within the idle span (0.5 s)", 0.25, 0.0, 0.0, 0.1, 0.5),
    ("level wandering slower than the run (5 s)", 0.25, 0.0, 0.0, 0.1, 5.0),
)


def energy_tau_s(model: tuple[str, float, float, float, float, float]) -> float:
    """The model's integrated autocorrelation time in seconds: twice its slowest correlation time (an OU process)."""
    return 2.0 * max(model[3], model[5], 0.005)


def energy_run_s(n: int) -> float:
    """The measured window of n inferences, in seconds."""
    return n * INFERENCE_MS / 1e3


BUSY_W, IDLE_W, INFERENCE_MS, IDLE_S = 5.0, 3.0, 10.0, 3.0
#: The long-run truths: gross and dynamic energy per inference in mJ (latency lognormal sigma 0.05 around 10 ms).
ENERGY_TRUTHS = (
    BUSY_W * INFERENCE_MS * math.exp(0.05**2 / 2),
    (BUSY_W - IDLE_W) * INFERENCE_MS * math.exp(0.05**2 / 2),
)


def _ou(rng: np.random.Generator, length: int, sd: float, tau_s: float, dt_s: float) -> np.ndarray:
    if sd == 0.0:
        return np.zeros(length)
    return sd * ar1(rng, 1, length, math.exp(-dt_s / tau_s))[0]


def energy_run(model: tuple[str, float, float, float, float, float], n: int, rng: np.random.Generator) -> EnergyStats:
    """energy_stats of one simulated run: a 3 s idle span at 3 W, then n back-to-back inferences at 5 W, power
    sampled every 7-13 ms with the model's noise on top (white, correlated, a wandering level on everything)."""
    _, white, corr_sd, corr_s, level_sd, level_s = model
    length = int((IDLE_S + n * INFERENCE_MS * 1.3 / 1e3 + 1.0) / 0.010)
    noise = (
        rng.normal(0.0, white, length)
        + _ou(rng, length, corr_sd, corr_s, 0.01)
        + _ou(rng, length, level_sd, level_s, 0.01)
    )
    latency_ns = (INFERENCE_MS * 1e6 * np.exp(0.05 * ar1(rng, 1, n, 0.5)[0])).astype(np.int64)
    t_ns = S + np.concatenate(([0], np.cumsum(rng.integers(7_000_000, 13_000_001, length - 1))))
    starts = S + int(IDLE_S * S) + 50_000_000 + np.concatenate(([0], np.cumsum(latency_ns[:-1])))
    ends = starts + latency_ns
    busy = (t_ns >= starts[0]) & (t_ns <= ends[-1])
    rail = Series("VDD_IN", "power_mw", "total", "sim", t_ns, (np.where(busy, BUSY_W, IDLE_W) + noise) * 1e3)
    idle = PhaseSpan("idle", S, S + int(IDLE_S * S))
    return energy_stats([rail], PhaseSpan("measure", int(starts[0]), int(ends[-1])), idle, starts, ends)


def energy(
    model: tuple[str, float, float, float, float, float], n: int, datasets: int, rng: np.random.Generator
) -> tuple[Coverage, Coverage]:
    """(gross, dynamic) coverage of one run's 95% intervals of the long-run truths."""
    cells = (Coverage(), Coverage())
    for _ in range(datasets):
        stats = energy_run(model, n, rng)
        cells[0].add(*(stats.energy_mj_per_inference_ci95 or (None, None)), ENERGY_TRUTHS[0])
        cells[1].add(*(stats.dynamic_energy_mj_per_inference_ci95 or (None, None)), ENERGY_TRUTHS[1])
    return cells


def energy_repeated(
    model: tuple[str, float, float, float, float, float], k: int, n: int, datasets: int, rng: np.random.Generator
) -> tuple[Coverage, Coverage]:
    """(gross, dynamic) coverage of the interval over K repetitions (each its own idle span), as `--repeat K`
    pools them: a Student-t interval over the repetitions' figures (host/analysis/repetitions.py)."""
    cells = (Coverage(), Coverage())
    for _ in range(datasets):
        reps = [energy_run(model, n, rng) for _ in range(k)]
        for cell, figures, truth in zip(
            cells,
            ([r.energy_mj_per_inference for r in reps], [r.dynamic_energy_mj_per_inference for r in reps]),
            ENERGY_TRUTHS,
            strict=True,
        ):
            values = np.array([v for v in figures if v is not None])
            low, high = batch_means_ci95(values) if values.size == k else (None, None)
            cell.add(low, high, truth)
    return cells


def phone_blocks(
    datasets: int, rng: np.random.Generator, startup_s: float = 0.5
) -> tuple[list[float], list[float], Coverage]:
    """A phone's 10 runner blocks of 20 inferences (10 ms) with busy start-ups between, a 10 Hz gauge.

    Returns the relative errors of energy per inference over the blocks' windows and over the whole span
    (the old window), and the coverage of the interval given (95%, or over blocks with its assumption).
    """
    new_err, old_err, cell = [], [], Coverage()
    truth = BUSY_W * INFERENCE_MS
    for _ in range(datasets):
        starts = []
        t = S + int(startup_s * S)
        for _block in range(10):
            starts.append(t + np.arange(20) * 10_000_000)
            t += 20 * 10_000_000 + int(startup_s * S)
        start_ns = np.concatenate(starts)
        end_ns = start_ns + 10_000_000
        t_ns = S + np.concatenate(([0], np.cumsum(rng.integers(80_000_000, 120_000_001, 80))))
        rail = Series("battery", "power_mw", "total", "sim", t_ns, (BUSY_W + rng.normal(0.0, 0.25, t_ns.size)) * 1e3)
        measure = PhaseSpan("measure", int(start_ns[0]), int(end_ns[-1]))
        blocks = energy_stats([rail], measure, None, start_ns, end_ns, in_blocks=True)
        whole = energy_stats([rail], measure, None, start_ns, end_ns)
        new_err.append((blocks.energy_mj_per_inference or math.nan) / truth - 1)
        old_err.append((whole.energy_mj_per_inference or math.nan) / truth - 1)
        interval = blocks.energy_mj_per_inference_ci95 or blocks.energy_mj_per_inference_ci or (None, None)
        cell.add(*interval, truth, labelled_95=blocks.energy_mj_per_inference_ci95 is not None)
    return new_err, old_err, cell


# --- generation ---------------------------------------------------------------------------------------------

ITL_MS, TTFT_MS, TOKENS = 5.0, 30.0, 16


def generative(
    generations: int, persist: float, datasets: int, rng: np.random.Generator
) -> tuple[Coverage, Coverage, Coverage, Coverage]:
    """Generations whose tokens share the generation's speed (sd 5%), that speed AR(persist) across generations.

    Returns coverage of ITL p50 clustered by generation, ITL p50 with tokens as one series (before), TTFT p50
    (one value per generation, in order), and decode tokens/s (decode_rate_ci95).
    """
    speed = np.exp(0.05 * ar1(rng, datasets, generations, persist))
    itl = ITL_MS * speed[..., None] * np.exp(0.03 * rng.standard_normal((datasets, generations, TOKENS - 1)))
    ttft = TTFT_MS * speed * np.exp(0.03 * rng.standard_normal((datasets, generations)))
    rate_truth = 1e3 / (ITL_MS * math.exp((0.05**2 + 0.03**2) / 2))
    cells = (Coverage(), Coverage(), Coverage(), Coverage())
    gen_ids = np.repeat(np.arange(generations), TOKENS - 1)
    for d in range(datasets):
        clustered = quantile_interval(itl[d].ravel(), 0.5, clusters=gen_ids)
        flat = quantile_interval(itl[d].ravel(), 0.5)
        first = quantile_interval(ttft[d], 0.5)
        cells[0].add(clustered.low, clustered.high, ITL_MS, clustered.as_ci95() is not None)
        cells[1].add(flat.low, flat.high, ITL_MS, flat.as_ci95() is not None)
        cells[2].add(first.low, first.high, TTFT_MS, first.as_ci95() is not None)
        gens, t = [], S
        for g in range(generations):
            tokens = t + int(ttft[d, g] * 1e6) + np.concatenate(([0], np.cumsum(itl[d, g] * 1e6))).astype(np.int64)
            gens.append(Generation(16, t, int(tokens[0]), tokens))
            t = int(tokens[-1]) + 1_000_000
        rate = decode_rate_ci95(gens)
        cells[3].add(*(rate or (None, None)), rate_truth)
    return cells


# --- the gate -----------------------------------------------------------------------------------------------

GATE_PCT = 5.0
ENERGY_MJ = 20.0
#: Within-run noise of a repetition's energy per inference (its own sensor and window), on the log scale.
ENERGY_NOISE_SD = 0.015


def _document(run_id: str, p50: np.ndarray, energy_mj: np.ndarray) -> RunData:
    entry = {
        "device": "sim",
        "status": "ok",
        "latency_ms": {"p50": float(np.median(p50)), "p50_ci95": None, "p90": None},
        "energy": {"energy_mj_per_inference": float(energy_mj.mean())},
        "repetitions": [
            {"index": i, "n": 200, "p50_ms": float(p), "energy_mj_per_inference": float(e)}
            for i, (p, e) in enumerate(zip(p50, energy_mj, strict=True))
        ],
    }
    return RunData(document={"run_id": run_id, "model": {"sha256": "m"}, "settings": {}, "devices": [entry]})


@dataclass
class GateCell:
    """Of `pairs` comparisons: failures of the gate (Holm over p50 and energy), of each metric alone at 5%,
    of the old rule (either metric's two-sided 95% lower end above PCT), and the detectable changes said."""

    pairs: int = 0
    family: int = 0
    p50_alone: int = 0
    energy_alone: int = 0
    old: int = 0
    detect_p50: list[float] | None = None
    detect_energy: list[float] | None = None


def gate(
    model: NoiseModel,
    k: int,
    change: float,
    pairs: int,
    rng: np.random.Generator,
    n: int = 200,
    run_shift_sd: float | None = None,
) -> GateCell:
    """`compare_runs --fail-on-regression 5` on simulated K-repetition pairs whose candidate is `change` worse
    (run-to-run shift: the model's own, or normal with ``run_shift_sd``)."""
    shape = (pairs, 2, k)
    shift = model.shifts(rng, shape) if run_shift_sd is None else rng.normal(0.0, run_shift_sd, shape)
    shift[:, 1, :] += math.log1p(change)
    p50 = np.median(model.series(rng, pairs * 2 * k, n), axis=1).reshape(shape) * np.exp(shift)
    energy_mj = ENERGY_MJ * np.exp(shift + rng.normal(0.0, ENERGY_NOISE_SD, shape))
    cell = GateCell(detect_p50=[], detect_energy=[])
    for i in range(pairs):
        result = compare_runs(
            _document("base", p50[i, 0], energy_mj[i, 0]), _document("cand", p50[i, 1], energy_mj[i, 1]), GATE_PCT
        )
        by = {c.metric: c for c in result.changes}
        lat, en = by["latency p50"], by["energy/inference"]
        cell.pairs += 1
        cell.family += result.failed
        cell.p50_alone += (lat.gate_p_value or 1.0) <= 0.05
        cell.energy_alone += (en.gate_p_value or 1.0) <= 0.05
        cell.old += any(c.ci_pct is not None and c.ci_pct[0] > GATE_PCT for c in (lat, en))
        assert cell.detect_p50 is not None and cell.detect_energy is not None
        cell.detect_p50.append(lat.detectable_change_pct or math.nan)
        cell.detect_energy.append(en.detectable_change_pct or math.nan)
    return cell
