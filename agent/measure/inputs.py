"""Model inputs for a job: the contract's shape and .npz rules (protos/inputs.py) as agent errors, random data."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from agent.errors import InvalidInput
from protos import inputs as contract
from protos.inputs import MAX_NPZ_DECOMPRESSED_BYTES, InputError, TensorSpec

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MAX_NPZ_DECOMPRESSED_BYTES",
    "TensorSpec",
    "load_npz",
    "parse_input_shape_flags",
    "parse_shape",
    "random_inputs",
    "resolve_shapes",
]


def parse_shape(text: str) -> tuple[int, ...]:
    """ "1x3x224x224" -> (1, 3, 224, 224); raises InvalidInput on anything else."""
    try:
        return contract.parse_shape(text)
    except InputError as err:
        raise InvalidInput(str(err)) from err


def parse_input_shape_flags(flags: Sequence[str]) -> dict[str, str]:
    """["data=1x3x224x224", ...] -> {"data": "1x3x224x224"}, validating each shape (InvalidInput)."""
    try:
        return contract.parse_input_shape_flags(flags)
    except InputError as err:
        raise InvalidInput(str(err)) from err


def resolve_shapes(specs: Sequence[TensorSpec], overrides: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input (protos.inputs.resolve_shapes); InvalidInput when they do not fit."""
    try:
        return contract.resolve_shapes(specs, overrides)
    except InputError as err:
        raise InvalidInput(str(err)) from err


def load_npz(
    source: str | os.PathLike[str] | bytes,
    specs: Sequence[TensorSpec],
    max_bytes: int = MAX_NPZ_DECOMPRESSED_BYTES,
) -> dict[str, np.ndarray]:
    """User-supplied inputs from an .npz, read lazily under a decompressed-size cap (protos.inputs.load_npz)."""
    try:
        return contract.load_npz(source, specs, max_bytes)
    except InputError as err:
        raise InvalidInput(str(err)) from err


def random_inputs(
    specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Random data of each input's dtype and shape (fixed seed: runs are repeatable)."""
    import numpy as np  # here, not at the top: the agent process imports this module for parse_shape

    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = shapes[spec.name]
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        elif dtype.kind in "iu":
            # Small non-negative values: valid token ids, indices and quantised pixels alike.
            high = min(np.iinfo(dtype).max, 10) + 1
            feeds[spec.name] = rng.integers(0, high, shape).astype(dtype)
        else:
            raise InvalidInput(
                f"input '{spec.name}' has dtype {spec.dtype}, which edgeprof cannot generate; pass --inputs data.npz"
            )
    return feeds
