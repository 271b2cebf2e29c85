"""Rails as energy over time: the cumulative-energy integration every energy figure uses, and power for plots.

Each rail becomes a cumulative-energy function of time (a counter interpolated, power integrated with the
trapezoid rule), so window edges are interpolated and energies of adjacent windows add up exactly
(host/analysis/energy.py builds the figures on it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from host.analysis import rails as rail_plan
from host.analysis.rails import ENERGY_UJ, POWER_MW, Channel
from host.store.rundata import Series


def cumulative_j(ch: Channel, t_ns: np.ndarray) -> np.ndarray:
    """Energy in J from the channel's first sample to each time in ``t_ns``.

    Power is taken as linear between samples (so the integral is the trapezoid rule, exact at window
    edges too); a counter is interpolated linearly. Outside the samples the edge power is held (only
    within the coverage tolerance of host/analysis/rails.py: a window the samples do not cover is refused).
    """
    t_s = (ch.t_ns - ch.t_ns[0]).astype(np.float64) / 1e9
    q_s = (np.asarray(t_ns, dtype=np.int64) - ch.t_ns[0]).astype(np.float64) / 1e9
    inside = np.clip(q_s, t_s[0], t_s[-1])
    if ch.kind == ENERGY_UJ:
        energy_j = (ch.value - ch.value[0]) * 1e-6
        rate_w = np.diff(energy_j) / np.diff(t_s)
        edge_before, edge_after = rate_w[0], rate_w[-1]
        at = np.interp(inside, t_s, energy_j)
    else:
        power_w = ch.value * 1e-3
        cum_j = np.concatenate(([0.0], np.cumsum((power_w[1:] + power_w[:-1]) / 2 * np.diff(t_s))))
        seg = np.clip(np.searchsorted(t_s, inside, side="right") - 1, 0, t_s.size - 2)
        dt = inside - t_s[seg]
        slope = (power_w[seg + 1] - power_w[seg]) / (t_s[seg + 1] - t_s[seg])
        at = cum_j[seg] + dt * (power_w[seg] + (power_w[seg] + slope * dt)) / 2
        edge_before, edge_after = power_w[0], power_w[-1]
    below = np.minimum(q_s - inside, 0.0)
    above = np.maximum(q_s - inside, 0.0)
    return np.asarray(at + below * edge_before + above * edge_after)


def total_j(channels: Sequence[Channel], t_ns: np.ndarray) -> np.ndarray:
    return np.sum([cumulative_j(ch, t_ns) for ch in channels], axis=0)


def power_over_time_w(series: Sequence[Series], min_interval_ns: int = 10_000_000) -> tuple[np.ndarray, np.ndarray]:
    """The summed rails' power over time (for plots): (t_ns, watts); empty arrays without a sensor.

    Power channels are summed on the first channel's timestamps. Counters are differentiated between
    samples at least ``min_interval_ns`` apart (a raw 1 kHz RAPL difference is mostly update jitter),
    each value placed at the middle of its interval.
    """
    plan = rail_plan.plan(series)
    channels = [r.channel for r in plan.summed if r.channel is not None]
    if not channels:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    base = channels[0].t_ns
    if all(ch.kind == POWER_MW for ch in channels):
        watts = np.sum([np.interp(base, ch.t_ns, ch.value) for ch in channels], axis=0) * 1e-3
        return base.copy(), np.asarray(watts, dtype=np.float64)
    picks = [0]
    for i, t in enumerate(base):
        if t - base[picks[-1]] >= min_interval_ns:
            picks.append(i)
    grid = base[np.array(picks)]
    if grid.size < 2:
        grid = base[[0, -1]]
    energy_j = total_j(channels, grid)
    watts = np.diff(energy_j) / (np.diff(grid).astype(np.float64) / 1e9)
    mid_ns = grid[:-1] + np.diff(grid) // 2
    return mid_ns, np.asarray(watts, dtype=np.float64)
