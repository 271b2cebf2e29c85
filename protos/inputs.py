"""Model inputs as the wire contract names them: shapes ("1x3x224x224"), tensor specs, and the inputs .npz.

ProfileRequest carries `input_shapes` and `inputs_npz`; the host checks them before a job is sent (and
fixes dynamic dims when it compiles), the agent checks them again and uses them. Both must read them the
same way, so the rules live here, in the package both sides share, and raise InputError (one line); the
agent turns it into its own InvalidInput at its boundary (agent/measure/inputs.py).
"""

from __future__ import annotations

import io
import math
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class InputError(ValueError):
    """Input shapes or user-supplied inputs do not fit the model; the message is one line."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the runtime declares it.

    ``shape`` holds ints for static dims and ``None`` (or the symbolic name as a str) for dynamic ones.
    ``dtype`` is a numpy dtype name ("float32", "uint8", ...).
    """

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]
    # Quantisation parameters for int8/uint8 TFLite tensors, informational.
    quantization: tuple[float, int] | None = field(default=None, compare=False)


_DIMS = re.compile(r"^\d+(x\d+)*$")


def parse_shape(text: str) -> tuple[int, ...]:
    """ "1x3x224x224" -> (1, 3, 224, 224); raises InputError on anything else."""
    text = text.strip().lower()
    if not _DIMS.match(text):
        raise InputError(f"bad shape '{text}': write dimensions as positive integers joined by 'x', e.g. 1x3x224x224")
    dims = tuple(int(d) for d in text.split("x"))
    if any(d <= 0 for d in dims):
        raise InputError(f"bad shape '{text}': every dimension must be at least 1")
    return dims


def parse_input_shape_flags(flags: Sequence[str]) -> dict[str, str]:
    """["data=1x3x224x224", ...] -> {"data": "1x3x224x224"}, validating each shape."""
    shapes: dict[str, str] = {}
    for flag in flags:
        name, sep, shape = flag.rpartition("=")
        if not sep or not name:
            raise InputError(f"bad --input-shape '{flag}': expected NAME=DIMS, e.g. data=1x3x224x224")
        parse_shape(shape)
        shapes[name] = shape
    return shapes


def resolve_shapes(specs: Sequence[TensorSpec], overrides: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input.

    Static dims come from the model; --input-shape may restate them but not contradict them. A
    dynamic leading (batch) dim defaults to 1; any other dynamic dim needs --input-shape.
    """
    names = [spec.name for spec in specs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise InputError(
            f"--input-shape names no input of this model: {', '.join(unknown)} (inputs: {', '.join(names)})"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        if spec.name in overrides:
            shape = parse_shape(overrides[spec.name])
            if len(shape) != len(spec.shape):
                raise InputError(
                    f"--input-shape {spec.name}={overrides[spec.name]} has rank {len(shape)}, "
                    f"the model's input has rank {len(spec.shape)} ({_show(spec.shape)})"
                )
            for axis, (given, declared) in enumerate(zip(shape, spec.shape, strict=True)):
                if isinstance(declared, int) and declared > 0 and declared != given:
                    raise InputError(
                        f"--input-shape {spec.name}={overrides[spec.name]} contradicts the model: axis {axis} "
                        f"is fixed at {declared} ({_show(spec.shape)})"
                    )
            shapes[spec.name] = shape
            continue
        dims: list[int] = []
        for axis, declared in enumerate(spec.shape):
            if isinstance(declared, int) and declared > 0:
                dims.append(declared)
            elif axis == 0:
                dims.append(1)
            else:
                raise InputError(
                    f"input '{spec.name}' has a dynamic dimension at axis {axis} ({_show(spec.shape)}): "
                    f"give it with --input-shape {spec.name}="
                    + "x".join(str(d) if d else "N" for d in _ints(spec.shape))
                )
        shapes[spec.name] = tuple(dims)
    return shapes


#: Decompressed bytes a job's .npz may expand to, over the arrays the model uses: a small zip can
#: declare (or hide) gigabytes, and the worker would decompress them all before refusing.
MAX_NPZ_DECOMPRESSED_BYTES = 256 * 1024**2
_READ_BYTES = 1024**2


def load_npz(
    source: str | os.PathLike[str] | bytes,
    specs: Sequence[TensorSpec],
    max_bytes: int = MAX_NPZ_DECOMPRESSED_BYTES,
) -> dict[str, np.ndarray]:
    """User-supplied inputs from an .npz (path or bytes), checked against the model's inputs.

    Only the arrays the model uses are read, each after its zip entry's declared size and its .npy
    header's shape have been checked against `max_bytes`; decompression stops at the size the header
    promises, so an entry that lies about either is refused without expanding it.
    """
    import numpy as np

    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            expected = [spec.name for spec in specs]
            missing = [name for name in expected if name not in members]
            if missing:
                raise InputError(
                    f"the inputs file lacks {', '.join(missing)} (it has: {', '.join(sorted(members)) or 'nothing'})"
                )
            budget = max_bytes
            arrays: dict[str, np.ndarray] = {}
            for name in expected:
                arrays[name] = _read_member(archive, members[name], name, budget, max_bytes)
                budget -= arrays[name].nbytes
    except InputError:
        raise  # a missing input, an entry too large: said as it is, not as a damaged archive
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as err:
        raise InputError(f"the inputs file is not a valid .npz archive: {err}") from err
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        array = arrays[spec.name]
        if len(array.shape) != len(spec.shape):
            raise InputError(
                f"input '{spec.name}' in the .npz has shape {array.shape}, the model wants {_show(spec.shape)}"
            )
        for axis, (given, declared) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if isinstance(declared, int) and declared > 0 and declared != given:
                raise InputError(
                    f"input '{spec.name}' in the .npz has shape {array.shape},"
                    f" the model fixes axis {axis} at {declared}"
                )
        feeds[spec.name] = array.astype(np.dtype(spec.dtype), copy=False)
    return feeds


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: int, cap: int) -> np.ndarray:
    """One .npy entry, refused before decompression when its declared or header size exceeds the budget."""
    import numpy as np
    from numpy.lib import format as npy

    def too_big(size_bytes: int) -> InputError:
        return InputError(
            f"input '{name}' in the .npz expands to {size_bytes / 1e6:.1f} MB: the inputs may decompress to at "
            f"most {cap / 1e6:.0f} MB in all"
        )

    if info.file_size > budget + 4096:  # the .npy header is small; the data must fit the budget
        raise too_big(info.file_size)
    with archive.open(info) as member:
        version = npy.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = npy.read_array_header_1_0(member, max_header_size=10_000)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy.read_array_header_2_0(member, max_header_size=10_000)
        else:
            raise InputError(f"input '{name}' in the .npz uses .npy format {version}, which the agent does not read")
        if dtype.hasobject:
            raise InputError(f"input '{name}' in the .npz holds Python objects, which the agent does not load")
        count = math.prod(shape)
        size_bytes = count * dtype.itemsize
        if size_bytes > budget:
            raise too_big(size_bytes)
        data = bytearray()
        while len(data) < size_bytes:  # bounded reads: never decompress past what the header promised
            piece = member.read(min(_READ_BYTES, size_bytes - len(data)))
            if not piece:
                raise InputError(f"input '{name}' in the .npz is truncated")
            data += piece
        if member.read(1):
            raise InputError(f"input '{name}' in the .npz has more data than its shape {tuple(shape)} holds")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def _ints(shape: Sequence[int | str | None]) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else 0 for d in shape]


def _show(shape: Sequence[int | str | None]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"
