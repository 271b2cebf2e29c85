"""Checks a model file on the host before anything is sent: format, integrity, inputs, --input-shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from host.fleet.client import sha256_file
from host.prepare.onnx_check import check_model


class ModelFileError(Exception):
    """A user mistake about the model file, reported as one line."""


@dataclass(frozen=True)
class InputDecl:
    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class ModelFile:
    path: Path
    format: str  # "onnx" | "tflite" | "ort" | "gguf" | "genai" (a GenAI directory packed as a tar: path is the tar)
    sha256: str
    size_bytes: int
    inputs: tuple[InputDecl, ...]
    #: What the user named, where it is not `path`: the GenAI model directory that `path` packs.
    source: Path | None = None
    #: A GGUF model's quantization type as the file declares it (Q4_K_M, Q8_0, F16, ...); "" for other formats.
    quantization: str = ""

    @property
    def display_path(self) -> Path:
        """The model as the user knows it: what result documents and reports name."""
        return self.source or self.path


_ONNX_ELEM = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}


def detect_format(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[4:8] == b"ORTM":
        return "ort"
    if head[:4] == b"GGUF":
        return "gguf"
    if suffix == ".tflite":
        raise ModelFileError(f"{path} is named .tflite but is not a TFLite flatbuffer (no TFL3 identifier)")
    if suffix == ".ort":
        raise ModelFileError(f"{path} is named .ort but is not an ONNX Runtime format model")
    if suffix == ".gguf":
        raise ModelFileError(f"{path} is named .gguf but is not a GGUF file (it does not start with the GGUF magic)")
    if suffix in (".onnx", ""):
        return "onnx"
    raise ModelFileError(f"{path}: unknown model type '{suffix}'; edgeprof takes .onnx, .ort, .tflite and .gguf models")


def _onnx_inputs(path: Path) -> tuple[InputDecl, ...]:
    try:
        import onnx
    except ImportError as err:
        raise ModelFileError(
            "the host needs the onnx package to check ONNX models: pip install 'edgeprof[host]'"
        ) from err
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # DecodeError, ValueError, ... from protobuf parsing
        raise ModelFileError(f"{path} is not a valid ONNX model (cannot parse it: {_short(err)})") from err
    if not model.graph.node:
        raise ModelFileError(f"{path} is not a valid ONNX model (its graph has no nodes)")
    try:
        check_model(model)
    except Exception as err:
        raise ModelFileError(f"{path} is not a valid ONNX model: {_short(err)}") from err
    initializers = {init.name for init in model.graph.initializer}
    decls = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        ttype = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim)
        decls.append(InputDecl(value.name, _ONNX_ELEM.get(ttype.elem_type, str(ttype.elem_type)), shape))
    return tuple(decls)


def check_input_shapes(model: ModelFile, shapes: dict[str, str]) -> None:
    """Catch --input-shape mistakes on the host (names, rank, fixed dims) for a clear early error."""
    if not model.inputs:
        return
    from protos.inputs import InputError, TensorSpec, resolve_shapes

    specs = [TensorSpec(d.name, d.dtype, d.shape) for d in model.inputs]
    try:
        resolve_shapes(specs, shapes)
    except InputError as err:
        raise ModelFileError(str(err)) from err


def inspect(path: Path) -> ModelFile:
    """Validate a model file and describe it; ModelFileError (one line) for anything wrong."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        return _genai_dir(path)
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path} is empty")
    with open(path, "rb") as fh:
        head = fh.read(16)
    model_format = detect_format(path, head)
    if model_format == "gguf":
        return _gguf(path, size)
    inputs: tuple[InputDecl, ...] = ()
    if model_format == "onnx":
        inputs = _onnx_inputs(path)
    elif model_format == "tflite":
        inputs = _tflite_inputs(path)
    return ModelFile(path=path, format=model_format, sha256=sha256_file(path), size_bytes=size, inputs=inputs)


def _genai_dir(path: Path) -> ModelFile:
    """A GenAI model directory, checked and packed into a deterministic tar (host/prepare/genai_pack.py)."""
    from host.prepare.genai_pack import pack
    from protos.genai_dir import GenAIDirError

    try:
        tar = pack(path)
    except GenAIDirError as err:
        raise ModelFileError(str(err)) from err
    except OSError as err:
        raise ModelFileError(f"cannot pack the GenAI model {path}: {err.strerror or err}") from err
    return ModelFile(
        path=tar, format="genai", sha256=sha256_file(tar), size_bytes=tar.stat().st_size, inputs=(), source=path
    )


def _gguf(path: Path, size: int) -> ModelFile:
    """A GGUF model (llama.cpp), its header read with the gguf package: damage is one line, before any upload."""
    from protos.gguf_file import GGUFFileError, read_gguf

    try:
        info = read_gguf(path, str(path))
    except ImportError as err:
        raise ModelFileError(
            "the host needs the gguf package to check GGUF models: pip install 'edgeprof[host]'"
        ) from err
    except GGUFFileError as err:
        raise ModelFileError(str(err)) from err
    return ModelFile(
        path=path, format="gguf", sha256=sha256_file(path), size_bytes=size, inputs=(), quantization=info.quantization
    )


def _tflite_inputs(path: Path) -> tuple[InputDecl, ...]:
    """Inputs from the flatbuffer when a TFLite runtime is on the host; the agent checks in any case."""
    from host.prepare.tflite_inputs import TFLiteInputsError, tflite_inputs

    try:
        found = tflite_inputs(path)
    except TFLiteInputsError as err:
        raise ModelFileError(f"{path} is not a valid TFLite model: {err}") from err
    return tuple(InputDecl(name, dtype, shape) for name, dtype, shape in found or ())


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
