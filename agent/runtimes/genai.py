"""ONNX Runtime GenAI backend: loads a GenAI model directory and runs greedy generations, timing every token.

Facts this module relies on (onnxruntime-genai 0.18, DESIGN.md §8): `Generator.append_tokens` runs the whole
prefill, and the first `generate_next_token` only picks a token from its logits, so time to first token is
append_tokens plus the first generate_next_token; each later call is one decode step. Importing the package
with its own folder as the working directory fails ("Failed to load onnxruntime"), so the import leaves it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.errors import InvalidInput, InvalidModel, RuntimeMissing
from agent.runtimes.base import ModelSession, RuntimeBackend, TensorSpec
from agent.runtimes.generative import Generation

__all__ = ["GenAIBackend", "GenAISession", "Generation"]

CONFIG_NAME = "genai_config.json"
#: ONNX Runtime provider names (what device profiles list) -> onnxruntime-genai's provider names.
_PROVIDERS = {"CUDAExecutionProvider": "cuda"}
MISSING = (
    "onnxruntime-genai is not installed on this board: pip install 'edgeprof[genai]' (0.18 has no aarch64 wheel "
    "for Python 3.10, e.g. JetPack 6: use Python 3.11+ or NVIDIA's Jetson build)"
)


@contextlib.contextmanager
def _outside_package_dir() -> Iterator[None]:
    """Import from a neutral working directory: from the package's own folder the native import fails."""
    cwd = os.getcwd()
    moved = Path(cwd).name == "onnxruntime_genai"
    if moved:
        os.chdir(Path(cwd).parent)
    try:
        yield
    finally:
        if moved:
            os.chdir(cwd)


def _import_genai() -> Any:
    try:
        with _outside_package_dir():
            import onnxruntime_genai
    except ImportError as err:
        raise RuntimeMissing(MISSING) from err
    return onnxruntime_genai


class GenAISession(ModelSession):
    """A loaded generative model: `generate` is the timed unit (one prompt in, gen_len tokens out)."""

    def __init__(self, og: Any, model: Any, directory: Path, providers: list[str]) -> None:
        self._og = og
        self._model = model
        self.directory = directory
        config = json.loads((directory / CONFIG_NAME).read_text())["model"]
        self.vocab_size = int(config["vocab_size"])
        self.context_length = int(config.get("context_length") or 0)
        specials = config.get("eos_token_id", []), config.get("bos_token_id"), config.get("pad_token_id")
        self._special: set[int] = set()
        for value in specials:
            self._special.update(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
        self.inputs = [TensorSpec(name="input_ids", dtype="int64", shape=(1, None))]
        self.outputs = [TensorSpec(name="tokens", dtype="int64", shape=(1, None))]
        self.providers = providers
        self.settings: dict[str, str] = {}

    def synthetic_prompt(self, length: int) -> list[int]:
        """Exactly `length` ordinary token ids (no BOS/EOS/pad), the same for every run of a length."""
        ordinary = [i for i in range(min(self.vocab_size, 4096)) if i not in self._special]
        if not ordinary:
            raise InvalidModel(f"the model's vocabulary ({self.vocab_size} tokens) has no ordinary token")
        return [ordinary[(i * 7919 + 13) % len(ordinary)] for i in range(length)]

    def encode(self, text: str) -> list[int]:
        """Text tokenized with the model's own tokenizer (on the board, as a user's prompt would be)."""
        try:
            tokenizer = self._og.Tokenizer(self._model)
            ids = [int(i) for i in tokenizer.encode(text)]
        except Exception as err:  # the tokenizer's own error types
            raise InvalidModel(f"the model's tokenizer failed: {_one_line(err)}") from err
        if not ids:
            raise InvalidInput("the prompt text tokenizes to no tokens")
        return ids

    def check_lengths(self, prompt_len: int, gen_len: int) -> None:
        if self.context_length and prompt_len + gen_len > self.context_length:
            raise InvalidInput(
                f"prompt of {prompt_len} + {gen_len} generated tokens exceeds the model's context length "
                f"{self.context_length}"
            )

    def generate(
        self, prompt_ids: Sequence[int], gen_len: int, clock: Callable[[], int] = time.monotonic_ns
    ) -> Generation:
        """Greedy generation of exactly gen_len tokens, each timestamped right after the runtime's step."""
        og = self._og
        params = og.GeneratorParams(self._model)
        total = len(prompt_ids) + gen_len
        # min_length = max_length: the end-of-sequence token cannot stop a generation early.
        params.set_search_options(do_sample=False, max_length=total, min_length=total)
        generator = og.Generator(self._model, params)
        tokens: list[int] = []
        start = clock()
        generator.append_tokens([list(prompt_ids)])
        prefill_end = clock()
        step = generator.generate_next_token
        done = generator.is_done
        while len(tokens) < gen_len and not done():
            step()
            tokens.append(clock())
        del generator
        return Generation(start, prefill_end, tokens)

    def prepare(self, feeds: Mapping[str, Any]) -> None:
        """Nothing to bind: a generation's prompt is chosen per prompt length (see agent/worker.py)."""

    def run(self) -> None:
        # The worker measures a generative model with generate(); a plain inference is not defined for it.
        raise InvalidModel("a generative model is measured by generations (--prompt-len/--gen-len), not inferences")

    def close(self) -> None:
        self._model = None


class GenAIBackend(RuntimeBackend):
    name = "onnxruntime-genai"
    formats = ("genai",)

    def version(self) -> str:
        return str(_import_genai().__version__)

    def available_providers(self) -> list[str]:
        og = _import_genai()
        # Only CUDA is probed: is_qnn_available() is true on wheels without a QNN device (0.18 on x86-64).
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if og.is_cuda_available() else ["CPUExecutionProvider"]

    def load(
        self,
        model_path: str,
        *,
        threads: int,
        providers: Sequence[str],
        options: Mapping[str, str],
        op_profile: bool,
    ) -> GenAISession:
        og = _import_genai()
        directory = Path(model_path)
        if not (directory / CONFIG_NAME).is_file():
            raise InvalidModel(f"not a GenAI model directory: no {CONFIG_NAME}")
        available = set(self.available_providers())
        chosen = [p for p in providers if p in _PROVIDERS and p in available]
        try:
            config = og.Config(str(directory))
            config.clear_providers()
            for provider in chosen:  # in the profile's order; CPU is what is left when none is appended
                config.append_provider(_PROVIDERS[provider])
            if threads:
                config.overlay(
                    json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": int(threads)}}}})
                )
            model = og.Model(config)
        except Exception as err:  # onnxruntime-genai raises RuntimeError for every load problem
            raise InvalidModel(f"onnxruntime-genai cannot load the model: {_one_line(err)}") from err
        return GenAISession(og, model, directory, [*chosen, "CPUExecutionProvider"])


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
