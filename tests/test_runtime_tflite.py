"""The TFLite backend running real MobileNetV2-style .tflite files (float32 and int8) from tests/fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agent.errors import InvalidInput, InvalidModel, RuntimeMissing
from agent.runtimes.tflite import TFLiteBackend, TFLiteSession

FIXTURES = Path(__file__).parent / "fixtures"
FLOAT_MODEL = FIXTURES / "mobilenetv2_035_96_float32.tflite"
INT8_MODEL = FIXTURES / "mobilenetv2_035_96_int8.tflite"


def load(path: Path, *, threads: int = 1, providers: tuple[str, ...] = (), **options: str) -> TFLiteSession:
    return TFLiteBackend().load(str(path), threads=threads, providers=providers, options=options, op_profile=False)


def random_feeds(session: TFLiteSession, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random data of each input's declared dtype, dynamic dims set to `batch`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in session.inputs:
        shape = tuple(d if isinstance(d, int) else batch for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            feeds[spec.name] = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return feeds


def only_output(session: TFLiteSession) -> np.ndarray:
    (array,) = session.output_arrays().values()
    return array


def test_float_model_declares_one_image_input_with_dynamic_batch() -> None:
    session = load(FLOAT_MODEL)

    (spec,) = session.inputs
    (out,) = session.outputs
    assert spec.name
    assert spec.dtype == "float32"
    assert spec.shape == (None, 96, 96, 3)
    assert spec.quantization is None
    assert (out.dtype, out.shape) == ("float32", (None, 10))
    assert session.providers == ["XNNPACK", "CPU"]


@pytest.mark.parametrize("model", [FLOAT_MODEL, INT8_MODEL], ids=["float32", "int8"])
def test_twenty_inferences_on_random_inputs_give_finite_outputs_of_the_declared_shape(model: Path) -> None:
    session = load(model)
    session.prepare(random_feeds(session))
    after_prepare = only_output(session)

    for _ in range(20):
        session.run()

    output = only_output(session)
    assert output.shape == (1, 10)
    assert output.dtype == np.dtype(session.outputs[0].dtype)
    assert np.all(np.isfinite(output.astype(np.float64)))
    # run() only invokes: inputs bound once in prepare must still be in place after 20 runs.
    np.testing.assert_array_equal(output, after_prepare)
    session.close()


def test_float_model_outputs_are_class_probabilities() -> None:
    session = load(FLOAT_MODEL)
    session.prepare(random_feeds(session))

    session.run()

    probs = only_output(session)
    assert np.all(probs >= 0.0)
    assert probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_int8_model_takes_quantised_int8_input() -> None:
    session = load(INT8_MODEL)

    (spec,) = session.inputs
    assert spec.dtype == "int8"
    assert spec.quantization is not None and spec.quantization[0] > 0
    assert session.outputs[0].dtype == "int8"
    with pytest.raises(InvalidInput, match="must be int8, got float32"):
        session.prepare({spec.name: np.zeros((1, 96, 96, 3), np.float32)})


def test_one_and_two_threads_compute_the_same_result() -> None:
    results = []
    for threads in (1, 2):
        session = load(FLOAT_MODEL, threads=threads)
        session.prepare(random_feeds(session, seed=3))
        session.run()
        results.append(only_output(session))

    np.testing.assert_allclose(results[0], results[1], rtol=1e-4, atol=1e-6)


def test_xnnpack_can_be_turned_off_and_builtin_kernels_agree_with_it() -> None:
    with_xnnpack = load(FLOAT_MODEL)
    without = load(FLOAT_MODEL, xnnpack="0")
    only_cpu = load(FLOAT_MODEL, providers=("CPU",))
    feeds = random_feeds(with_xnnpack, seed=5)

    for session in (with_xnnpack, without):
        session.prepare(feeds)

    assert without.providers == ["CPU"]
    assert only_cpu.providers == ["CPU"]
    np.testing.assert_allclose(only_output(without), only_output(with_xnnpack), rtol=1e-3, atol=1e-5)


def test_onnx_provider_names_from_a_shared_device_profile_leave_xnnpack_on() -> None:
    session = load(FLOAT_MODEL, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))

    assert session.providers == ["XNNPACK", "CPU"]


def test_a_larger_batch_resizes_the_dynamic_input() -> None:
    session = load(FLOAT_MODEL)

    session.prepare(random_feeds(session, batch=3))
    session.run()

    assert only_output(session).shape == (3, 10)


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((1, 64, 64, 3), np.float32, r"must have shape \[\?, 96, 96, 3\], got \[1, 64, 64, 3\]"),
        ((1, 96, 96), np.float32, r"must have shape"),
        ((1, 96, 96, 3), np.float64, "must be float32, got float64"),
    ],
    ids=["wrong-spatial-size", "wrong-rank", "wrong-dtype"],
)
def test_inputs_that_do_not_fit_are_refused_with_one_line(shape: tuple[int, ...], dtype: type, message: str) -> None:
    session = load(FLOAT_MODEL)
    name = session.inputs[0].name

    with pytest.raises(InvalidInput, match=message) as caught:
        session.prepare({name: np.zeros(shape, dtype)})

    assert "\n" not in str(caught.value)


def test_missing_and_unknown_input_names_are_refused() -> None:
    session = load(FLOAT_MODEL)
    name = session.inputs[0].name

    with pytest.raises(InvalidInput, match="missing input"):
        session.prepare({})
    with pytest.raises(InvalidInput, match="unknown input images"):
        session.prepare({name: np.zeros((1, 96, 96, 3), np.float32), "images": np.zeros(1)})


def test_text_named_tflite_is_an_invalid_model_named_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.tflite"
    path.write_text("this is not a model\n")

    with pytest.raises(InvalidModel) as caught:
        load(path)

    message = str(caught.value)
    assert "notes.tflite" in message
    assert "not a TFLite model" in message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("keep", [0.5, 0.9], ids=["half", "most"])
def test_truncated_model_is_an_invalid_model(tmp_path: Path, keep: float) -> None:
    data = FLOAT_MODEL.read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(InvalidModel, match=r"^cut\.tflite: TFLite cannot load the model") as caught:
        load(path)

    assert "\n" not in str(caught.value)


def test_missing_model_file_is_an_invalid_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match=r"absent\.tflite: cannot read the model"):
        load(tmp_path / "absent.tflite")


def test_delegate_library_that_does_not_exist_is_a_missing_runtime(tmp_path: Path) -> None:
    with pytest.raises(RuntimeMissing, match=r"libnotthere\.so could not be loaded"):
        load(FLOAT_MODEL, delegate=str(tmp_path / "libnotthere.so"))


def test_version_names_the_package_that_runs_the_model() -> None:
    version = TFLiteBackend().version()

    package, _, number = version.partition(" ")
    assert package in ("ai-edge-litert", "tflite-runtime", "tensorflow")
    assert number[:1].isdigit()


def test_no_tflite_runtime_installed_is_a_runtime_missing_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes `import` raise ImportError, as if the package were absent.
    for module in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "tflite_runtime",
        "tflite_runtime.interpreter",
        "tensorflow",
    ):
        monkeypatch.setitem(sys.modules, module, None)
    backend = TFLiteBackend()

    with pytest.raises(RuntimeMissing, match=r"pip install 'edgeprof\[tflite\]'"):
        backend.version()
    with pytest.raises(RuntimeMissing, match="TFLite runtime not installed"):
        load(FLOAT_MODEL)
