"""Reading a result document's fields (paths that may be missing or null) and showing their numbers.

Shared by the comparisons here and the report formats above them (host/report/fields.py).
"""

from __future__ import annotations

import math
import re
from typing import Any

NO_SENSOR = "no power sensor"
#: What a one-word reason may look like ("charging", "plugged-in"): safe in every output format as it is.
ONE_WORD = re.compile(r"[a-z][a-z-]{0,19}")


def get(entry: dict[str, Any], *path: str | int) -> Any:
    """``entry[path...]``, None where any step is missing or null."""
    value: Any = entry
    for key in path:
        if value is None:
            return None
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and len(value) > key else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
    return value


def no_energy_text(entry: dict[str, Any]) -> str:
    """Why a device that ran shows no energy, for a table cell: the agent's refusal in one word ("charging": a
    phone on a USB cable), else NO_SENSOR."""
    word = get(entry, "energy", "refused_short")
    return word if isinstance(word, str) and ONE_WORD.fullmatch(word) else NO_SENSOR


def num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (thousands kept whole); "–" for null."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    v = float(value)
    if v == 0:
        return "0"
    if abs(v) >= 10**digits:
        return f"{v:.0f}"
    decimals = max(digits - 1 - math.floor(math.log10(abs(v))), 0)
    return f"{v:.{decimals}f}"
