"""What the worker's generation benchmark (agent/generation.py) needs from a generative runtime's session.

ONNX Runtime GenAI (agent/runtimes/genai.py) and llama.cpp (agent/runtimes/llamacpp.py) both load a model that
turns a prompt into tokens one at a time; the benchmark sees them through GenerativeSession only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Generation:
    """One generation's clock readings (CLOCK_MONOTONIC ns)."""

    start_ns: int
    prefill_end_ns: int
    token_end_ns: list[int]


class GenerativeSession(Protocol):
    """A loaded generative model: `generate` is the timed unit (one prompt in, gen_len tokens out)."""

    providers: Sequence[str]
    #: Settings the runtime really used and facts about the model (quantization type, context length, ...),
    #: as strings: they travel to the host in JobEnd.notes.
    settings: Mapping[str, str]

    def synthetic_prompt(self, length: int) -> list[int]:
        """Exactly `length` ordinary token ids (no BOS/EOS/pad), the same for every run of a length."""

    def encode(self, text: str) -> list[int]:
        """Text tokenized with the model's own tokenizer."""

    def check_lengths(self, prompt_len: int, gen_len: int) -> None:
        """InvalidInput when a prompt of prompt_len plus gen_len generated tokens does not fit the context."""

    def generate(
        self, prompt_ids: Sequence[int], gen_len: int, clock: Callable[[], int] = time.monotonic_ns
    ) -> Generation:
        """Greedy generation of exactly gen_len tokens, each timestamped right after the runtime's step."""

    def close(self) -> None:
        """Release the model."""
