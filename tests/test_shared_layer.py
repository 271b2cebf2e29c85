"""A host runs without the board package: compile, shape checks and TFLite inputs need no agent/ installed.

That host and agent share only protos/ and device_profiles/ is an import-linter contract (tests/test_layers.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_host_checks_shapes_compiles_and_reads_tflite_without_the_agent_package(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["agent"] = None  # as on a laptop that never installed the board package
        from host.prepare import examples
        from host.prepare.compile import Compiler
        from host.prepare.compile_options import CompileOptions
        from host.prepare.modelfile import ModelFileError, check_input_shapes, inspect
        from protos import agent_pb2 as pb

        squeezenet = inspect(examples.resolve("example:squeezenet"))
        try:
            check_input_shapes(squeezenet, {{"data_0": "1x3x32"}})
        except ModelFileError as err:
            print("shape error:", err)
        info = pb.DeviceInfo(profile="rpi5", hostname="pi", runtimes=[pb.RuntimeInfo(name="onnxruntime")])
        artifact, recipe = Compiler(CompileOptions(), cache_dir=__import__("pathlib").Path({str(tmp_path)!r}))(
            squeezenet, info
        )
        print("recipe:", recipe["steps"])
        tflite = inspect(__import__("pathlib").Path({str(ROOT / "tests/fixtures/mobilenetv2_035_96_float32.tflite")!r}))
        print("tflite inputs:", [(d.name, d.dtype, d.shape) for d in tflite.inputs])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert "shape error: --input-shape data_0=1x3x32 has rank 3" in result.stdout
    assert "recipe: ['check'," in result.stdout
    assert "tflite inputs: [(" in result.stdout and "(None, 96, 96, 3)" in result.stdout  # the batch dim is dynamic
