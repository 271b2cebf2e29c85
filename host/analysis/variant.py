"""What a run ran, beyond the model file: the settings that change the model a board executes or what it is fed.

A float run, a dynamic int8 run, a static int8 run with one calibration file and a run fed one `--inputs`
file are different things to measure, though the model file is the same. `host runs ls` shows these
settings, the dashboard's trend draws one line per variant, and `host compare` lists them among the
differences (they are settings of the run document: host/run/profiling.py ProfileSettings).
"""

from __future__ import annotations

from typing import Any

#: Digits of a file's sha256 shown: enough to tell two calibration or inputs files apart.
HASH_DIGITS = 8


def _short(value: Any) -> str:
    return str(value)[:HASH_DIGITS]


def variant_parts(document: dict[str, Any]) -> list[str]:
    """Short `name=value` words for the run's settings that change what runs; none for a plain float run."""
    settings = document.get("settings") or {}
    parts: list[str] = []
    options = settings.get("options") or {}
    for key in ("runtime", "tensorrt.precision", "tensorrt.dla_core"):  # --runtime tensorrt --precision --dla
        if options.get(key):
            parts.append(f"{key.removeprefix('tensorrt.')}={options[key]}")
    calibrated = options.get("tensorrt.precision") == "int8"
    if settings.get("quantize"):
        mode = settings.get("quantize_mode") or "dynamic"
        parts.append(f"quantize={settings['quantize']}-{mode}")
        calibrated = mode == "static"
    if calibrated:
        calibration = settings.get("calibration_sha256")
        parts.append(f"calibration={_short(calibration)}" if calibration else "calibration=random")
    if settings.get("inputs_npz"):
        sha = settings.get("inputs_sha256")
        parts.append(f"inputs=npz:{_short(sha)}" if sha else "inputs=npz")
    for name, shape in sorted((settings.get("input_shapes") or {}).items()):
        parts.append(f"shape:{name}={shape}")
    if settings.get("threads"):
        parts.append(f"threads={settings['threads']}")
    for key, value in sorted((settings.get("llama_options") or {}).items()):  # a GGUF model's llama.cpp settings
        parts.append(f"{key}={value}")
    if (document.get("model") or {}).get("format") in ("genai", "gguf"):
        parts.append("prompt=file" if settings.get("prompt_text") else f"gen_len={settings.get('gen_len')}")
    return parts


def variant_label(document: dict[str, Any]) -> str:
    """The variant in words for a legend: "as given" when nothing changes the model or what it is fed."""
    return " ".join(variant_parts(document)) or "as given"


def variant_key(document: dict[str, Any], entry: dict[str, Any]) -> tuple[str, str]:
    """(settings label, compile recipe) of one device's run: runs sharing it belong on one trend line."""
    steps = (entry.get("recipe") or {}).get("steps") or []
    return variant_label(document), ", ".join(str(s) for s in steps)
