"""ONNX models on phones through onnxruntime_perf_test: flags, its printed summary, its profile, end to end.

The emulated phone's onnxruntime_perf_test (tests/adb_emulator.py) runs the model with the onnxruntime
package on this machine and prints the tool's summary; with -p the profile is ONNX Runtime's own profiler
output, so per-inference windows and operator times come through the real parsing path.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.adb import ort_perf
from agent.errors import InvalidInput
from host.prepare.compile import CompileError, CompileOptions, Compiler
from host.prepare.modelfile import inspect
from tests.adb_emulator import PhoneConfig, write_ort_runner
from tests.test_adb_bridge import adb_port, agent_cli, attach, bridge, detach, host, profile  # noqa: F401 - adb_port: fixture
from tests.test_compile import SQUEEZENET, device


def _run_onnx(port: str, tmp: Path, model: Path, config: PhoneConfig, *agent_args: str, extra: tuple = ()) -> dict:
    phone = attach(port, tmp, config=config)
    runner = write_ort_runner(tmp / "phone-bin" / "onnxruntime_perf_test")
    agent_cli(port, "adb", "install-runner", str(runner), "--serial", phone.serial, check=True)
    (tmp / "agent").mkdir()
    agent = bridge(tmp, port, phone, "agent", *agent_args).start(timeout_s=60)
    try:
        run = profile(port, model, tmp / "r.json", agent.address, extra=extra)
        exported = host(port, "runs", "export", "--all").stdout.splitlines()
    finally:
        agent.stop()
        detach(port, phone)
    assert run["result"], run["proc"].stderr
    (dev,) = run["result"]["devices"]
    (raw,) = json.loads(exported[-1])["raw"].values()
    durations_ns = _ints(raw["end_ns"]) - _ints(raw["start_ns"])
    return {**dev, "returncode": run["proc"].returncode, "stderr": run["proc"].stderr, "durations_ns": durations_ns}


def _ints(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<i8")


def test_onnx_model_runs_on_the_phone_with_per_inference_latency_energy_and_op_profile(
    adb_port: str,  # noqa: F811
    squeezenet: Path,
    tmp_path: Path,
) -> None:
    dev = _run_onnx(adb_port, tmp_path, squeezenet, PhoneConfig(), extra=("--op-profile",))
    assert dev["returncode"] == 0, dev["stderr"]
    assert dev["status"] == "ok", dev["error"]
    assert dev["runtime"].startswith("onnxruntime_perf_test ")
    assert dev["execution_provider"] == "xnnpack"  # android-qualcomm's first provider
    assert dev["latency_source"] == "per_inference"
    # Each inference is a sample: the distribution is over every measured run, not over blocks.
    assert dev["latency_ms"]["n"] == dev["n_inferences"] >= 40
    assert 0 < dev["latency_ms"]["min"] < dev["latency_ms"]["max"] < 1000
    # Each stored window is that inference's own duration from the profile, not its block's mean repeated.
    durations = dev["durations_ns"]
    assert len(durations) == dev["n_inferences"]
    assert len(set(durations.tolist())) > int(dev["notes"]["blocks"])
    assert dev["peak_rss_mb"] > 1
    assert dev["energy"]["problem"] is None, dev["energy"]["problem"]
    assert dev["energy"]["energy_mj_per_inference"] > 0
    ops = dev["op_profile"]
    assert "Conv" in {row["op_type"] for row in ops["by_type"]}
    assert ops["top_nodes"] and all(row["calls"] >= dev["n_inferences"] for row in ops["top_nodes"])


def test_execution_provider_that_rejects_the_model_says_so(
    adb_port: str,  # noqa: F811
    squeezenet: Path,
    tmp_path: Path,
) -> None:
    config = PhoneConfig(runner={"reject_providers": ["nnapi"]})
    dev = _run_onnx(adb_port, tmp_path, squeezenet, config, "--delegate", "nnapi")
    assert dev["returncode"] == 1
    assert dev["status"] == "error"
    assert dev["error"].startswith("the nnapi execution provider rejected the model on phone 127.0.0.1:")
    assert dev["error"].endswith(": NNAPI execution provider failed to compile the model: unsupported operator")
    assert dev["error_kind"] == "invalid_model"


def test_onnx_model_goes_as_it_is_to_a_phone_with_onnxruntime_and_is_converted_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx2tf", None)  # as without the tflite-convert extra: conversion is refused
    model = inspect(SQUEEZENET)
    compiler = Compiler(CompileOptions(), cache_dir=tmp_path)
    phone = device("android-qualcomm", ("tflite", "onnxruntime_perf_test"))
    assert compiler.recipe(model, phone)["target_format"] == "onnx"
    # No onnxruntime_perf_test, or ONNX Runtime's Python package on a Termux agent: conversion, as before.
    for runtimes in (("tflite",), ("tflite", "onnxruntime")):
        with pytest.raises(CompileError, match=r"runs \.tflite models"):
            compiler.recipe(model, device("android-qualcomm", runtimes))


# -- the readers ----------------------------------------------------------------------------------------

# Shaped like onnxruntime_perf_test's output with -s (performance_runner.cc), newer "cost total" wording.
SUMMARY = """Setting intra_op_num_threads to 4
Session creation time cost: 0.217932 s
First inference time cost: 196 ms
Total inference time cost: 0.49481 s
Total inference requests: 5
Average inference time cost total: 98.961997 ms
Total inference run time: 0.494854 s
Number of inferences per second: 10.104
Avg CPU usage: 11 %
Peak working set size: 271122432 bytes
Avg CPU usage:11
Peak working set size:271122432
Runs:5
Min Latency: 0.0958204 s
Max Latency: 0.101519 s
P50 Latency: 0.0995086 s
P90 Latency: 0.101519 s
P95 Latency: 0.101519 s
P99 Latency: 0.101519 s
P999 Latency: 0.101519 s
"""


def test_summary_gives_times_in_us_counts_percentiles_and_memory() -> None:
    result = ort_perf.parse(SUMMARY)
    assert result.complete and not result.errors
    assert result.init_us == pytest.approx(217932)
    assert result.first_inference_us == 196000
    assert result.inference_avg_us == pytest.approx(98961.997)
    assert result.runs["count"] == 5
    assert result.runs["median"] == pytest.approx(99508.6) and result.runs["p999"] == pytest.approx(101519)
    assert result.peak_memory_mb == pytest.approx(271122432 / 1024**2)
    older = ort_perf.parse("Total inference requests: 3\nAverage inference time cost: 12.5 ms\n")
    assert older.inference_avg_us == 12500 and older.complete


def test_failed_run_is_incomplete_and_names_its_error() -> None:
    output = "Setting intra_op_num_threads to 4\nError: [ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model failed\n"
    assert not ort_perf.parse(output).complete
    assert ort_perf.failure_line(output) == "Error: [ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model failed"


def test_profile_model_runs_are_the_last_count_inferences() -> None:
    events = [
        {"cat": "Session", "name": "model_loading_uri", "ts": 1, "dur": 900},
        {"cat": "Session", "name": "model_run", "ts": 1000, "dur": 400},  # the tool's warm-up run
        {"cat": "Node", "name": "conv1_kernel_time", "ts": 1300, "dur": 50, "args": {"op_name": "Conv"}},
        {"cat": "Session", "name": "model_run", "ts": 1500, "dur": 300},
        {"cat": "Session", "name": "model_run", "ts": 1900, "dur": 310},
    ]
    assert ort_perf.run_events(events, 2) == [(1500.0, 300.0), (1900.0, 310.0)]
    assert ort_perf.load_profile("[\n" + ",\n".join(['{"cat": "Session"}', "3"]) + "\n]") == [{"cat": "Session"}]
    assert ort_perf.load_profile("") == []


def test_delegates_map_to_execution_providers() -> None:
    assert ort_perf.provider_flags("nnapi") == ["-e", "nnapi"]
    assert ort_perf.provider_flags("qnn") == ["-e", "qnn", "-i", "backend_type|htp"]
    assert ort_perf.provider_flags("") == ["-e", "cpu"]
    with pytest.raises(InvalidInput, match="delegate 'gpu' is LiteRT's"):
        ort_perf.provider_flags("gpu")
    with pytest.raises(InvalidInput, match="unknown delegate 'tpu' for ONNX models"):
        ort_perf.provider_flags("tpu")
