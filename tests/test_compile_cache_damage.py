"""A damaged artifact in the host's compile cache is rebuilt, never served.

The cache is content-addressed by the model and its recipe, not by the artifact's own bytes: a disk
error, an interrupted copy or a stray edit can leave a file under the right name with the wrong content.
Each case builds a real artifact (ONNX Runtime optimisation of squeezenet), damages the cached file, and
compiles again with a fresh Compiler, as the next `host profile` would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from host.prepare.compile import Compiler
from host.prepare.compile_options import CompileOptions
from host.prepare.modelfile import ModelFile, inspect
from protos import agent_pb2 as pb

SQUEEZENET = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
DEVICE = pb.DeviceInfo(hostname="rapl-box", profile="x86-rapl", runtimes=[pb.RuntimeInfo(name="onnxruntime")])


def _truncate(path: Path) -> None:
    """Half the file: what an interrupted copy or a full disk leaves."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _alter_a_weight(path: Path) -> None:
    """Still a valid ONNX model, with one weight changed: parsing alone cannot tell."""
    model = onnx.load(str(path))
    tensor = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] += 1.0
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(model, str(path))


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _output(model: ModelFile) -> np.ndarray:
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    feed = np.random.default_rng(7).random((1, 3, 224, 224), dtype=np.float32)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: feed})[0])


@pytest.mark.parametrize("damage", [_truncate, _alter_a_weight], ids=["truncated", "altered-weight"])
def test_a_damaged_cached_artifact_is_rebuilt_not_served(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    model = inspect(SQUEEZENET)
    built, recipe = Compiler(CompileOptions(), cache_dir=tmp_path)(model, DEVICE)
    assert recipe["cached"] is False and recipe["steps"]
    good_sha, good_output = built.sha256, _output(built)

    damage(built.path)
    assert file_sha(built.path) != good_sha

    again, recipe = Compiler(CompileOptions(), cache_dir=tmp_path)(model, DEVICE)

    assert recipe["cached"] is False, "the damaged artifact was served as a cache hit"
    assert again.path == built.path and again.sha256 == file_sha(again.path) == good_sha
    np.testing.assert_array_equal(_output(again), good_output)
    # And the rebuilt artifact is a normal cache hit from then on.
    third, recipe = Compiler(CompileOptions(), cache_dir=tmp_path)(model, DEVICE)
    assert recipe["cached"] is True and third.sha256 == good_sha
