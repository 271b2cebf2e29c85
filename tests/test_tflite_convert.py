"""ONNX → TFLite through the optional converter: the one-line error without it, real conversions with it.

The conversions need ``pip install 'edgeprof[tflite-convert]'`` and are skipped without it. They use
squeezenet from the onnx package's light models with seeded random weights in place of its constant
fills: with every weight equal, every class gets probability 0.001 and any conversion, right or wrong,
would agree with ONNX Runtime.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import host.prepare.tflite_convert as tflite_convert
from host.prepare.modelfile import inspect
from host.prepare.tflite_convert import ConversionError, available, compare_outputs, convert_onnx_to_tflite
from tests.conftest import console_script
from tests.faultlib import AgentProc, isolated_env

LIGHT_SQUEEZENET = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
EXTRA = "pip install 'edgeprof[tflite-convert]'"

needs_converter = pytest.mark.skipif(not available(), reason=f"the ONNX→TFLite converter is not installed: {EXTRA}")


def random_weight_squeezenet(path: Path, *, batch: int | str = 1) -> Path:
    """light_squeezenet (opset 9) with He-initialised seeded weights; `batch` may name a dynamic dim."""
    source = onnx.load(str(LIGHT_SQUEEZENET))
    graph = source.graph
    by_name = {init.name: init for init in graph.initializer}
    rng = np.random.default_rng(0)
    nodes, weights, shape_inputs = [], [], set()
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            nodes.append(node)
            continue
        shape = tuple(int(d) for d in numpy_helper.to_array(by_name[node.input[0]]))
        shape_inputs.add(node.input[0])
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
        scale = np.sqrt(2.0 / fan_in) if fan_in else 0.1
        weights.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), node.output[0]))
    weights += [init for init in graph.initializer if init.name not in shape_inputs]
    constant = {w.name for w in weights} | shape_inputs
    (data,) = [value for value in graph.input if value.name not in constant]
    for value in (data, *graph.output):
        first = value.type.tensor_type.shape.dim[0]
        first.Clear()
        if isinstance(batch, str):
            first.dim_param = batch
        else:
            first.dim_value = batch
    model = helper.make_model(
        helper.make_graph(nodes, "squeezenet_random", [data], list(graph.output), weights),
        opset_imports=list(source.opset_import),
    )
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_weight_squeezenet(tmp_path_factory.mktemp("models") / "squeezenet.onnx")


def ort_output(model: Path, feed: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: feed})[0])


def tflite_output(model: Path, feed: np.ndarray) -> np.ndarray:
    """The agent's own TFLite backend runs the converted file."""
    from agent.runtimes.tflite import TFLiteBackend

    session = TFLiteBackend().load(str(model), threads=1, providers=(), options={}, op_profile=False)
    (spec,) = session.inputs
    session.prepare({spec.name: feed})
    session.run()
    (output,) = session.output_arrays().values()
    session.close()
    return output


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tflite-convert-"))


# --- without the converter (these run in every environment) ------------------------------------------------


