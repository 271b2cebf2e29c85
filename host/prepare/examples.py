"""`example:NAME` model paths: the onnx package's light test models (real CNN layers, constant weights)."""

from __future__ import annotations

from pathlib import Path

PREFIX = "example:"


def examples_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("light_") for p in examples_dir().glob("light_*.onnx"))


def resolve(model: str) -> Path:
    """ "example:squeezenet" -> the file in the onnx package; any other string is a plain path."""
    if not model.startswith(PREFIX):
        return Path(model)
    name = model[len(PREFIX) :]
    path = examples_dir() / f"light_{name}.onnx"
    if not path.is_file():
        from host.prepare.modelfile import ModelFileError

        raise ModelFileError(f"no example model '{name}' (examples: {', '.join(available())})")
    return path
