"""The llamacpp runtime on the real llama.cpp (llama-cpp-python) and a tiny random-weight Llama GGUF written here.

The worker runs as the agent runs it (a subprocess reading a spec, writing frames); what it sends is what the
host will compute TTFT, ITL and energy per token from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import console_script
from tests.gguf_model import write_gguf
from tests.worker_run import run_worker

pytest.importorskip("gguf", reason="the gguf package (edgeprof[gguf]) is not installed")
pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python (edgeprof[gguf]) is not installed: it builds llama.cpp from source"
)

MEASURE = 6


def _worker(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], int, str]:
    return run_worker(spec)


def _spec(model: Path, **extra: Any) -> dict[str, Any]:
    return {
        "format": "gguf",
        "model_path": str(model),
        "threads": 1,
        "runs": 3,
        "warmup": 1,
        "min_duration_s": 0.0,
        "generation": {"prompt_lens": [16, 64], "gen_len": 8},
        **extra,
    }


def _error(events: list[dict[str, Any]]) -> dict[str, Any]:
    (error,) = [e for e in events if e["type"] == "error"]
    assert "\n" not in error["message"]
    return error


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", "Q8_0")


def test_generations_of_exactly_gen_len_tokens_with_the_settings_recorded(tiny: Path) -> None:
    events, code, stderr = _worker(_spec(tiny, options={"n_ctx": "256", "n_batch": "32"}))

    assert code == 0, stderr[-2000:]
    info = next(e for e in events if e["type"] == "info")
    end = next(e for e in events if e["type"] == "end")
    measured = [e for e in events if e["type"] == "tokens" and e["phase"] == MEASURE]
    assert info["runtime"] == "llamacpp" and info["providers"] == ["CPU"] and info["threads"] == 1
    assert [e["prompt_tokens"] for e in measured] == [16] * 3 + [64] * 3
    for e in measured:
        tokens = e["token_end_ns"]
        assert len(tokens) == 8  # greedy, and end-of-sequence never stops a generation early
        assert e["start_ns"] < e["prefill_end_ns"] <= tokens[0] and tokens == sorted(tokens)
    notes = end["notes"]
    assert (notes["quantization"], notes["quantization_source"]) == ("Q8_0", "file_type")
    assert (notes["n_ctx"], notes["n_batch"], notes["n_threads"], notes["n_gpu_layers"]) == ("256", "32", "1", "0")


def test_the_context_defaults_to_what_the_model_was_trained_for_up_to_4096(tiny: Path) -> None:
    events, code, stderr = _worker(_spec(tiny, runs=1))

    assert code == 0, stderr[-2000:]
    notes = next(e for e in events if e["type"] == "end")["notes"]
    assert notes["n_ctx"] == notes["n_ctx_train"] == "512"


def test_a_text_prompt_is_tokenized_by_the_models_own_tokenizer(tiny: Path) -> None:
    events, code, stderr = _worker(
        _spec(tiny, runs=2, generation={"prompt_text": "the model runs on the edge board", "gen_len": 4})
    )

    assert code == 0, stderr[-2000:]
    info = next(e for e in events if e["type"] == "info")
    measured = [e for e in events if e["type"] == "tokens" and e["phase"] == MEASURE]
    (prompt,) = {e["prompt_tokens"] for e in measured}
    assert info["inputs_source"] == "text" and info["inputs"][0]["shape"] == [1, prompt]
    assert prompt > 1  # BOS and the text's tokens


def test_a_prompt_beyond_the_context_is_refused_in_one_line(tiny: Path) -> None:
    events, code, _ = _worker(_spec(tiny, generation={"prompt_lens": [500], "gen_len": 32}))

    error = _error(events)
    assert code == 3 and error["kind"] == "invalid_input" and error["phase"] == "prepare"
    assert "exceeds the context of 512 tokens" in error["message"]


def test_a_model_llama_cpp_refuses_names_llama_cpps_reason(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "not-an-architecture")
    writer.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    events, code, _ = _worker(_spec(tmp_path / "odd.gguf"))

    error = _error(events)
    assert code == 3 and error["kind"] == "invalid_model"
    assert "unknown model architecture: 'not-an-architecture'" in error["message"]


def test_gpu_offload_on_a_cpu_only_build_is_refused_in_one_line(tiny: Path) -> None:
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build offloads to a GPU")

    events, code, _ = _worker(_spec(tiny, options={"n_gpu_layers": "99"}))

    error = _error(events)
    assert code == 3 and error["kind"] == "invalid_input"
    assert "CPU-only" in error["message"] and "GGML_CUDA" in error["message"]


def test_agent_info_lists_llamacpp_with_its_version() -> None:
    proc = subprocess.run([console_script("agent"), "info"], capture_output=True, text=True, timeout=120)

    import llama_cpp

    assert proc.returncode == 0, proc.stderr
    assert f"runtime   llamacpp {llama_cpp.__version__}  CPU" in proc.stdout


def test_agent_info_says_why_llamacpp_is_missing(tmp_path: Path) -> None:
    # A board where llama-cpp-python is not installed: its import fails, as it does there.
    shadow = tmp_path / "shadow" / "llama_cpp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named llama_cpp')\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    proc = subprocess.run([console_script("agent"), "info"], capture_output=True, text=True, timeout=120, env=env)

    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if "llamacpp" in ln]
    assert line.startswith("runtime   llamacpp missing: llama-cpp-python is not installed on this board")
    assert "edgeprof[gguf]" in line and "--llama-bench" in line


def test_models_loaded_one_after_another_in_one_process_keep_working(tiny: Path) -> None:
    # llama.cpp keeps calling the log callback it was given: one freed with the first load crashed the second.
    script = f"""
import gc
import llama_cpp
from agent.runtimes.llamacpp import LlamaCppBackend
for _ in range(3):
    session = LlamaCppBackend().load({str(tiny)!r}, threads=1, providers=[], options={{}}, op_profile=False)
    session.generate(session.synthetic_prompt(16), 8)
    session.close()
    gc.collect()
    other = llama_cpp.Llama(model_path={str(tiny)!r}, n_threads=1, verbose=False)
    list(zip(range(4), other.generate(other.tokenize(b"the edge"), temp=0.0)))
    other.close()
print("ok")
"""

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.returncode
