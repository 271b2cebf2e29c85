"""(n) TensorRT fidelity: the agent's p50 with `--runtime tensorrt` against a bare trtexec loop on the same card.

Needs an NVIDIA GPU with TensorRT's trtexec (JetPack, TensorRT's tar/deb, an NGC container): for each model and
precision, `host profile --runtime tensorrt` through a local agent, then, in the same call, trtexec alone on the same
ONNX model and precision (its own engine build, `--exportTimes`); the ratio of the two p50 latencies is the
agent's cost (goal <= 1.02). The agent's energy (NVML counter on a dGPU, INA3221 on a Jetson) is printed beside it.
`--standin` runs the whole path against tests/trtexec_standin.py (ONNX Runtime on the CPU) to check the script;
its figures are not TensorRT's and it never records.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from harness import REPO, Row, host_profile, isolated_env, light_model, machine, print_table, record, start_agent

SECTION = "(n) TensorRT fidelity: agent p50 vs bare trtexec"


def bare_trtexec_p50_ms(trtexec: str, model: Path, precision: str, duration_s: int, workdir: Path) -> float:
    """trtexec alone: its own build and warmup, then `duration_s` of inferences; p50 of its per-inference latency."""
    times = workdir / f"bare-{model.stem}-{precision}.json"
    flags = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[precision]
    cmd = [trtexec, f"--onnx={model}", *flags, "--warmUp=500", f"--duration={duration_s}", f"--exportTimes={times}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bare trtexec failed: {done.stdout[-500:]}")
    return float(statistics.median(float(t["latencyMs"]) for t in json.loads(times.read_text())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="squeezenet,shufflenet")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per run")
    parser.add_argument("--trtexec", default="/usr/src/tensorrt/bin/trtexec")
    parser.add_argument("--profile", default="", help="agent device profile (default: detected)")
    parser.add_argument("--standin", action="store_true", help="dry run against tests/trtexec_standin.py")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if args.standin and args.record:
        parser.error("--standin figures are ONNX Runtime on the CPU, not TensorRT: they are never recorded")
    rows: list[Row] = []
    with isolated_env() as (root, env):
        trtexec = args.trtexec
        if args.standin:
            sys.path.insert(0, str(REPO))
            from tests.jetson_fakes import standin

            trtexec = str(standin(root / "bin", "trtexec", "trtexec_standin.py"))
        env["EDGEPROF_TRTEXEC"] = trtexec
        agent = start_agent(root / "agent", env, ["--profile", args.profile] if args.profile else [])
        try:
            for name in args.models.split(","):
                model = light_model(name)
                for precision in args.precisions.split(","):
                    doc = host_profile(
                        model,
                        ["--device", agent.address, "--runtime", "tensorrt", "--precision", precision,
                         "--min-duration", str(args.duration), "--runs", "200", "--idle", "2"],
                        env,
                        root,
                        timeout_s=1800,
                    )  # fmt: skip
                    (dev,) = doc["devices"]
                    if dev["status"] != "ok":
                        raise RuntimeError(f"{name} {precision}: {dev['error']}")
                    agent_p50 = float(dev["latency_ms"]["p50"])
                    bare_p50 = bare_trtexec_p50_ms(trtexec, model, precision, args.duration, root)
                    energy = dev["energy"]
                    mj = energy.get("energy_mj_per_inference")
                    rows.append(
                        Row(
                            f"{name} {precision} p50 (agent / bare trtexec)",
                            "<= 1.02",
                            f"agent {agent_p50:.3f} ms, bare {bare_p50:.3f} ms; {dev['tensorrt']['device']};"
                            f" energy {energy.get('method')} {energy.get('sensor')}"
                            f" {'-' if mj is None else f'{mj:.3f}'} mJ/inf",
                            f"{agent_p50 / bare_p50:.3f}",
                        )
                    )
        finally:
            agent.stop()
    print_table(f"{SECTION} ({machine()})", rows)
    if args.record:
        record(SECTION, rows, ["bare trtexec builds its own engine with the same precision; both on the same card"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
