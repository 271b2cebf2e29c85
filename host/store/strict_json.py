"""Strict JSON for result documents: null where a number is not finite, and a writer that refuses NaN.

Python's json module writes NaN and Infinity by default, which most parsers (JavaScript, jq, Go, Rust)
reject. Documents are cleaned where they are built (`finite_or_null`); the writers use `dumps`, whose
``allow_nan=False`` makes a regression fail loudly instead of writing a file nobody else can read.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, scalars) with every NaN or infinity replaced by None."""
    if isinstance(value, float):  # numpy float64 is a float too
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_null(item) for item in value]
    if isinstance(value, tuple):
        return tuple(finite_or_null(item) for item in value)
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():  # other numpy scalars (float32)
        number = value.item()
        return number if not isinstance(number, float) or math.isfinite(number) else None
    return value


def dumps(document: Any, indent: int | None = 2) -> str:
    """``document`` as strict JSON; ValueError if it still holds a non-finite number."""
    return json.dumps(document, indent=indent, allow_nan=False)
