"""What makes a directory a GenAI model (genai_config.json and the files it names): checked by host and agent."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

CONFIG_NAME = "genai_config.json"
#: Files in one model directory at most (a GenAI model has a handful: config, ONNX parts, tokenizer files).
MAX_FILES = 1000


class GenAIDirError(ValueError):
    """A GenAI model directory (or its tar) is malformed; the message is one line for people."""


def is_genai_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def safe_member(name: str) -> PurePosixPath:
    """A relative path that stays inside the directory, or GenAIDirError."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("..", "") for part in path.parts) or "\\" in name:
        raise GenAIDirError(f"member '{name[:120]}' would land outside the model directory")
    return path


def referenced_files(config: Any) -> list[str]:
    """Every "filename" the config names (the decoder, and embedding/vision parts of larger models)."""
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "filename" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(referenced_files(value))
    elif isinstance(config, list):
        for item in config:
            found.extend(referenced_files(item))
    return found


def check_model_dir(root: Path, where: str) -> dict[str, Any]:
    """Parse genai_config.json and check every file it names exists in `root`; returns the config."""
    config_path = root / CONFIG_NAME
    if not config_path.is_file():
        raise GenAIDirError(f"{where} has no {CONFIG_NAME}: not a GenAI model directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise GenAIDirError(f"{where}: {CONFIG_NAME} is not valid JSON ({err})") from err
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("decoder"), dict):
        raise GenAIDirError(f"{where}: {CONFIG_NAME} has no model.decoder section")
    names = referenced_files(model)
    if not names:
        raise GenAIDirError(f"{where}: {CONFIG_NAME} names no ONNX file (model.decoder.filename)")
    for name in names:
        safe_member(name)
        if not (root / name).is_file():
            raise GenAIDirError(f"{where}: {CONFIG_NAME} names '{name}', which is not in the directory")
    return config
