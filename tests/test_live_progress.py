"""Live progress of `host ab` and `host profile --repeat` (issue 29 item 10), through real `host` processes:
in a pipe a few lines that say which repetition and side ended and its p50; on a terminal the redrawn table
with the repetition, the side, a recent p50 and the time left; no counter past its target anywhere.

`--min-duration` is set so every repetition measures past its `--runs` count: the case that printed `336/200`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from host.run.profiling import DeviceProgress
from host.run.progress import PlainProgress, counter
from tests.conftest import console_script
from tests.terminal import run_in_terminal

QUICK = ["--runs", "5", "--min-duration", "0.4", "--idle", "0", "--warmup", "2", "--threads", "1", "--repeat", "2"]
#: `12/20 inferences`: a counter against its target.
COUNTER = re.compile(r"\b(\d+)/(\d+) inferences")


def _over_target(text: str) -> list[str]:
    return [m.group(0) for m in COUNTER.finditer(text) if int(m.group(1)) > int(m.group(2))]


def test_ab_in_a_pipe_says_each_repetition_its_side_and_p50_in_a_few_lines(squeezenet: Path) -> None:
    proc = subprocess.run(
        [console_script("host"), "ab", str(squeezenet), str(squeezenet), *QUICK, "--judge-invalid"],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )

    lines = [line for line in proc.stderr.splitlines() if line.startswith("local: ")]
    assert proc.returncode in (0, 1), proc.stderr
    done = [line for line in lines if " done  " in line and "repetition" in line]
    assert [re.search(r"repetition (\d/4) \(([AB])\)", line).groups() for line in done] == [  # type: ignore[union-attr]
        ("1/4", "A"),
        ("2/4", "B"),
        ("3/4", "A"),
    ]
    assert all(re.search(r"p50 \d", line) for line in done), done
    assert all("left" in line for line in done[1:]), done  # time left, once a repetition has told it
    assert len(lines) <= 12, lines  # a line per phase of every repetition was about 30
    assert not _over_target(proc.stderr), proc.stderr


def test_ab_on_a_terminal_shows_repetition_side_recent_p50_and_time_left(squeezenet: Path) -> None:
    env = {k: v for k, v in os.environ.items()}
    screen = run_in_terminal(
        [console_script("host"), "ab", str(squeezenet), str(squeezenet), *QUICK, "--judge-invalid"], 160, env
    )

    frames = screen.text
    assert re.search(r"local\s+measure\s+\d/4 [AB]\s+\d+(/5)?\s+\d+\.\d+", frames), frames[-3000:]  # p50 not blank
    assert re.search(r"\d/4 B", frames) and re.search(r"about \d+(\.\d)? s", frames), frames[-3000:]
    assert not re.search(r"\b([6-9]|\d\d+)/5\b", frames), frames[-3000:]  # never past the target of 5


def test_a_counter_never_reads_past_its_target() -> None:
    below = DeviceProgress("pi", phase="measure", measured=120, target_runs=200)
    past = DeviceProgress("pi", phase="measure", measured=336, target_runs=200, measure_left_s=0.8)
    repeated = DeviceProgress("pi", phase="measure", measured=410, part_measured=12, target_runs=200, parts=4)

    assert (counter(below), counter(past), counter(repeated)) == ("120/200", "336", "12/200")


def test_a_pipe_gets_no_line_per_phase_once_a_device_measures() -> None:
    import io

    out = io.StringIO()
    progress = PlainProgress(out)
    for part in range(3):
        for phase in ("prepare", "warmup", "measure", "finish"):
            progress(DeviceProgress("pi", phase=phase, part=part, parts=3, parts_done=part, target_runs=5))

    assert out.getvalue().splitlines() == [
        "pi: prepare (repetition 1/3)",
        "pi: warmup (repetition 1/3)",
        "pi: measure (repetition 1/3)",
        "pi: repetition 1/3 done  0 inferences",
        "pi: repetition 2/3 done  0 inferences",
    ]
