"""llama.cpp backend (llama-cpp-python, in the worker's process): loads a GGUF file and runs greedy generations.

A generation is what llama.cpp's own programs do for a prompt: the whole prompt decoded in batches of n_batch
tokens (the prefill), the first token picked from its logits by llama.cpp's greedy sampler, then one decode
of one token per further token. Time to first token is the prefill plus that first pick, as for ONNX Runtime
GenAI (agent/runtimes/genai.py). Before each generation the context is cleared: llama-cpp-python's own
`generate` would reuse a cached prompt prefix, and the same prompt run twice would then skip its prefill.

Settings: threads (the job's), and the request's options `n_ctx` (default min(4096, the model's trained
context), as llama-cli), `n_batch` (default 2048, as llama-cli and llama-bench) and `n_gpu_layers` (default
0; layers offloaded to a GPU where the installed build has CUDA, Metal or Vulkan). They are recorded with the
quantization type the file declares (protos/gguf_file.py) in the session's `settings`.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.errors import InvalidInput, InvalidModel, RuntimeMissing
from agent.runtimes.base import ModelSession, RuntimeBackend, TensorSpec
from agent.runtimes.generative import Generation
from protos.gguf_file import GGUFFileError, GGUFInfo, read_gguf

MISSING = (
    "llama-cpp-python is not installed on this board: pip install 'edgeprof[gguf]' (it builds llama.cpp from "
    "source with cmake and a C++ compiler), or give the agent a llama-bench binary (--llama-bench PATH)"
)
#: llama-cli's default context when the model was trained for more (the KV cache grows with it).
DEFAULT_N_CTX = 4096
DEFAULT_N_BATCH = 2048
#: The request options this runtime reads, with what each must be.
OPTIONS = {"n_ctx": "a context length in tokens", "n_batch": "a batch size in tokens", "n_gpu_layers": "a layer count"}


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as err:
        raise RuntimeMissing(MISSING) from err
    return llama_cpp


def model_info(path: Path, missing: str = MISSING) -> GGUFInfo:
    """The GGUF file's header; InvalidModel (one line) when it is malformed, RuntimeMissing(missing) without gguf."""
    try:
        return read_gguf(path, "the model")
    except GGUFFileError as err:
        raise InvalidModel(str(err)) from err
    except ImportError as err:
        raise RuntimeMissing(missing) from err


def int_options(options: Mapping[str, str]) -> dict[str, int]:
    """The llama.cpp options of a request as numbers; InvalidInput naming a bad one."""
    found: dict[str, int] = {}
    for key, meaning in OPTIONS.items():
        if key not in options:
            continue
        try:
            value = int(options[key])
        except ValueError:
            raise InvalidInput(f"option {key} must be {meaning}, not '{options[key][:40]}'") from None
        if value < (-1 if key == "n_gpu_layers" else 1):
            raise InvalidInput(f"option {key} must be {meaning}, not {value}")
        found[key] = value
    return found


_ERROR_LOG: _ErrorLog | None = None


class _ErrorLog:
    """llama.cpp's log callback while the worker runs: error lines kept (for one-line load errors) and printed.

    llama-cpp-python's own callback prints them to stderr, which it sends to /dev/null while it loads a model
    quietly, so the reason a model is refused ("unknown model architecture: 'foo'") would be lost.
    """

    #: ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the line before).
    ERROR, CONTINUED = 4, 5

    def __init__(self, lib: Any) -> None:
        self.lines: list[str] = []
        self._last_level = 0

        def record(level: int, text: bytes, user_data: Any) -> None:
            line = " ".join(text.decode("utf-8", errors="replace").split())
            if level == self.CONTINUED:
                level = self._last_level
            self._last_level = level
            if level == self.ERROR and line:
                self.lines = [*self.lines[-4:], line]
                print(line, file=sys.stderr, flush=True)

        self._callback = lib.llama_log_callback(record)
        lib.llama_log_set(self._callback, ctypes.c_void_p(0))

    @classmethod
    def installed(cls, lib: Any) -> _ErrorLog:
        """The process's one log: llama.cpp keeps calling the callback it was given (also while it generates and
        frees), so it must outlive every model; a callback freed with its load crashed the next one."""
        global _ERROR_LOG
        if _ERROR_LOG is None:
            _ERROR_LOG = cls(lib)
        _ERROR_LOG.lines = []
        return _ERROR_LOG

    def reason(self) -> str:
        """The most telling error line: llama.cpp's own reason, not its closing "failed to load model"."""
        specific = [line for line in self.lines if "failed to load model" not in line]
        return (specific or self.lines or [""])[-1]


