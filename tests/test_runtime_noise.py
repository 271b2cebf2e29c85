"""What the host runs for itself (compile, model inspection) keeps runtime chatter off the user's terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from host.prepare.modelfile import inspect
from host.prepare.ort_steps import ort_optimize


def _model_with_unused_initializer(path: Path) -> Path:
    unused = numpy_helper.from_array(np.zeros((4,), np.float32), name="left_over_blob")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[unused],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_ort_optimize_does_not_print_graph_warnings(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _model_with_unused_initializer(tmp_path / "m.onnx")

    ort_optimize(src, tmp_path / "opt.onnx")

    err = capfd.readouterr().err
    assert (tmp_path / "opt.onnx").exists()
    assert "Removing initializer" not in err, err


def test_inspecting_a_tflite_model_does_not_announce_a_delegate(
    tflite_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ai_edge_litert")

    model = inspect(tflite_model)

    err = capfd.readouterr().err
    assert model.inputs and model.inputs[0].shape[-1] == 3
    assert "XNNPACK" not in err, err
