"""What a GGUF file (llama.cpp's model format) says about itself: read the same way by host and agent.

The header is read with the `gguf` package, the reader llama.cpp itself publishes: the architecture, the
quantization type (general.file_type, as llama.cpp's quantizer records it: Q4_K_M, Q8_0, F16, ...; where a
file lacks it, the type most of the weights' elements have, marked as guessed), the context length it was
trained for, the vocabulary size. Anything it cannot parse, or tensor data that runs past the end of the
file, is a GGUFFileError whose message is one line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"


class GGUFFileError(ValueError):
    """The file is not a usable GGUF model; the message is one line for people."""


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    #: "Q8_0", "Q4_K_M", "F16", ... (llama.cpp's names, without the MOSTLY_ prefix).
    quantization: str
    #: "file_type" when general.file_type says it, "tensors" when guessed from the weights' types.
    quantization_source: str
    context_length: int | None
    vocab_size: int | None
    n_tensors: int
    name: str


def is_gguf(path: Path) -> bool:
    """True when the file starts with the GGUF magic (whatever follows)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def _scalar(field: Any) -> Any:
    """A scalar field's value: an int/float, or the text of a string field."""
    value = field.parts[field.data[0]]
    if value.dtype.kind == "u" and value.dtype.itemsize == 1:  # a string's bytes
        return bytes(value).decode("utf-8", errors="replace")
    return value.item() if value.size == 1 else value.tolist()


def read_gguf(path: Path, label: str = "") -> GGUFInfo:
    """The file's description; GGUFFileError for a malformed file, ImportError when `gguf` is not installed.

    Messages name the file as `label` (default: its file name).
    """
    label = label or path.name
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] != MAGIC:
        raise GGUFFileError(f"{label} is not a GGUF file (it does not start with the GGUF magic)")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path), "r")
        fields = reader.fields
        tensors = reader.tensors
        end = max((int(t.data_offset) + int(t.n_bytes) for t in tensors), default=0)
        arch_field = fields.get("general.architecture")
        architecture = str(_scalar(arch_field)) if arch_field is not None else ""
    except Exception as err:  # the reader raises ValueError, struct.error, IndexError, ... on a damaged file
        raise GGUFFileError(f"{label} is not a valid GGUF file (damaged or truncated?): {_one_line(err)}") from err
    if end > size:
        raise GGUFFileError(f"{label} is truncated: its tensors need {end} bytes, the file has {size}")
    if not architecture:
        raise GGUFFileError(f"{label} names no architecture (general.architecture): not a llama.cpp model")
    if not tensors:
        raise GGUFFileError(f"{label} has no tensors (a vocabulary-only GGUF file is not a model)")
    quantization, source = _quantization(gguf, fields, tensors)

    def number(key: str) -> int | None:
        field = fields.get(key)
        try:
            return int(_scalar(field)) if field is not None else None
        except (TypeError, ValueError):
            return None

    tokens = fields.get("tokenizer.ggml.tokens")
    name_field = fields.get("general.name")
    return GGUFInfo(
        architecture=architecture,
        quantization=quantization,
        quantization_source=source,
        context_length=number(f"{architecture}.context_length"),
        vocab_size=len(tokens.data) if tokens is not None else number(f"{architecture}.vocab_size"),
        n_tensors=len(tensors),
        name=str(_scalar(name_field)) if name_field is not None else "",
    )


def _quantization(gguf: Any, fields: Any, tensors: Any) -> tuple[str, str]:
    field = fields.get("general.file_type")
    if field is not None:
        try:
            code = int(_scalar(field))
            name = gguf.LlamaFileType(code).name
        except (TypeError, ValueError):
            name = ""
        if name and name != "GUESSED":
            for prefix in ("MOSTLY_", "ALL_"):
                name = name.removeprefix(prefix)
            return name, "file_type"
    # As llama.cpp guesses it: the type that holds most of the weights (1-D norms stay F32 in every file).
    counts: Counter[str] = Counter()
    for tensor in tensors:
        if len(tensor.shape) >= 2:
            counts[tensor.tensor_type.name] += int(tensor.n_elements)
    if not counts:
        return "unknown", "tensors"
    return counts.most_common(1)[0][0], "tensors"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
