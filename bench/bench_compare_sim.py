"""(j) Seeded simulation of `host compare` at full size: gate false failures and power per metric, p50 coverage.

Issue 11's model (lognormal latency with AR(1) phi 0.9 inside a run and a run-level shift per repetition, each
side K repetitions) through the real compare_runs with --fail-on-regression 5, now with energy that has its own
within-run noise (1.5% per repetition) so that each gated metric's power can be read alone: p50 alone is what
a board without a power sensor gets. The gate is one-sided with Holm across p50 and energy (host/analysis/
gate.py); "before" is the previous rule, either metric's two-sided 95% interval wholly above 5%, no Holm.
The p50 interval's coverage of the true median comes from quantile_interval on single runs.

    .venv/bin/python bench/bench_compare_sim.py --record   # ~2 min on one core; writes bench/RESULTS.md (j)
    .venv/bin/python bench/bench_compare_sim.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calibration_cells import ENERGY_NOISE_SD, GATE_PCT, gate
from bench.harness import Row, load_average, record
from bench.noise_models import BY_NAME, MEDIAN_MS, ar1
from host.analysis.stats import quantile_ci, quantile_interval

WITHIN_SIGMA = 0.05


def coverage(rng: np.random.Generator, datasets: int, n: int, phi: float) -> tuple[float, float, float]:
    """(coverage of the intervals given, share given, old independence-assuming interval's coverage)."""
    latency = MEDIAN_MS * np.exp(WITHIN_SIGMA * ar1(rng, datasets, n, phi))
    new = [quantile_interval(row, 0.5) for row in latency]
    given = [iv for iv in new if iv.low is not None and iv.high is not None]
    covered = np.mean([iv.low <= MEDIAN_MS <= iv.high for iv in given if iv.low is not None and iv.high is not None])
    old = np.mean([lo <= MEDIAN_MS <= hi for lo, hi in (quantile_ci(np.sort(row), 0.5) for row in latency)])
    return float(covered), len(given) / datasets, float(old)


def _pct(count: int, of: int) -> str:
    return f"{100 * count / of:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 pairs and 500 datasets per cell")
    parser.add_argument("--record", action="store_true", help="write the section of bench/RESULTS.md")
    args = parser.parse_args()
    pairs, datasets = (200, 500) if args.quick else (2000, 4000)
    model = BY_NAME["ar1-0.9"]
    rows: list[Row] = []
    began = time.perf_counter()
    for sd in (0.01, 0.02):
        for k in (3, 5, 8):
            cells = {
                c: gate(model, k, c, pairs, np.random.default_rng([k, int(sd * 1000), int(c * 100)]), 500, sd)
                for c in (0.0, 0.05, 0.10)
            }
            aa, edge, slow = cells[0.0], cells[0.05], cells[0.10]
            said = (np.nanmedian(slow.detect_p50 or [np.nan]), np.nanmedian(slow.detect_energy or [np.nan]))
            measured = (
                f"A/A: gate {_pct(aa.family, pairs)}. Exactly 5% worse: gate {_pct(edge.family, pairs)}, p50 alone"
                f" {_pct(edge.p50_alone, pairs)}, energy alone {_pct(edge.energy_alone, pairs)}. 10% worse: gate"
                f" {_pct(slow.family, pairs)}, p50 alone {_pct(slow.p50_alone, pairs)}, energy alone"
                f" {_pct(slow.energy_alone, pairs)}. Before (two-sided, either metric): A/A {_pct(aa.old, pairs)},"
                f" 5% {_pct(edge.old, pairs)}, 10% {_pct(slow.old, pairs)}. Detectable said (median): p50"
                f" {said[0]:+.1f}%, energy {said[1]:+.1f}%"
            )
            rows.append(
                Row(
                    f"{pairs} pairs, K={k}, run-level shift sd {sd:.0%}, AR(1) phi 0.9: --fail-on-regression 5",
                    "at exactly 5% worse <= 5% failing",
                    measured,
                    "-",
                )
            )
            print(rows[-1].figure, "::", measured, flush=True)
    for phi in (0.0, 0.5, 0.9):
        for n in (200, 1000):
            covered, given, old = coverage(np.random.default_rng(int(phi * 10) * 7 + n + 5), datasets, n, phi)
            rows.append(
                Row(
                    f"p50 95% interval, AR(1) phi {phi}, n {n}, {datasets} datasets: coverage",
                    ">= 93% of those given",
                    f"{covered:.1%} ({given:.0%} given); before (independence assumed): {old:.1%}",
                    "-",
                )
            )
            print(rows[-1].figure, "::", rows[-1].measured, flush=True)
    elapsed_s = time.perf_counter() - began
    if args.record:
        record(
            "(j) compare verdicts and p50 interval coverage, simulated",
            rows,
            [
                f"latency lognormal (sigma {WITHIN_SIGMA}) with AR(1) phi 0.9 inside each run, 500 inferences per"
                f" repetition, a run-level shift per repetition; energy per repetition moves with the run's shift"
                f" plus its own {ENERGY_NOISE_SD:.1%} within-run noise; the candidate is slower and hungrier by the"
                " change; the real compare_runs; seeded",
                "Before, (j) said 92.7% caught at K=5, sd 2%: that was latency OR energy failing with energy free of"
                " within-run noise. Per metric, p50 alone is what a board without a power sensor gets.",
                f"the gate tests one-sided at 5% across its metrics (Holm): at exactly {GATE_PCT:g}% worse it may"
                " fail at most 5% of the time, and the 'detectable' figure is what compare now prints",
                f"{elapsed_s:.0f} s, load average {load_average()}",
            ],
        )


if __name__ == "__main__":
    main()