def test_missing_converter_is_one_line_naming_the_extra(
    squeezenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx2tf", None)  # hidden as if not installed, without uninstalling it
    dst = tmp_path / "out" / "squeezenet.tflite"

    with pytest.raises(ConversionError) as caught:
        convert_onnx_to_tflite(squeezenet, dst)

    message = str(caught.value)
    assert not available()
    assert "\n" not in message
    assert EXTRA in message
    assert "convert the model yourself and profile the .tflite" in message
    assert "onnx2tf" in message
    assert not dst.exists()


def test_converter_that_cannot_be_imported_is_reported_with_the_extra(
    squeezenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the child process reports when onnx2tf is installed but one of its imports is broken.
    monkeypatch.setitem(sys.modules, "onnx2tf", None)
    request = {"src": str(squeezenet), "out_dir": str(tmp_path / "out"), "input_shapes": {}}
    (tmp_path / "request.json").write_text(json.dumps(request))

    status = tflite_convert._child_main(str(tmp_path / "request.json"))

    result = json.loads((tmp_path / "result.json").read_text())
    assert status == 1
    assert result["ok"] is False
    assert EXTRA in result["error"]


def test_channels_last_output_is_compared_with_the_channels_first_original() -> None:
    expected = np.random.default_rng(0).standard_normal((1, 8, 5, 6)).astype(np.float32)
    channels_last = expected.transpose(0, 2, 3, 1) + np.float32(1e-6)

    error = compare_outputs([expected], [channels_last])

    assert error["max_abs_error"] == pytest.approx(1e-6, rel=0.05)


def test_wrong_values_and_wrong_shapes_are_caught() -> None:
    expected = np.full((1, 1000, 1, 1), 0.001, np.float32)
    all_ones = np.ones((1, 1, 1, 1000), np.float32)  # what a Softmax over the wrong axis gives

    error = compare_outputs([expected], [all_ones])

    assert error["max_rel_error"] > 0.99
    with pytest.raises(ConversionError, match="no converted output fits ONNX output 0"):
        compare_outputs([expected], [np.ones((1, 999), np.float32)])


def test_outputs_in_another_order_are_paired_by_shape() -> None:
    rng = np.random.default_rng(1)
    logits, boxes = rng.standard_normal((1, 10)), rng.standard_normal((1, 4, 7))

    error = compare_outputs([logits, boxes], [boxes.copy(), logits.copy()])

    assert error["max_abs_error"] == 0.0


# --- with the converter -----------------------------------------------------------------------------------


@pytest.mark.slow
@needs_converter
def test_squeezenet_converts_and_agrees_with_onnx_runtime(squeezenet: Path, tmp_path: Path) -> None:
    dst = tmp_path / "artifacts" / "squeezenet.tflite"

    recipe = convert_onnx_to_tflite(squeezenet, dst)

    assert recipe["converter"] == "onnx2tf"
    assert recipe["version"] == tflite_convert._dist_version("onnx2tf") != "none"
    assert recipe["check"]["inputs"] == [{"name": "data_0", "shape": [1, 3, 224, 224]}]
    assert recipe["check"]["max_rel_error"] <= 1e-5
    artifact = inspect(dst)  # what host/prepare/compile.py does with every artifact
    assert artifact.format == "tflite"
    assert [(d.name, d.dtype, d.shape) for d in artifact.inputs] == [("data_0", "float32", (1, 3, 224, 224))]
    feed = np.random.default_rng(42).standard_normal((1, 3, 224, 224)).astype(np.float32)
    want = ort_output(squeezenet, feed)  # (1, 1000, 1, 1) class probabilities
    got = tflite_output(dst, feed).reshape(want.shape)  # (1, 1000, 1, 1) or channels-last (1, 1, 1, 1000)
    assert float(np.max(np.abs(got - want))) <= 1e-5
    assert got.argmax() == want.argmax()
    assert leftovers(dst.parent) == []
    assert "tensorflow" not in sys.modules  # the converter ran in its own process


@pytest.mark.slow
@needs_converter
def test_dynamic_batch_is_fixed_by_input_shapes_with_channels_last_inputs(tmp_path: Path) -> None:
    model = random_weight_squeezenet(tmp_path / "squeezenet-n.onnx", batch="N")
    dst = tmp_path / "squeezenet-n.tflite"

    recipe = convert_onnx_to_tflite(model, dst, input_shapes={"data_0": (2, 3, 224, 224)}, keep_nchw_inputs=False)

    assert recipe["options"]["input_shapes"] == {"data_0": [2, 3, 224, 224]}
    assert recipe["options"]["keep_nchw_inputs"] is False
    assert [d.shape for d in inspect(dst).inputs] == [(2, 224, 224, 3)]
    feed = np.random.default_rng(7).standard_normal((2, 3, 224, 224)).astype(np.float32)
    want = ort_output(model, feed)
    got = tflite_output(dst, feed.transpose(0, 2, 3, 1).copy()).reshape(want.shape)
    assert float(np.max(np.abs(got - want))) <= 1e-5


@pytest.mark.slow
@needs_converter
def test_op_the_converter_lacks_is_a_one_line_error_and_writes_nothing(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    src = tmp_path / "custom.onnx"
    onnx.save(model, str(src))
    dst = tmp_path / "custom.tflite"

    with pytest.raises(ConversionError) as caught:
        convert_onnx_to_tflite(src, dst)

    assert str(caught.value) == (
        f"converting custom.onnx to TFLite failed: onnx2tf {tflite_convert._dist_version('onnx2tf')} "
        "cannot convert ONNX op Frobnicate"
    )
    assert not dst.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@needs_converter
def test_onnx_profiled_on_a_tflite_board_is_converted_once_and_runs_in_litert(tmp_path: Path) -> None:
    """The user's path: `host profile model.onnx` against an agent whose profile runs TFLite."""
    model = random_weight_squeezenet(tmp_path / "squeezenet.onnx")
    agent = AgentProc(tmp_path, "--profile", "android-generic").start()
    try:
        docs = []
        for run in ("first", "second"):
            out = tmp_path / f"{run}.json"
            proc = subprocess.run(
                [
                    *(console_script("host"), "profile", str(model), "--device", agent.address, "--runs", "20"),
                    *("--min-duration", "0.2", "--idle", "0", "--threads", "1", "--quiet", "--json", str(out)),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env=isolated_env(tmp_path),
            )
            assert proc.returncode == 0, proc.stderr
            docs.append(json.loads(out.read_text())["devices"][0])
    finally:
        agent.stop()

    first, second = docs
    assert first["status"] == "ok" and first["runtime"].startswith("tflite ") and first["n_inferences"] >= 20
    recipe = first["recipe"]
    assert recipe["target_format"] == "tflite" and recipe["steps"] == ["check", "fold-constants", "tflite-convert"]
    assert recipe["converter"]["converter"] == "onnx2tf" and recipe["cached"] is False
    assert recipe["conversion_check"]["max_rel_error"] <= 1e-5
    assert first["upload_bytes"] > 0
    # Second run: the converted artifact comes from the host's cache and is already on the board.
    assert second["status"] == "ok" and second["recipe"]["cached"] is True and second["upload_bytes"] == 0
    assert second["recipe"]["conversion_check"] == recipe["conversion_check"]
