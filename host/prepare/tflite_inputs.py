"""The inputs a .tflite model declares, read on the host with LiteRT (or tflite-runtime) when one is installed.

Only to check --input-shape early and to fix shapes: the agent reads the model again with its own runtime.
The interpreter is built without default delegates: reading the inputs needs none, and LiteRT announces
the XNNPACK delegate it creates on the terminal.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


class TFLiteInputsError(ValueError):
    """The file is not a model the TFLite interpreter can load; the message is one line."""


def _interpreter_module() -> Any | None:
    for name in _INTERPRETER_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _dims(detail: dict[str, Any]) -> tuple[int | None, ...]:
    # shape_signature keeps -1 for dims the converter left dynamic (typically the batch); shape holds
    # the size currently allocated, which is 1 for those.
    signature = detail.get("shape_signature")
    dims: Sequence[int] = signature if signature is not None and len(signature) else detail["shape"]
    return tuple(int(d) if d >= 0 else None for d in dims)


def tflite_inputs(path: Path) -> list[tuple[str, str, tuple[int | None, ...]]] | None:
    """(name, numpy dtype name, dims with None for dynamic) of each input; None without a TFLite runtime."""
    module = _interpreter_module()
    if module is None:
        return None
    import numpy as np

    kwargs: dict[str, Any] = {"model_path": str(path)}
    resolver = getattr(module, "OpResolverType", None)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = module.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as err:
        raise TFLiteInputsError(" ".join(str(err).split())[:300] or type(err).__name__) from err
    return [(str(d["name"]), np.dtype(d["dtype"]).name, _dims(d)) for d in interpreter.get_input_details()]