class LlamaCppSession(ModelSession):
    """A GGUF model loaded by llama.cpp, its context and a greedy sampler: `generate` is the timed unit."""

    def __init__(self, lib: Any, llm: Any, info: GGUFInfo, settings: dict[str, str], providers: list[str]) -> None:
        self._lib = lib
        self._llm = llm
        self.info = info
        self.settings = settings
        self.providers = providers
        self.n_ctx = int(llm.n_ctx())
        self.vocab_size = int(llm.n_vocab())
        self._special = {int(llm.token_bos()), int(llm.token_eos())}
        self._sampler = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(self._sampler, lib.llama_sampler_init_greedy())
        self.inputs = [TensorSpec(name="input_ids", dtype="int32", shape=(1, None))]
        self.outputs = [TensorSpec(name="tokens", dtype="int32", shape=(1, None))]

    def synthetic_prompt(self, length: int) -> list[int]:
        """Exactly `length` ordinary token ids (not BOS/EOS, not llama.cpp's control tokens), the same each run."""
        lib, vocab = self._lib, self._llm._model.vocab
        control = getattr(lib, "llama_vocab_is_control", None)
        ordinary = [
            i
            for i in range(min(self.vocab_size, 4096))
            if i not in self._special and not (control is not None and control(vocab, i))
        ]
        if not ordinary:
            raise InvalidModel(f"the model's vocabulary ({self.vocab_size} tokens) has no ordinary token")
        return [ordinary[(i * 7919 + 13) % len(ordinary)] for i in range(length)]

    def encode(self, text: str) -> list[int]:
        """Text tokenized by the model's own tokenizer, with BOS where the model adds one (as llama-cli does)."""
        try:
            ids = [int(i) for i in self._llm.tokenize(text.encode("utf-8"), add_bos=True)]
        except Exception as err:  # llama-cpp-python raises RuntimeError when tokenizing fails
            raise InvalidModel(f"the model's tokenizer failed: {_one_line(err)}") from err
        if not ids:
            raise InvalidInput("the prompt text tokenizes to no tokens")
        return ids

    def check_lengths(self, prompt_len: int, gen_len: int) -> None:
        if prompt_len + gen_len > self.n_ctx:
            raise InvalidInput(
                f"prompt of {prompt_len} + {gen_len} generated tokens exceeds the context of {self.n_ctx} tokens"
                f" (option n_ctx; the model was trained for {self.info.context_length or 'an unknown length'})"
            )

    def generate(
        self, prompt_ids: Sequence[int], gen_len: int, clock: Callable[[], int] = time.monotonic_ns
    ) -> Generation:
        """Greedy generation of exactly gen_len tokens (end-of-sequence does not stop it), each timestamped."""
        llm, lib, sampler = self._llm, self._lib, self._sampler
        ctx = llm.ctx
        sample = lib.llama_sampler_sample
        llm.reset()  # n_tokens = 0: the next eval clears the whole KV cache first
        tokens: list[int] = []
        start = clock()
        llm.eval(prompt_ids)
        prefill_end = clock()
        token = sample(sampler, ctx, -1)
        tokens.append(clock())
        evaluate = llm.eval
        while len(tokens) < gen_len:
            evaluate((token,))
            token = sample(sampler, ctx, -1)
            tokens.append(clock())
        return Generation(start, prefill_end, tokens)

    def prepare(self, feeds: Mapping[str, Any]) -> None:
        """Nothing to bind: a generation's prompt is chosen per prompt length (see agent/generation.py)."""

    def run(self) -> None:
        raise InvalidModel("a GGUF model is measured by generations (--prompt-len/--gen-len), not inferences")

    def close(self) -> None:
        if self._sampler is not None:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None


class LlamaCppBackend(RuntimeBackend):
    name = "llamacpp"
    formats = ("gguf",)

    def version(self) -> str:
        return str(_import_llama().__version__)

    def available_providers(self) -> list[str]:
        lib = _import_llama()
        return ["GPU", "CPU"] if lib.llama_supports_gpu_offload() else ["CPU"]

    def load(
        self,
        model_path: str,
        *,
        threads: int,
        providers: Sequence[str],
        options: Mapping[str, str],
        op_profile: bool,
    ) -> LlamaCppSession:
        lib = _import_llama()
        info = model_info(Path(model_path))
        chosen = int_options(options)
        n_gpu_layers = chosen.get("n_gpu_layers", 0)
        if n_gpu_layers and not lib.llama_supports_gpu_offload():
            raise InvalidInput(
                f"n_gpu_layers {n_gpu_layers} asks for GPU offload, but this llama-cpp-python build is CPU-only "
                "(rebuild it with CMAKE_ARGS=-DGGML_CUDA=on, -DGGML_METAL=on or -DGGML_VULKAN=on)"
            )
        n_ctx = chosen.get("n_ctx") or min(DEFAULT_N_CTX, info.context_length or DEFAULT_N_CTX)
        n_batch = chosen.get("n_batch", DEFAULT_N_BATCH)
        kwargs: dict[str, Any] = {"n_ctx": n_ctx, "n_batch": n_batch, "n_gpu_layers": n_gpu_layers}
        if threads:
            kwargs.update(n_threads=int(threads), n_threads_batch=int(threads))
        log = _ErrorLog.installed(lib)
        try:
            llm = lib.Llama(model_path=model_path, verbose=False, **kwargs)
        except Exception as err:  # llama-cpp-python raises ValueError for every load problem
            reason = _one_line(log.reason() or err)
            raise InvalidModel(f"llama.cpp cannot load the model: {reason}") from err
        params = llm.context_params
        settings = {
            "quantization": info.quantization,
            "quantization_source": info.quantization_source,
            "architecture": info.architecture,
            "n_ctx": str(llm.n_ctx()),
            "n_ctx_train": str(info.context_length or ""),
            # llama-cpp-python caps the batch at the context (Llama.n_batch): record what it really uses.
            "n_batch": str(getattr(llm, "n_batch", n_batch)),
            "n_threads": str(params.n_threads),
            "n_threads_batch": str(params.n_threads_batch),
            "n_gpu_layers": str(n_gpu_layers),
        }
        return LlamaCppSession(lib, llm, info, settings, ["GPU", "CPU"] if n_gpu_layers else ["CPU"])


def _one_line(err: BaseException | str) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
