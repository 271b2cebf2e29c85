"""Run-to-run spread the store has already seen, for `host compare` sides with too few repetitions.

Two runs of the same model on the same device with the same settings differ by more than either run's own
interval says (process start, memory layout, frequency state). Earlier repeated runs and A/A pairs of that
(device, model sha256, settings) measure how much; this module finds them and pools their spread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Run settings that change what is measured (not how long or how patiently): runs of one history share them.
MEASUREMENT_SETTINGS = (
    "threads",
    "input_shapes",
    "inputs_npz",
    "inputs_sha256",
    "op_profile",
    "quantize",
    "quantize_mode",
    "calibration_sha256",
    "options",  # --runtime tensorrt, its precision and DLA core
    "llama_options",  # a GGUF model's context, batch and GPU layers
    "gen_len",  # a generative model's figures depend on how many tokens follow the prompt
    "prompt_text",
)
#: Device-entry fields that must agree too.
DEVICE_FIELDS = ("runtime", "execution_provider", "profile")

#: A figure of one repetition, or of a whole run without repetitions, read from a device entry.
FigureOf = Callable[[dict[str, Any]], list[float] | None]


def settings_key(document: dict[str, Any], entry: dict[str, Any]) -> tuple[str, ...]:
    """What two runs on one device must share for their spread to describe each other."""
    settings = document.get("settings") or {}
    return tuple(repr(settings.get(k)) for k in MEASUREMENT_SETTINGS) + tuple(repr(entry.get(k)) for k in DEVICE_FIELDS)


@dataclass
class RunHistory:
    """Earlier result documents of the models being compared (the compared runs themselves excluded)."""

    documents: list[dict[str, Any]] = field(default_factory=list)

    def groups(
        self, device: str, like: tuple[dict[str, Any], dict[str, Any]], figures_of: FigureOf
    ) -> list[np.ndarray]:
        """Groups of figures that should agree, for ``device`` over earlier runs matching ``like``.

        ``like`` is a (document, device entry) whose model and settings the history must share. A run with
        two or more repetitions is a group by itself; the single-repetition runs of the model form one
        group (their differences are the A/A spread). Pool them with significance.log_spread.
        """
        document, entry = like
        key = settings_key(document, entry)
        sha = (document.get("model") or {}).get("sha256")
        groups: list[np.ndarray] = []
        singles: list[float] = []
        for doc in self.documents:
            if (doc.get("model") or {}).get("sha256") != sha:
                continue
            for e in _ok_entries(doc, device):
                values = figures_of(e) if settings_key(doc, e) == key else None
                if not values:
                    continue
                if len(values) >= 2:
                    groups.append(np.asarray(values, dtype=np.float64))
                else:
                    singles.append(values[0])
        if len(singles) >= 2:
            groups.append(np.asarray(singles, dtype=np.float64))
        return groups


def _ok_entries(document: dict[str, Any], device: str) -> Iterable[dict[str, Any]]:
    return (e for e in document.get("devices") or [] if e.get("device") == device and e.get("status") == "ok")
