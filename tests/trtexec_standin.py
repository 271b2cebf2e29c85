"""A stand-in for TensorRT's `trtexec` (tests only): the real flags, the real log lines, the real export formats.

It runs the ONNX model with ONNX Runtime on the CPU, so every exported time is a real measurement: each
inference's input copy (H2D), run (compute) and output copy (D2H), in ms from the "Starting inference" line.
What it emulates, per the TensorRT release in EDGEPROF_STANDIN_TRT (default 8.6.2):
- the banner `&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # …`, `&&&& PASSED`/`FAILED`, `[date] [I] …` lines;
- unknown flags fail as trtexec's parser does; --fp16/--int8 do not exist from 11.0 (strong typing only);
- --onnx + --saveEngine builds a "plan" (JSON here) for this device (EDGEPROF_STANDIN_DEVICE, _CC); --loadEngine
  refuses a plan of another TensorRT or device with TensorRT's "incompatible device" error;
- --useDLACore=N needs --fp16 or --int8; DLA takes Conv/Relu/BatchNormalization/pooling/Add/Concat nodes, the rest
  needs --allowGPUFallback; the placement report lists `[DlaLayer] {ForeignNode[a...b]}` and `[GpuLayer]` lines;
- --timingCacheFile: layers already timed build fast (EDGEPROF_STANDIN_BUILD_S per new layer);
- --exportTimes: warmups included and endToEndMs before 8.6, startInMs-style keys before 8.2;
- --exportProfile: `[{"count": N}, {"name", "timeMs", "averageMs", "medianMs", "percentage"}…]` from ONNX
  Runtime's own per-node profile, summed per engine layer.
EDGEPROF_STANDIN_LOG gets one line per build/run (tests count builds); EDGEPROF_STANDIN_RAIL="FILE:VALUE" writes
VALUE to FILE while inferences run (a GPU rail moving; several separated by ";") and restores them after.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VERSION = os.environ.get("EDGEPROF_STANDIN_TRT", "8.6.2")
DEVICE = os.environ.get("EDGEPROF_STANDIN_DEVICE", "Orin")
CC = os.environ.get("EDGEPROF_STANDIN_CC", "8.7")
MAJOR, MINOR, PATCH = (int(x) for x in VERSION.split("."))
CODE = MAJOR * (10_000 if MAJOR >= 10 else 1000) + MINOR * 100 + PATCH
FLAGS = {"onnx", "saveEngine", "loadEngine", "timingCacheFile", "useDLACore", "shapes", "warmUp", "iterations",
         "duration", "exportTimes", "exportProfile", "loadInputs", "help", "allowGPUFallback", "dumpProfile",
         "separateProfileRun", "verbose", "noDataTransfers", "useSpinWait"}  # fmt: skip
if MAJOR < 11:
    FLAGS |= {"fp16", "int8", "best"}
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(double)": "float64",
}
DLA_OPS = {"Conv", "Relu", "BatchNormalization", "MaxPool", "AveragePool", "Add", "Concat", "Clip"}


def log(text: str, level: str = "I") -> None:
    stamp = dt.datetime.now().strftime("%m/%d/%Y-%H:%M:%S")
    print(f"[{stamp}] [{level}] {text}", flush=True)


def finish(ok: bool, argv: list[str]) -> int:
    print(f"&&&& {'PASSED' if ok else 'FAILED'} TensorRT.trtexec [TensorRT v{CODE}] # trtexec {' '.join(argv)}")
    return 0 if ok else 1


def record(line: str) -> None:
    path = os.environ.get("EDGEPROF_STANDIN_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


def parse(argv: list[str]) -> dict[str, str] | str:
    args: dict[str, str] = {}
    for arg in argv:
        if not arg.startswith("--"):
            return f"Invalid argument: {arg}"
        key, _, value = arg[2:].partition("=")
        if key not in FLAGS:
            return f"Unknown option: --{key}"
        args[key] = value
    return args


def session(model: str, profile: bool = False) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "standin")
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def layers(model: str, dla: bool) -> tuple[list[dict[str, Any]], list[str] | str]:
    """Engine layers as TensorRT names them: DLA subgraphs as ForeignNodes, a Relu fused into its Conv on the GPU."""
    import onnx

    graph = onnx.load(model, load_external_data=False).graph
    # Constants are folded at build time; an unnamed node gets the name TensorRT would give it.
    nodes = [n for n in graph.node if n.op_type not in ("Constant", "ConstantOfShape")]
    for i, node in enumerate(nodes):
        node.name = node.name or f"{node.op_type}_{i}"
    out: list[dict[str, Any]] = []
    unsupported = []
    run: list[Any] = []

    def close_run() -> None:
        if run:
            name = "{ForeignNode[" + f"{run[0].name}...{run[-1].name}" + "]}"
            out.append({"name": name, "nodes": [n.name for n in run], "dla": True})
            run.clear()

    for node in nodes:
        if dla and node.op_type in DLA_OPS:
            run.append(node)
            continue
        close_run()
        if dla:
            unsupported.append(node.name)
        fusable = out and not out[-1]["dla"] and out[-1]["type"] == "Conv" and "+" not in out[-1]["name"]
        if fusable and node.op_type == "Relu":
            out[-1]["name"] += f" + {node.name}"
            out[-1]["nodes"].append(node.name)
            continue
        out.append({"name": node.name, "nodes": [node.name], "dla": False, "type": node.op_type})
    close_run()
    return out, unsupported


def build(args: dict[str, str]) -> dict[str, Any] | str:
    model = args["onnx"]
    try:
        session(model)
    except Exception as err:
        return f"ModelImporter.cpp:773: While parsing node number 0: {' '.join(str(err).split())[:200]}"
    dla = "useDLACore" in args
    if dla and "fp16" not in args and "int8" not in args:
        return "DLA supports only FP16 and Int8 precision: build with --fp16 or --int8"
    engine_layers, unsupported = layers(model, dla)
    if dla and unsupported and "allowGPUFallback" not in args:
        return f"Layer {unsupported[0]} is not supported on DLA and GPU fallback is not enabled (--allowGPUFallback)"
    cache_path = args.get("timingCacheFile")
    timed: set[str] = set()
    if cache_path and os.path.exists(cache_path):
        timed = set(json.loads(Path(cache_path).read_text() or "[]"))
        log(f"[TRT] Loaded {os.path.getsize(cache_path)} bytes of timing cache from {cache_path}")
    precision = "int8" if "int8" in args else "fp16" if "fp16" in args else "fp32"
    configs = {f"{precision}|{'|'.join(layer['nodes'])}" for layer in engine_layers}
    started = time.monotonic()
    time.sleep(float(os.environ.get("EDGEPROF_STANDIN_BUILD_S", "0.05")) * len(configs - timed))
    if cache_path:
        Path(cache_path).write_text(json.dumps(sorted(timed | configs)))
    log("[TRT] ---------- Layers Running on DLA ----------")
    for layer in engine_layers:
        if layer["dla"]:
            log(f"[TRT] [DlaLayer] {layer['name']}")
    log("[TRT] ---------- Layers Running on GPU ----------")
    for layer in engine_layers:
        if not layer["dla"]:
            log(f"[TRT] [GpuLayer] {layer['type'].upper()}: {layer['name']}")
    log(f"Engine built in {time.monotonic() - started:.5f} sec.")
    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    record(f"build {digest} {precision} dla={args.get('useDLACore', '')}")
    return {"magic": "standin-plan", "trt": VERSION, "device": DEVICE, "cc": CC, "onnx": os.path.abspath(model),
            "precision": precision, "dla": args.get("useDLACore"), "layers": engine_layers}  # fmt: skip


def load(args: dict[str, str]) -> dict[str, Any] | str:
    try:
        plan = json.loads(Path(args["loadEngine"]).read_text())
    except (OSError, ValueError):
        return "Error[1]: [runtime.cpp::parsePlan::314] Error Code 1: Serialization (Serialization assertion failed)"
    if plan.get("trt") != VERSION:
        return (f"Error[6]: The engine plan file is not compatible with this version of TensorRT, expecting library "
                f"version {VERSION} got {plan.get('trt')}, please rebuild.")  # fmt: skip
    if plan.get("cc") != CC:
        return (f"Error[6]: The engine plan file is generated on an incompatible device, expecting compute {CC} got "
                f"compute {plan.get('cc')}, please rebuild.")  # fmt: skip
    if plan.get("dla") is not None and args.get("useDLACore") != plan["dla"]:
        return "Error[3]: Cannot deserialize a DLA engine without --useDLACore set to the core it was built for"
    record(f"load {args['loadEngine']}")
    return plan


def feeds(sess: Any, args: dict[str, str]) -> dict[str, np.ndarray] | str:
    given = dict(item.split(":", 1) for item in args["loadInputs"].split(",")) if args.get("loadInputs") else {}
    rng = np.random.default_rng(1)
    out = {}
    for arg in sess.get_inputs():
        dtype = np.dtype(_DTYPES.get(arg.type, "float32"))
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        if arg.name in given:
            data = np.fromfile(given[arg.name], dtype=dtype)
            if data.size != int(np.prod(shape)):
                return f"Input {arg.name}: {given[arg.name]} holds {data.size} values, not {np.prod(shape)}"
            out[arg.name] = data.reshape(shape)
        else:
            out[arg.name] = rng.standard_normal(shape).astype(dtype)
    return out


def infer(plan: dict[str, Any], args: dict[str, str]) -> str | None:
    sess = session(plan["onnx"])
    inputs = feeds(sess, args)
    if isinstance(inputs, str):
        return inputs
    warmup_ms = float(args.get("warmUp", "200"))
    iterations = int(args.get("iterations", "10"))
    duration_s = float(args.get("duration", "3"))
    log("=== Device Information ===")
    log(f"Selected Device: {DEVICE}")
    log(f"Compute Capability: {CC}")
    if (MAJOR, MINOR) >= (8, 4):
        log(f"TensorRT version: {VERSION}")
    rails = [item.rpartition(":") for item in os.environ.get("EDGEPROF_STANDIN_RAIL", "").split(";") if item]
    saved = {path: Path(path).read_text() for path, _, _ in rails}
    for path, _, value in rails:
        _replace(path, value + "\n")
    log("Starting inference")
    zero = time.monotonic()
    trace = []
    try:
        while True:
            elapsed_ms = (time.monotonic() - zero) * 1000
            measured = [t for t in trace if t["startComputeMs"] >= warmup_ms]
            if (
                elapsed_ms >= warmup_ms
                and len(measured) >= iterations
                and (not measured or elapsed_ms - measured[0]["startH2dMs"] >= duration_s * 1000)
            ):
                break
            t0 = (time.monotonic() - zero) * 1000
            copies = {k: v.copy() for k, v in inputs.items()}  # H2D
            t1 = (time.monotonic() - zero) * 1000
            outputs = sess.run(None, copies)
            t2 = (time.monotonic() - zero) * 1000
            _ = [np.array(o, copy=True) for o in outputs]  # D2H
            t3 = (time.monotonic() - zero) * 1000
            trace.append({"startH2dMs": t0, "endH2dMs": t1, "startComputeMs": t1, "endComputeMs": t2,
                          "startD2hMs": t2, "endD2hMs": t3})  # fmt: skip
    finally:
        for path, text in saved.items():
            _replace(path, text)
    warm = [t for t in trace if t["startComputeMs"] < warmup_ms]
    timed = trace[len(warm) :]
    log(f"Warmup completed {len(warm)} queries over {warmup_ms:g} ms")
    span_s = (timed[-1]["endD2hMs"] - timed[0]["startH2dMs"]) / 1000 if timed else 0.0
    log(f"Timing trace has {len(timed)} queries over {span_s:g} s")
    lat = sorted(t["endD2hMs"] - t["startH2dMs"] for t in timed)
    if lat:
        log("=== Performance summary ===")
        log(f"Throughput: {len(timed) / max(span_s, 1e-9):g} qps")
        log(f"Latency: min = {lat[0]:g} ms, max = {lat[-1]:g} ms, mean = {sum(lat) / len(lat):g} ms, "
            f"median = {lat[len(lat) // 2]:g} ms")  # fmt: skip
    if args.get("exportTimes"):
        export = trace if (MAJOR, MINOR) < (8, 6) else timed
        Path(args["exportTimes"]).write_text(json.dumps([_time_entry(t) for t in export], indent=1))
    record(f"run {len(timed)}")
    if args.get("exportProfile") is not None:
        _profile(plan, inputs, iterations, args["exportProfile"])
    return None


def _replace(path: str, text: str) -> None:
    """Write a fake sysfs file at once (a reader never sees it empty, as with the kernel's attributes)."""
    staging = f"{path}.standin"
    Path(staging).write_text(text)
    os.replace(staging, path)


def _time_entry(t: dict[str, float]) -> dict[str, float]:
    h2d = t["endH2dMs"] - t["startH2dMs"]
    compute = t["endComputeMs"] - t["startComputeMs"]
    d2h = t["endD2hMs"] - t["startD2hMs"]
    if (MAJOR, MINOR) < (8, 2):  # TensorRT 7 / 8.0 key names
        return {"startInMs": t["startH2dMs"], "endInMs": t["endH2dMs"], "startComputeMs": t["startComputeMs"],
                "endComputeMs": t["endComputeMs"], "startOutMs": t["startD2hMs"], "endOutMs": t["endD2hMs"],
                "inMs": h2d, "computeMs": compute, "outMs": d2h, "latencyMs": h2d + compute + d2h,
                "endToEndMs": t["endD2hMs"] - t["startH2dMs"]}  # fmt: skip
    entry = {"startEnqMs": t["startH2dMs"], "endEnqMs": t["endH2dMs"], **t, "h2dMs": h2d, "computeMs": compute,
             "d2hMs": d2h, "latencyMs": h2d + compute + d2h}  # fmt: skip
    if (MAJOR, MINOR) < (8, 6):
        entry["endToEndMs"] = t["endD2hMs"] - t["startH2dMs"]
    return entry


def _profile(plan: dict[str, Any], inputs: dict[str, np.ndarray], iterations: int, path: str) -> None:
    sess = session(plan["onnx"], profile=True)
    for _ in range(iterations):
        sess.run(None, inputs)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            per_node.setdefault(name[: -len("_kernel_time")], []).append(float(event["dur"]) / 1000.0)
    rows = []
    for layer in plan["layers"]:
        runs = [sum(vals) for vals in zip(*(per_node.get(n, [0.0] * iterations) for n in layer["nodes"]), strict=False)]
        total = sum(runs)
        rows.append({"name": layer["name"], "timeMs": total, "averageMs": total / iterations,
                     "medianMs": float(np.median(runs)) if runs else 0.0})  # fmt: skip
    grand = sum(r["timeMs"] for r in rows) or 1.0
    for row in rows:
        row["percentage"] = row["timeMs"] / grand * 100
        if (MAJOR, MINOR) < (8, 6):
            del row["medianMs"]
    Path(path).write_text(json.dumps([{"count": iterations}, *rows], indent=1))


def main(argv: list[str]) -> int:
    print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{CODE}] # trtexec {' '.join(argv)}", flush=True)
    args = parse(argv)
    if isinstance(args, str):
        log(args, "E")
        return finish(False, argv)
    if "help" in args:
        print("=== Model Options ===\n  --onnx=<file>  ONNX model\n=== Build Options ===\n  --saveEngine=<file>")
        return finish(True, argv)
    if "onnx" in args:
        plan = build(args)
        if isinstance(plan, dict) and args.get("saveEngine"):
            Path(args["saveEngine"]).write_text(json.dumps(plan))
    elif "loadEngine" in args:
        plan = load(args)
    else:
        plan = "Model missing or format not recognized"
    if isinstance(plan, str):
        log(plan, "E")
        return finish(False, argv)
    failed = infer(plan, args)
    if failed:
        log(failed, "E")
        return finish(False, argv)
    return finish(True, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
