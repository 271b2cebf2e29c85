"""The worker's own resident memory, read from /proc: now (load deltas) and its high-water mark (peak)."""

from __future__ import annotations

import os
import resource


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's resident high-water mark: the kernel's own, which no sampler can miss.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the process that forked, so a worker
    started by a 500 MB agent (or a test process hosting one) reported 500 MB for a 90 MB model.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux; no /proc elsewhere
