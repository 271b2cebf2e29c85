"""Checks the result document of deploy/check-board.sh's run: one device, status ok, every contract field
(DESIGN.md section 4) present with a sane value, and a board description that says what the board is.

Timings are not judged: under emulation an inference takes seconds and the run is rightly not valid.
Usage: check_board_result.py RESULT.json --machine aarch64 --os "Debian GNU/Linux 12" --profile rpi5
       --runs 3 --runtimes onnxruntime,tflite        (exit 0 and one summary line, or 1 and what is wrong)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

LATENCY_KEYS = ("p50", "p90", "p99", "mean", "std", "min", "max", "p50_ci95")
ENERGY_KEYS = ("method", "sensor", "idle_power_w", "avg_power_w", "energy_mj_per_inference")


class ResultProblem(Exception):
    """The document is not what a passing board check returns."""


def _reject_constant(name: str) -> Any:
    raise ResultProblem(f"not strict JSON: {name}")


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ResultProblem(problem)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check(doc: Any, args: argparse.Namespace) -> str:
    """One summary line for a document that passes; ResultProblem for the first thing that does not."""
    _require(isinstance(doc, dict), "the document is not a JSON object")
    for key in ("run_id", "model", "created_at", "devices"):
        _require(key in doc, f"no '{key}' in the document")
    _require(
        re.fullmatch(r"[0-9a-f]{64}", str(doc["model"].get("sha256", ""))) is not None, "model.sha256 is not a sha256"
    )
    _require(isinstance(doc["devices"], list) and len(doc["devices"]) == 1, "expected exactly one device")
    dev = doc["devices"][0]
    _require(dev.get("status") == "ok", f"device status {dev.get('status')!r}: {dev.get('error')}")
    _require(dev.get("profile") == args.profile, f"profile {dev.get('profile')!r}, expected {args.profile!r}")
    _require(str(dev.get("runtime", "")).startswith("onnxruntime"), f"runtime {dev.get('runtime')!r}")
    _require(isinstance(dev.get("n_inferences"), int) and dev["n_inferences"] >= args.runs, "too few inferences")
    latency = dev.get("latency_ms") or {}
    for key in LATENCY_KEYS:
        _require(key in latency, f"latency_ms has no '{key}'")
    for key in ("p50", "mean", "min", "max"):
        _require(_positive(latency[key]), f"latency_ms.{key} is {latency[key]!r}")
    _require(latency["min"] <= latency["p50"] <= latency["max"], "latency_ms.p50 is outside [min, max]")
    _require(_positive(dev.get("throughput_ips")), "throughput_ips is not a positive number")
    _require(_positive(dev.get("load_time_ms")), "load_time_ms is not a positive number")
    _require(_positive(dev.get("peak_rss_mb")), "peak_rss_mb is not a positive number")
    _require(dev.get("latency_source") in ("per_inference", "block_means"), "latency_source is missing")
    energy = dev.get("energy") or {}
    for key in ENERGY_KEYS:
        _require(key in energy, f"energy has no '{key}'")
    thermal = dev.get("thermal") or {}
    _require("max_temp_c" in thermal and "throttled" in thermal, "thermal is incomplete")
    validity = dev.get("validity") or {}
    _require(isinstance(validity.get("valid"), bool), "validity.valid is not true or false")
    _require(isinstance(validity.get("reasons"), list), "validity.reasons is not a list")
    _require(validity["valid"] or len(validity["reasons"]) > 0, "not valid, yet no reason given")

    board = dev.get("board") or {}
    _require(board.get("machine") == args.machine, f"board machine {board.get('machine')!r}, expected {args.machine!r}")
    _require(str(board.get("os", "")).startswith(args.os), f"board os {board.get('os')!r}, expected {args.os!r}")
    runtimes = board.get("runtimes") or {}
    for name in args.runtimes.split(","):
        _require(name in runtimes, f"runtime {name} is not installed on the board (it has {sorted(runtimes)})")

    verdict = "valid" if validity["valid"] else "not valid: " + "; ".join(map(str, validity["reasons"]))
    versions = ", ".join(f"{name} {runtimes[name]}" for name in args.runtimes.split(","))
    return (
        f"result ok: {board['machine']}, {board['os']}, {versions}; {dev['n_inferences']} inferences, "
        f"p50 {latency['p50']:.1f} ms; {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--machine", required=True)
    parser.add_argument("--os", required=True, help="the start of the board's os description")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--runtimes", required=True, help="comma-separated runtimes the board must have")
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.result.read_text(), parse_constant=_reject_constant)
        print(check(doc, args))
    except (OSError, ValueError, ResultProblem) as err:
        print(f"check_board_result.py: {args.result}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
