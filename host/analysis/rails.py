"""Which power rails make up a board's total, from the rail hierarchy the device profile declares.

A rail is one measured power domain: an energy counter (kind "energy_uj", cumulative, already
unwrapped by the agent) and/or instantaneous power (kind "power_mw") of the same domain. Each series
carries its role and, when the profile (or the sensor backend, e.g. RAPL) says so, the rail it is a
part of, encoded in the role as ``"cpu;part_of=psys"`` (see ``split_role``).

The total is formed from that hierarchy and nothing else:
- a whole-board rail (role "total", e.g. VDD_IN, a USB meter, RAPL psys) when there is one;
- else the sum of the top-level rails (no parent, or a parent that was not measured), which the
  profile declares disjoint (a dGPU beside the CPU package and DRAM);
- never a parent together with its part, and never a rail dropped silently: every rail that produced
  a series is reported, summed or not, and a summed rail that cannot be used makes the total unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from host.store.rundata import Series

POWER_MW = "power_mw"
ENERGY_UJ = "energy_uj"
ENERGY_KINDS = (POWER_MW, ENERGY_UJ)
WHOLE_BOARD_ROLE = "total"
PART_OF = ";part_of="
#: NVML names the instantaneous power beside a counter "<gpu>_power": the same rail, not another one.
POWER_SUFFIX = "_power"


def split_role(role: str) -> tuple[str, str]:
    """("cpu", "psys") from the wire role "cpu;part_of=psys"; (role, "") when no parent is named."""
    base, _, parent = role.partition(PART_OF)
    return base, parent


def join_role(role: str, parent: str) -> str:
    """The wire role for a rail that is a part of ``parent`` (the inverse of ``split_role``)."""
    return f"{role}{PART_OF}{parent}" if parent else role


@dataclass(frozen=True)
class Channel:
    """A power/energy series cleaned for integration: finite values, strictly increasing time."""

    label: str
    kind: str
    t_ns: np.ndarray
    value: np.ndarray


@dataclass
class Rail:
    """One power domain: the channel used for its energy (None when it gave < 2 usable samples)."""

    name: str
    sensor: str
    role: str
    parent: str
    #: "counter" | "power-integration": a counter whenever it gave >= 2 samples, else power.
    method: str
    channel: Channel | None
    summed: bool = False

    @property
    def label(self) -> str:
        return f"{self.sensor}:{self.name}" if self.sensor else self.name


@dataclass
class RailPlan:
    """Every rail seen, the ones summed into the total, and why no total can be formed (or None)."""

    rails: list[Rail]
    summed: list[Rail]
    #: "counter" | "power-integration" | "counter + power-integration" (what the summed rails use).
    method: str | None
    #: What the total is made of, e.g. "whole board: rapl:psys" or "sum of top-level rails ...: a + b".
    sensor: str | None
    problem: str | None


def clean(series: Series) -> Channel | None:
    """Sort by time, drop non-finite values and repeated timestamps; None if < 2 samples remain."""
    t = np.asarray(series.t_ns, dtype=np.int64)
    v = np.asarray(series.value, dtype=np.float64)
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    first = np.concatenate(([True], np.diff(t) > 0))
    t, v = t[first], v[first]
    if t.size < 2:
        return None
    label = f"{series.sensor}:{series.name}" if series.sensor else series.name
    return Channel(label, series.kind, t, v)


def _rails(series: Sequence[Series]) -> list[Rail]:
    """Group power/energy series into rails (a counter and its power reading are one rail), in order."""
    usable = [s for s in series if s.kind in ENERGY_KINDS]
    counter_keys = {(s.sensor, s.name) for s in usable if s.kind == ENERGY_UJ}
    grouped: dict[tuple[str, str], list[Series]] = {}
    for s in usable:
        name = s.name
        base = name[: -len(POWER_SUFFIX)]
        if s.kind == POWER_MW and name.endswith(POWER_SUFFIX) and (s.sensor, base) in counter_keys:
            name = base
        grouped.setdefault((s.sensor, name), []).append(s)
    rails: list[Rail] = []
    for (sensor, name), members in grouped.items():
        counter = next((s for s in members if s.kind == ENERGY_UJ), None)
        power = next((s for s in members if s.kind == POWER_MW), None)
        primary = counter or power
        assert primary is not None
        role, parent = split_role(primary.role)
        counter_ch = clean(counter) if counter is not None else None
        if counter_ch is not None:
            rails.append(Rail(name, sensor, role, parent, "counter", counter_ch))
        else:
            power_ch = clean(power) if power is not None else None
            method = "power-integration" if power_ch is not None or counter is None else "counter"
            rails.append(Rail(name, sensor, role, parent, method, power_ch))
    return rails


def _is_legacy_rapl(wholes: list[Rail]) -> bool:
    """Runs stored before rail hierarchies: RAPL packages had role "total" and DRAM was added to them."""
    return all(r.sensor == "rapl" and r.name.startswith("package") for r in wholes)


def plan(series: Sequence[Series]) -> RailPlan:
    """The rails of ``series`` and the set whose sum is the board's power (see the module docstring)."""
    rails = _rails(series)
    if not rails:
        return RailPlan([], [], None, None, None)
    wholes = [r for r in rails if r.role == WHOLE_BOARD_ROLE]
    if wholes and _is_legacy_rapl(wholes):
        summed = wholes + [r for r in rails if r.role == "dram" and not r.parent]
        what = "RAPL packages and DRAM"
    elif wholes:
        summed = wholes
        what = "whole board"
    else:
        measured = {r.name for r in rails}
        summed = [r for r in rails if not r.parent or r.parent not in measured]
        what = "sum of top-level rails (no 'total' rail)"
    for rail in summed:
        rail.summed = True
    methods = sorted({r.method for r in summed})
    sensor = f"{what}: " + " + ".join(r.label for r in summed)
    broken = [r for r in summed if r.channel is None]
    problem = None
    if broken:
        problem = "; ".join(f"rail {r.label} gave fewer than 2 usable samples" for r in broken)
    return RailPlan(rails, summed, " + ".join(methods), sensor, problem)


