"""A job worker's memory limit: RLIMIT_AS set by the worker on itself, above what its runtime has reserved.

RLIMIT_AS caps address space, not resident memory, and runtimes reserve far more than they touch
(measured for squeezenet on a 2-core x86-64 box, ORT 1.2x, numpy 2.x: 13 MB for the interpreter,
137 MB once numpy is imported (OpenBLAS buffers), 195 MB with onnxruntime; then per intra-op thread
a glibc malloc arena of 64 MB and an 8 MB stack: 219 MB with 1 thread, 806 MB with 8; resident
memory stayed under 100 MB throughout). So the worker caps malloc at two arenas, and sets the limit
to the address space it holds once the runtime is imported plus the job's budget: `limit_mb` is then
what loading the model, the session's threads, the inputs and the inferences may add.
MIN_WORKER_MEMORY_MB is the floor: squeezenet with 16 threads needs about 200 MB of it.

CUDA and TensorRT reserve terabytes of address space: profiles of GPU boards leave the limit off
(0) and rely on the systemd unit's MemoryMax=.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import resource

from agent.errors import AgentError

#: Smallest budget accepted: below it even a small CNN fails to load with a handful of threads.
MIN_WORKER_MEMORY_MB = 256
_M_ARENA_MAX = -8  # glibc mallopt parameter
#: How a failed allocation reads once a runtime has wrapped it (Python, ONNX Runtime, TFLite, C++).
_ALLOCATION_FAILED = re.compile(r"MemoryError|Failed to allocate|bad_alloc|Cannot allocate memory|out of memory", re.I)


class OutOfMemory(AgentError):
    """The worker hit its memory limit; the job ends with this, the agent goes on serving."""

    kind = "out_of_memory"


def check_limit_mb(limit_mb: int) -> int:
    """`limit_mb` if usable (0 = no limit); ValueError with one line otherwise."""
    if limit_mb != 0 and limit_mb < MIN_WORKER_MEMORY_MB:
        raise ValueError(
            f"a worker memory limit of {limit_mb} MB is below the {MIN_WORKER_MEMORY_MB} MB a runtime needs "
            "to load even a small model (0 turns the limit off)"
        )
    return limit_mb


def address_space_bytes() -> int:
    """This process's current address space (VmSize), in bytes."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def apply_to_this_process(limit_mb: int) -> int:
    """Cap this process at its current address space plus `limit_mb` MiB; returns the cap in bytes."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        with contextlib.suppress(OSError, AttributeError):  # musl and others have no M_ARENA_MAX
            ctypes.CDLL(libc_name).mallopt(_M_ARENA_MAX, 2)
    cap_bytes = address_space_bytes() + limit_mb * 1024**2
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap_bytes = min(cap_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, hard))
    return cap_bytes


def out_of_memory(limit_mb: int, err: BaseException) -> OutOfMemory:
    """The one-line error for an allocation that failed under the limit: what failed, then the limit.

    "out of memory: " leads, as for an allocation that failed without a limit (agent/jobs/); the
    detail starts at the runtime's own words for the failure, which a wrapped ORT error buries deep.
    """
    text = " ".join(str(err).split()) or type(err).__name__
    found = _ALLOCATION_FAILED.search(text)
    detail = text[found.start() :] if found and found.group(0) != "out of memory" else text
    return OutOfMemory(f"out of memory: {detail[:200]} (limit {limit_mb} MB)")


def is_allocation_failure(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or bool(_ALLOCATION_FAILED.search(f"{type(err).__name__}: {err}"))
