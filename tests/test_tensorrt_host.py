"""The host's side of --runtime tensorrt: options checked in one line before any agent is reached, the compile
recipe TensorRT needs (no ONNX Runtime fusions; symmetric Q/DQ int8 from --calibration), the agent's request check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from agent.errors import InvalidInput
from agent.jobs.validation import validate
from host.prepare.compile import TENSORRT_QDQ_STEP, Compiler
from host.prepare.compile_options import CompileOptions
from host.prepare.modelfile import inspect
from protos import agent_pb2 as pb
from tests.conftest import console_script

JETSON = pb.DeviceInfo(hostname="orin", profile="jetson-orin-nano", runtimes=[pb.RuntimeInfo(name="tensorrt")])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--runtime", "tflite"], "host: --runtime takes onnxruntime or tensorrt, not 'tflite'"),
        (["--precision", "fp16"], "host: --precision and --dla choose how TensorRT builds its engine: give them"),
        (["--runtime", "tensorrt", "--precision", "bf16"], "host: --precision takes fp32, fp16, int8, not 'bf16'"),
        (["--runtime", "tensorrt", "--precision", "fp32", "--dla", "0"], "host: the DLA runs fp16 or int8 only"),
        (["--runtime", "tensorrt", "--quantize", "int8"], "host: --runtime tensorrt quantizes through --precision"),
    ],
)
def test_bad_tensorrt_options_fail_in_one_line_before_any_agent(
    squeezenet: Path, flags: list[str], message: str
) -> None:
    done = subprocess.run(
        [console_script("host"), "profile", str(squeezenet), "--device", "127.0.0.1:9", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(message)


def test_tensorrt_gets_the_onnx_model_without_onnx_runtime_fusions(squeezenet: Path, tmp_path: Path) -> None:
    model = inspect(squeezenet)
    _, ort_recipe = Compiler(CompileOptions(), cache_dir=tmp_path)(model, JETSON)
    artifact, recipe = Compiler(CompileOptions(runtime="tensorrt"), cache_dir=tmp_path)(model, JETSON)
    assert "ort-optimize" in ort_recipe["steps"]  # what the Jetson profile does for ONNX Runtime
    assert recipe["steps"] == [] and recipe["runtime"] == "tensorrt" and artifact.sha256 == model.sha256


def test_int8_with_calibration_inserts_symmetric_qdq_nodes_tensorrt_can_take(squeezenet: Path, tmp_path: Path) -> None:
    npz = tmp_path / "calib.npz"
    np.savez(npz, data_0=np.random.default_rng(2).random((2, 1, 3, 224, 224), dtype=np.float32))
    options = CompileOptions(runtime="tensorrt", precision="int8", calibration_npz=npz, calibration_samples=2)

    artifact, recipe = Compiler(options, cache_dir=tmp_path / "cache")(inspect(squeezenet), JETSON)

    assert TENSORRT_QDQ_STEP in recipe["steps"] and recipe["calibration"]["data"].startswith("npz:")
    graph = onnx.load(str(artifact.path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    zero_points = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("zero_point")}
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points.values())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tensorrt.engine_dir": "/etc"}, "option 'tensorrt.engine_dir' is set by the agent"),
        ({"runtime": "tvm"}, "runtime 'tvm' is not one of onnxruntime, tensorrt"),
        ({"runtime": "tensorrt", "tensorrt.precision": "fp8"}, "TensorRT precision 'fp8' is not one of"),
        ({"runtime": "tensorrt", "tensorrt.dla_core": "x"}, "DLA core 'x' is not a core number"),
    ],
)
def test_agent_refuses_bad_runtime_options_before_queueing(options: dict[str, str], message: str) -> None:
    request = pb.ProfileRequest(job_id="a" * 32, model_sha256="b" * 64, model_format="onnx", options=options)
    with pytest.raises(InvalidInput, match="^" + message.replace("(", r"\(")):
        validate(request)


def test_tensorrt_takes_onnx_models_only() -> None:
    request = pb.ProfileRequest(
        job_id="a" * 32, model_sha256="b" * 64, model_format="tflite", options={"runtime": "tensorrt"}
    )
    with pytest.raises(InvalidInput, match="TensorRT builds engines from ONNX models, not tflite"):
        validate(request)


def test_onnx_runtime_tensorrt_provider_keeps_its_engines_in_the_agents_engine_directory(tmp_path: Path) -> None:
    from agent.runtimes.onnx import provider_options

    options = {"tensorrt.engine_dir": str(tmp_path)}
    trt = provider_options("TensorrtExecutionProvider", options)
    assert trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path / "onnxruntime-trt")
    assert provider_options("CUDAExecutionProvider", options) == {}
    assert provider_options("CPUExecutionProvider", options) == {}


def test_a_device_without_tensorrt_fails_in_one_line_instead_of_measuring_something_else(
    squeezenet: Path, tmp_path: Path
) -> None:
    from host.prepare.compile_options import CompileError

    cpu_only = pb.DeviceInfo(hostname="pi", profile="rpi5", runtimes=[pb.RuntimeInfo(name="onnxruntime")])
    with pytest.raises(CompileError, match=r"^device pi has no TensorRT \(it reports: onnxruntime\)"):
        Compiler(CompileOptions(runtime="tensorrt"), cache_dir=tmp_path)(inspect(squeezenet), cpu_only)