def sample_period_ns(ch: Channel) -> float:
    """The channel's typical time between samples (median), in ns."""
    return float(np.median(np.diff(ch.t_ns)))


#: A summed rail must have a sample within this many sample periods of each window edge ...
EDGE_PERIODS = 2.0
#: ... and no gap between samples longer than this many periods inside the window.
GAP_PERIODS = 5.0
#: Floors for both, so that one late wake-up of the sampler thread on a busy board is not a gap.
EDGE_FLOOR_NS = 50_000_000
GAP_FLOOR_NS = 250_000_000


def coverage_problem(rail: Rail, start_ns: int, end_ns: int) -> str | None:
    """Why ``rail``'s samples do not cover [start_ns, end_ns] well enough to integrate, or None.

    Energy is never extrapolated: a rail that stopped (or started) inside the window, or that has a
    hole in it, makes the window's energy unknown.
    """
    ch = rail.channel
    if ch is None:
        return f"rail {rail.label} gave fewer than 2 usable samples"
    period = sample_period_ns(ch)
    edge_ns = max(EDGE_PERIODS * period, EDGE_FLOOR_NS)
    gap_ns = max(GAP_PERIODS * period, GAP_FLOOR_NS)
    if ch.t_ns[0] > start_ns + edge_ns:
        return f"rail {rail.label} has no sample in the first {(ch.t_ns[0] - start_ns) / 1e9:.2f} s of the window"
    if ch.t_ns[-1] < end_ns - edge_ns:
        return f"rail {rail.label} stopped {(end_ns - ch.t_ns[-1]) / 1e9:.2f} s before the end of the window"
    first = max(int(np.searchsorted(ch.t_ns, start_ns, side="right")) - 1, 0)
    last = min(int(np.searchsorted(ch.t_ns, end_ns, side="left")), ch.t_ns.size - 1)
    gaps = np.diff(ch.t_ns[first : last + 1])
    if gaps.size and gaps.max() > gap_ns:
        return (
            f"rail {rail.label} has a {gaps.max() / 1e9:.2f} s gap between samples"
            f" (sample period {period / 1e6:.1f} ms)"
        )
    return None


def counter_update_period_ns(ch: Channel) -> float | None:
    """How often a counter's value actually changes (median time between changes), None if it never does."""
    if ch.kind != ENERGY_UJ:
        return None
    changed = np.flatnonzero(np.diff(ch.value) != 0) + 1
    if changed.size < 3:
        return None
    return float(np.median(np.diff(ch.t_ns[changed])))


#: Sample intervals whose coefficient of variation is below this were taken at a fixed period.
REGULAR_CV = 0.1
#: Fewer beat cycles than this between load and sampling over the window leaves phases uncovered.
MIN_BEATS = 4.0


def alias_risk(ch: Channel, window: tuple[int, int], inference_period_ns: float) -> str | None:
    """Why a fixed-period power rail may alias with the inference period, or None.

    A dithered sampler (the agent's own) spreads its samples over every phase of a periodic load; a
    sensor that cannot be dithered (a meter streaming at its own rate, hardware averaging windows)
    samples at a fixed period. Then an inference period near a multiple of the sample period (or the
    reverse) keeps sampling the same phase: over the window the phase slips through fewer than
    MIN_BEATS cycles and the average is biased while its interval stays narrow.
    """
    inside = ch.t_ns[(ch.t_ns >= window[0]) & (ch.t_ns <= window[1])]
    if inside.size < 10 or inference_period_ns <= 0:
        return None
    gaps = np.diff(inside).astype(np.float64)
    period = float(gaps.mean())
    if float(gaps.std()) / period >= REGULAR_CV:
        return None
    ratio = max(inference_period_ns, period) / min(inference_period_ns, period)
    slip = abs(ratio - round(ratio))
    beats = slip * (window[1] - window[0]) / max(inference_period_ns, period)
    if beats >= MIN_BEATS:
        return None
    return (
        f"rail {ch.label} is sampled at a fixed {period / 1e6:.2f} ms and the inference period is"
        f" {inference_period_ns / 1e6:.2f} ms (ratio {ratio:.3f}): the samples may alias with the load"
    )
