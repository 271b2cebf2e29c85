"""Host and agent share only protos/ and device_profiles/: a host runs without the board package, and back."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> dict[str, set[str]]:
    """Every top-level package each module of ``package`` imports (absolute imports, lazy ones too)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "other"), [("host", "agent"), ("agent", "host")])
def test_neither_side_imports_the_other(package: str, other: str) -> None:
    offenders = sorted(module for module, names in _imports(package).items() if other in names)

    assert offenders == [], (
        f"{package}/ imports {other}/ in {offenders}: move what both use to protos/ or device_profiles/"
    )


def test_host_checks_shapes_compiles_and_reads_tflite_without_the_agent_package(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["agent"] = None  # as on a laptop that never installed the board package
        from host import examples
        from host.compile import Compiler
        from host.compile_options import CompileOptions
        from host.modelfile import ModelFileError, check_input_shapes, inspect
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
