"""When warmup may end: after the minimum count, once latency has stopped drifting (or a time cap).

Latency is compared between the last two blocks of inferences, each spanning at least BLOCK_S of time
and at least MIN_BLOCK inferences: blocks of a fixed count are a fraction of a millisecond for a fast
model, where timer and scheduler noise hide a ramp that is plain over a tenth of a second. A slow
ramp (a clock or cache warming over hundreds of inferences) can still pass; the host's stationarity
check on the measured phase (host/analysis/drift.py) makes such a run invalid.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from statistics import median

#: Relative change between the medians of two consecutive blocks below which latency counts as stable.
STABLE_TOLERANCE = 0.05
#: Fewest inferences per block compared.
MIN_BLOCK = 5
#: Shortest time one block spans, in ns.
BLOCK_NS = 100_000_000


def block_size(min_warmup: int) -> int:
    return max(MIN_BLOCK, min_warmup // 2)


def is_stable(latencies_ns: list[int], block: int, tolerance: float = STABLE_TOLERANCE) -> bool:
    """True when the median of the last `block` latencies is within `tolerance` of the block before.

    Medians, not means, so one slow outlier (a page fault, a context switch) neither ends nor
    prolongs warmup. Cheap: it looks at 2 × block values.
    """
    if len(latencies_ns) < 2 * block:
        return False
    last = median(latencies_ns[-block:])
    previous = median(latencies_ns[-2 * block : -block])
    if previous <= 0:
        return False
    return abs(last - previous) / previous <= tolerance


def _block_start(starts_ns: Sequence[int], end: int, min_count: int, block_ns: int) -> int:
    """Index where the block ending before index ``end`` begins, spanning >= block_ns of start times and
    >= min_count inferences; -1 when the inferences before ``end`` do not span that long.
    """
    by_time = bisect_right(starts_ns, starts_ns[end - 1] - block_ns, 0, end) - 1
    return min(by_time, end - min_count) if by_time >= 0 else -1


def is_stable_in_time(
    starts_ns: Sequence[int],
    latencies_ns: Sequence[int],
    min_count: int = MIN_BLOCK,
    block_ns: int = BLOCK_NS,
    tolerance: float = STABLE_TOLERANCE,
) -> bool:
    """True when the median latency of the last time block is within ``tolerance`` of the block before.

    ``starts_ns`` is sorted (inferences in the order run). A block spans at least ``block_ns`` and
    ``min_count`` inferences; False until two such blocks exist.
    """
    end = len(starts_ns)
    if end < 2 * min_count:
        return False
    last_from = _block_start(starts_ns, end, min_count, block_ns)
    if last_from < min_count:
        return False
    previous_from = _block_start(starts_ns, last_from, min_count, block_ns)
    if previous_from < 0:
        return False
    last = median(latencies_ns[last_from:end])
    previous = median(latencies_ns[previous_from:last_from])
    return previous > 0 and abs(last - previous) / previous <= tolerance
