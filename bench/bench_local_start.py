"""(m) Embedded agent start: what `host profile` waits for before its first job, and the launcher's share.

The host's embedded agent (and every agent a test or benchmark starts) is started through
`python -m host.fleet.parent_death PID -- CMD`, which arms the parent-death signal after exec instead of in a
preexec_fn (gRPC's fork handlers could hang the child before exec). The launcher is one more interpreter
start; this measures it against a bare `python -c pass`, and the whole embedded-agent start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import Row, load_average, print_table, record

from host.fleet import parent_death
from host.fleet.local_agent import LocalAgent


def _timed_s(run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _embedded_agent_start_s(root: Path) -> float:
    """Spawn to listening line (`LocalAgent.start`); the stop after it is not timed."""
    agent = LocalAgent(Path(tempfile.mkdtemp(dir=root)))
    try:
        return _timed_s(agent.start)
    finally:
        agent.stop()


def _spread(samples: list[float]) -> tuple[float, float, float]:
    return statistics.median(samples), min(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--record", action="store_true", help="refresh this section of bench/RESULTS.md")
    args = parser.parse_args()
    print(f"before: {load_average()}")
    bare = [sys.executable, "-c", "pass"]
    n = range(args.repeats)
    plain = _spread([_timed_s(lambda: subprocess.run(bare, check=True)) for _ in n])
    launched = _spread([_timed_s(lambda: subprocess.run(parent_death.command(bare), check=True)) for _ in n])
    with tempfile.TemporaryDirectory(prefix="bench-local-start-") as root:
        agent = _spread([_embedded_agent_start_s(Path(root)) for _ in n])
    print(f"after: {load_average()}")

    def text(m: tuple[float, float, float]) -> str:
        return f"{m[0] * 1e3:.0f} ms (min {m[1] * 1e3:.0f}, max {m[2] * 1e3:.0f}; median of {args.repeats})"

    rows = [
        Row("embedded agent start (LocalAgent: spawn to listening line)", "-", text(agent), "-"),
        Row("`python -c pass` through the parent-death launcher", "-", text(launched), "-"),
        Row(
            "the launcher's own cost (launched minus bare `python -c pass`)",
            "-",
            f"{(launched[0] - plain[0]) * 1e3:.0f} ms (bare {plain[0] * 1e3:.0f} ms)",
            f"{(launched[0] - plain[0]) / agent[0]:.2f} of the agent start",
        ),
    ]
    print_table("(m) embedded agent start", rows)
    if args.record:
        record(
            "(m) embedded agent start",
            rows,
            notes=[
                "Wall time, machine otherwise idle; the launcher replaces a preexec_fn (host/fleet/parent_death.py)."
            ],
        )


if __name__ == "__main__":
    main()
