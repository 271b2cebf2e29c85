"""When warmup may end: after the minimum count, once latency has stopped drifting (or a time cap)."""

from __future__ import annotations

from statistics import median

#: Relative change between the medians of two consecutive blocks below which latency counts as stable.
STABLE_TOLERANCE = 0.05
#: Inferences per block compared (the last two blocks of this many).
MIN_BLOCK = 5


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
