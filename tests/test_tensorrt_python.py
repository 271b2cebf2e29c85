"""The Python-bindings path of the TensorRT runtime, behind its seam: fake `tensorrt` and CUDA (tests/fake_tensorrt.py)
that run the model with ONNX Runtime, so the copies, addresses, flags and caches are all exercised for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from agent.errors import InvalidInput
from agent.runtimes.tensorrt_engines import TensorRTOptions
from agent.runtimes.tensorrt_python import load_python_session
from tests.fake_tensorrt import FakeCuda, FakeTensorRT


def _load(model: Path, engines: Path, trt: FakeTensorRT, cuda: FakeCuda, op_profile: bool = False, **options: str):  # type: ignore[no-untyped-def]
    opts = {"tensorrt.engine_dir": str(engines), **options}
    session = load_python_session(str(model), TensorRTOptions.from_options(opts), opts, op_profile, trt=trt, cuda=cuda)
    session.context.cuda = cuda
    return session


def test_fp16_on_dla_builds_with_those_flags_and_runs_the_real_model_through_device_buffers(
    squeezenet: Path, tmp_path: Path
) -> None:
    trt, cuda = FakeTensorRT(), FakeCuda()
    session = _load(squeezenet, tmp_path, trt, cuda, **{"tensorrt.precision": "fp16", "tensorrt.dla_core": "0"})
    (build,) = trt.builds
    assert build["flags"] == ["FP16", "GPU_FALLBACK"] and build["dla"] == 0 and build["device_type"] == "DLA"
    reference = ort.InferenceSession(str(squeezenet), providers=["CPUExecutionProvider"])
    feed = {reference.get_inputs()[0].name: np.random.default_rng(3).standard_normal((1, 3, 224, 224), "float32")}

    session.prepare(feed)
    cuda.calls.clear()
    session.run()

    assert cuda.calls == ["htod", "record", "execute", "record", "dtoh", "sync"]
    (name,) = session._outputs
    np.testing.assert_allclose(session._host[name], reference.run(None, feed)[0], rtol=1e-5)
    notes = session.notes()
    assert int(notes["dla_layers"]) > 0 and notes["engine_cached"] == "false"
    assert float(notes["gpu_compute_ms_p50"]) >= 0
    assert notes["latency_timer"].startswith("host clock around copy-in, execute_async_v3")
    session.close()
    assert cuda.memory == {}


def test_second_load_builds_nothing_and_a_new_engine_reuses_the_timing_cache(squeezenet: Path, tmp_path: Path) -> None:
    trt, cuda = FakeTensorRT(), FakeCuda()
    _load(squeezenet, tmp_path, trt, cuda)
    again = _load(squeezenet, tmp_path, trt, cuda)
    assert len(trt.builds) == 1 and again.notes()["engine_cached"] == "true"
    _load(squeezenet, tmp_path, trt, cuda, **{"tensorrt.precision": "int8"})
    assert len(trt.builds) == 2 and trt.timing_loaded[0] == b"" and trt.timing_loaded[1] != b""


def test_an_engine_from_another_gpu_is_rebuilt(squeezenet: Path, tmp_path: Path) -> None:
    _load(squeezenet, tmp_path, FakeTensorRT(device="sm87"), FakeCuda())
    other = FakeTensorRT(device="sm72")  # deserialize_cuda_engine refuses the plan, as TensorRT does
    _load(squeezenet, tmp_path, other, FakeCuda())
    assert len(other.builds) == 1


def test_layer_profile_from_the_bindings_profiler(squeezenet: Path, tmp_path: Path) -> None:
    trt, cuda = FakeTensorRT(), FakeCuda()
    session = _load(squeezenet, tmp_path, trt, cuda, op_profile=True)
    session.prepare({"data_0": np.zeros((1, 3, 224, 224), "float32")})
    for _ in range(4):
        session.run()
    by_kind, top = session.op_profile()
    assert [row.op_type for row in by_kind] == ["Conv", "Reformat"]
    assert top[0].calls == 5 and top[0].total_us == pytest.approx(2500.0)  # prepare's run and 4 more


def test_tensorrt_8_networks_ask_for_explicit_batch_and_11_refuses_fp16(squeezenet: Path, tmp_path: Path) -> None:
    old = FakeTensorRT(version="8.6.1")
    _load(squeezenet, tmp_path, old, FakeCuda())
    assert old.builds[0]["network_flags"] == 1
    with pytest.raises(InvalidInput, match="strongly typed"):
        _load(squeezenet, tmp_path, FakeTensorRT(version="11.4.0"), FakeCuda(), **{"tensorrt.precision": "fp16"})
