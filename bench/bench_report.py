"""Time the HTML report of 10 devices x 10,000 inferences (issue 5: must render in under 2 s).

python bench/bench_report.py [--devices 10] [--inferences 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from host.report.formats import write_report
from host.report.synthetic import synthetic_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--inferences", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    run = synthetic_run(n_devices=args.devices, n_inferences=args.inferences, unpowered=2)
    samples = sum(s.t_ns.size for raw in run.raw.values() for s in raw.series)
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.html"
        for _ in range(args.repeat):
            started = time.perf_counter()
            write_report(run, out)
            timings.append(time.perf_counter() - started)
        size = out.stat().st_size
    print(
        f"{args.devices} devices x {args.inferences} inferences, {samples} sensor samples "
        f"(power at 1 kHz on {args.devices - 2} devices)"
    )
    print(
        f"HTML report: median {statistics.median(timings):.3f} s, max {max(timings):.3f} s over {args.repeat} runs;"
        f" {size / 1024:.0f} KiB"
    )
    print(
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{platform.processor() or 'unknown cpu'}"
    )


if __name__ == "__main__":
    main()
