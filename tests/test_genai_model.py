"""The test-time GenAI decoder is a model the real onnxruntime-genai loads, tokenizes for and generates with."""

from __future__ import annotations

from pathlib import Path

import onnxruntime_genai as og

from tests.genai_model import EOS_ID, VOCAB, write_genai_dir


def _greedy(model: og.Model, prompt_ids: list[int], gen_len: int) -> list[int]:
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + gen_len)
    generator = og.Generator(model, params)
    generator.append_tokens([prompt_ids])
    tokens: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def test_tiny_decoder_generates_exactly_the_requested_tokens_greedily(tmp_path: Path) -> None:
    model = og.Model(str(write_genai_dir(tmp_path / "tiny")))

    first = _greedy(model, [7] * 16, gen_len=32)
    again = _greedy(model, [7] * 16, gen_len=32)

    assert len(first) == 32
    assert first == again  # greedy: the same prompt gives the same tokens
    assert all(0 <= token < VOCAB and token != EOS_ID for token in first)
    assert len(set(first)) > 1  # the KV cache feeds back: not one token repeated


def test_tiny_tokenizer_round_trips_text_byte_per_token(tmp_path: Path) -> None:
    model = og.Model(str(write_genai_dir(tmp_path / "tiny")))
    tokenizer = og.Tokenizer(model)

    ids = tokenizer.encode("edge board")

    assert list(ids) == list(b"edge board")
    assert tokenizer.decode(ids) == "edge board"
