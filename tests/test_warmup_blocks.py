"""Warmup stability judged on blocks of time, not of a fixed count of inferences."""

from __future__ import annotations

import numpy as np

from agent.measure.warmup import is_stable, is_stable_in_time


def _back_to_back(latencies_ns: np.ndarray) -> list[int]:
    return [int(t) for t in np.concatenate(([0], np.cumsum(latencies_ns[:-1])))]


def test_a_stair_ramp_of_a_fast_model_is_not_stable_over_time_blocks() -> None:
    # 1 ms inferences that get 2% faster every 10 inferences: two blocks of 5 are often identical.
    latencies = (1_000_000 * 0.98 ** (np.arange(400) // 10)).astype(np.int64)
    starts = _back_to_back(latencies)
    lat = [int(v) for v in latencies]

    assert is_stable(lat[:10], block=5)  # the count-based check ends warmup at inference 10
    assert not any(is_stable_in_time(starts[:n], lat[:n]) for n in range(10, 400))


def test_a_flat_noisy_run_is_stable_once_two_blocks_of_time_exist() -> None:
    rng = np.random.default_rng(3)
    latencies = (1_000_000 * rng.lognormal(0, 0.05, 400)).astype(np.int64)
    starts = _back_to_back(latencies)
    lat = [int(v) for v in latencies]

    assert not is_stable_in_time(starts[:150], lat[:150])  # 150 ms: not yet two 100 ms blocks
    assert is_stable_in_time(starts[:210], lat[:210])


def test_a_slow_model_still_needs_its_minimum_count_per_block() -> None:
    latencies = np.full(12, 300_000_000, dtype=np.int64)  # 0.3 s each: every inference alone spans a block
    starts = _back_to_back(latencies)
    lat = [int(v) for v in latencies]

    assert not is_stable_in_time(starts[:9], lat[:9], min_count=5)
    assert is_stable_in_time(starts[:10], lat[:10], min_count=5)
