"""GGUF files as host and agent read them (protos/gguf_file.py): the quantization type, and damage in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.gguf_model import CONTEXT_LENGTH, VOCAB, write_gguf

gguf = pytest.importorskip("gguf", reason="the gguf package (edgeprof[gguf]) is not installed")

from protos.gguf_file import GGUFFileError, read_gguf  # noqa: E402


@pytest.mark.parametrize("quant", ["F32", "F16", "Q8_0"])
def test_quantization_type_is_read_from_the_file(tmp_path: Path, quant: str) -> None:
    path = write_gguf(tmp_path / f"tiny-{quant}.gguf", quant)

    info = read_gguf(path)

    assert (info.architecture, info.quantization, info.quantization_source) == ("llama", quant, "file_type")
    assert (info.context_length, info.vocab_size) == (CONTEXT_LENGTH, VOCAB)


def test_quantization_is_guessed_from_the_weights_when_the_file_does_not_say(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "bare.gguf"), "llama")
    data = gguf.quants.quantize(np.ones((4, 64), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", data, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    info = read_gguf(tmp_path / "bare.gguf")

    assert (info.quantization, info.quantization_source) == ("Q8_0", "tensors")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda data: data[: len(data) // 2], "damaged or truncated"),
        (lambda data: data[:100], "damaged or truncated"),
        (lambda data: b"GGUF" + b"\xff" * 60, "not a valid GGUF file"),
        (lambda data: b"PK\x03\x04" + data[4:], "does not start with the GGUF magic"),
    ],
    ids=["half", "header-only", "garbage-after-magic", "wrong-magic"],
)
def test_malformed_files_are_refused_in_one_line(tmp_path: Path, damage: object, says: str) -> None:
    good = write_gguf(tmp_path / "good.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(good))  # type: ignore[operator]

    with pytest.raises(GGUFFileError) as caught:
        read_gguf(bad)

    assert says in str(caught.value)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("bad.gguf ")
