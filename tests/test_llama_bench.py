"""The native llama.cpp runner: llama-bench's output formats read, its repetitions laid out as generations.

llama-bench itself is a stand-in (tests/fixtures/llama-bench) that takes the real flags, runs the tests in the
real order and prints the real formats, its times measured around real sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.runtimes import llama_bench
from agent.runtimes.llama_bench_output import BenchOutputError, BenchTest, parse
from tests.gguf_model import write_gguf
from tests.worker_run import run_worker

STAND_IN = Path(__file__).parent / "fixtures" / "llama-bench"
MEASURE, WARMUP = 6, 5

pytest.importorskip("gguf", reason="the gguf package (edgeprof[gguf]) is not installed")

# As llama-bench's README shows them (tools/llama-bench/README.md), cut to two tests.
MARKDOWN = """
| model                          |       size |     params | backend    | ngl | test       |              t/s |
| ------------------------------ | ---------: | ---------: | ---------- | --: | ---------- | ---------------: |
| llama 7B mostly Q4_0           |   3.56 GiB |     6.74 B | CUDA       |  99 | pp 512     |  2368.80 ± 93.24 |
| llama 7B mostly Q4_0           |   3.56 GiB |     6.74 B | CUDA       |  99 | tg 128     |    131.42 ± 0.59 |
"""
MARKDOWN_DEPTH = """
| model                          |       size |     params | backend    | ngl |            test |                  t/s |
| ------------------------------ | ---------: | ---------: | ---------- | --: | --------------: | -------------------: |
| qwen2 7B Q4_K - Medium         |   4.36 GiB |     7.62 B | CUDA       |  99 |    tg128 @ d512 |        116.71 ± 0.60 |
"""
CSV = (
    "build_commit,build_number,n_threads,n_prompt,n_gen,n_depth,test_time,avg_ns,stddev_ns,avg_ts,stddev_ts\n"
    '"8cf427ff","5163","8","512","0","0","2025-04-24T11:57:09Z","70285660","982040","7285.676949","100.064434"\n'
    '"8cf427ff","5163","8","0","128","0","2025-04-24T11:57:10Z","1067431600","3834831","119.915244","0.430617"\n'
)


def _json_test(n_prompt: int, n_gen: int, samples: list[int]) -> dict[str, Any]:
    return {
        "build_commit": "8cf427ff",
        "build_number": 5163,
        "backends": "CUDA",
        "n_threads": 8,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "n_depth": 0,
        "avg_ns": sum(samples) // len(samples),
        "stddev_ns": 1453752,
        "samples_ns": samples,
        "samples_ts": [(n_prompt + n_gen) / (s / 1e9) for s in samples],
    }


def test_every_output_format_reads_to_the_same_tests() -> None:
    pp, tg = _json_test(512, 0, [74601900, 71632900]), _json_test(0, 128, [1075361300, 1065089400])
    as_json = json.dumps([pp, tg], indent=2)
    as_jsonl = json.dumps(pp) + "\n" + json.dumps(tg) + "\n"

    from_json, from_jsonl = parse(as_json, "json"), parse(as_jsonl, "jsonl")
    from_csv, from_md = parse(CSV, "csv"), parse(MARKDOWN, "md")

    assert from_json == from_jsonl
    assert [t.name for t in from_json] == [t.name for t in from_csv] == [t.name for t in from_md] == ["pp512", "tg128"]
    assert from_json[0].samples_ns == (74601900, 71632900)
    assert from_csv[1].samples_ns == () and from_csv[1].avg_ns == 1067431600
    # Markdown keeps only tokens/s: the mean time is tokens over it.
    assert from_md[1].avg_ns == pytest.approx(128 / 131.42 * 1e9)
    assert from_md[0].fields["backend"] == "CUDA"
    assert parse(MARKDOWN_DEPTH, "md")[0].name == "tg128 @ d512"


@pytest.mark.parametrize(
    ("text", "fmt", "says"),
    [
        ("", "jsonl", "printed no test results"),
        ("{not json", "jsonl", "malformed JSON"),
        ('{"n_prompt": 16}', "jsonl", "lacks n_gen, avg_ns"),
        ('[{"n_prompt": 16, "n_gen": 0, "avg_ns": "fast"}]', "json", "avg_ns is not a number"),
        ('{"n_prompt": 0, "n_gen": 0, "avg_ns": 5}', "jsonl", "neither prompt nor generated tokens"),
        ("| a | b |\n|---|---|\n| 1 | 2 |\n", "md", "no 'test' and 't/s' columns"),
    ],
)
def test_output_that_is_not_llama_bench_is_refused_in_one_line(text: str, fmt: str, says: str) -> None:
    with pytest.raises(BenchOutputError, match=says) as caught:
        parse(text, fmt)
    assert "\n" not in str(caught.value)


def test_repetitions_become_back_to_back_generations_ending_at_the_last_result() -> None:
    pp = BenchTest(16, 0, 0, 1.5e6, None, (1_000_000, 2_000_000), {})
    tg = BenchTest(0, 8, 0, 12e6, None, (8_000_000, 16_000_000), {})
    end_ns = 10_000_000_000

    found = llama_bench.generations(pp, tg, 2, end_ns)

    assert [g.prefill_end_ns - g.start_ns for g in found] == [1_000_000, 2_000_000]  # TTFT = each prompt test
    assert [len(g.token_end_ns) for g in found] == [8, 8]
    # Each decode step is its repetition's mean: tg time over its tokens.
    assert {b - a for a, b in zip(found[0].token_end_ns, found[0].token_end_ns[1:], strict=False)} == {1_000_000}
    assert {b - a for a, b in zip(found[1].token_end_ns, found[1].token_end_ns[1:], strict=False)} == {2_000_000}
    assert found[0].token_end_ns[-1] < found[1].start_ns  # one after the other, never overlapping
    assert abs(found[1].token_end_ns[-1] - end_ns) <= 2


def _worker(spec: dict[str, Any], env: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], int, str]:
    return run_worker(spec, env, timeout_s=120)


def _spec(model: Path, **extra: Any) -> dict[str, Any]:
    return {
        "format": "gguf",
        "model_path": str(model),
        "threads": 2,
        "runs": 4,
        "warmup": 1,
        "min_duration_s": 0.0,
        "options": {"n_batch": "256"},
        "generation": {"prompt_lens": [16, 64], "gen_len": 8},
        "llama_bench": str(STAND_IN),
        **extra,
    }


def test_worker_measures_each_prompt_length_with_llama_bench_and_says_it_reports_block_means(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf", "Q8_0")
    log = tmp_path / "calls.jsonl"

    events, code, stderr = _worker(_spec(model), {"STANDIN_LOG": str(log)})

    assert code == 0, stderr[-2000:]
    info = next(e for e in events if e["type"] == "info")
    end = next(e for e in events if e["type"] == "end")
    measured = [e for e in events if e["type"] == "tokens" and e["phase"] == MEASURE]
    assert info["runtime"] == "llama-bench" and info["runtime_version"] == "b5163 (8cf427ff)"
    assert [e["prompt_tokens"] for e in measured] == [16] * 4 + [64] * 4
    assert all(len(e["token_end_ns"]) == 8 for e in measured)
    assert end["measured"] == 8
    notes = end["notes"]
    assert notes["latency_source"] == "block_means"
    assert (notes["quantization"], notes["n_threads"], notes["n_batch"]) == ("Q8_0", "2", "256")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # the check run, a warmup run per prompt length, then a measured run per prompt length, all with the settings
    assert [c[c.index("-p") + 1] for c in calls] == ["16", "16", "64", "16", "64"]
    assert all(c[c.index("-t") + 1] == "2" and c[c.index("-b") + 1] == "256" for c in calls)
    assert all(c[c.index("-o") + 1] == "jsonl" for c in calls)


def test_a_build_without_jsonl_is_asked_for_json(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf")

    events, code, stderr = _worker(_spec(model, runs=2), {"STANDIN_OLD": "1"})

    assert code == 0, stderr[-2000:]
    assert len([e for e in events if e["type"] == "tokens" and e["phase"] == MEASURE]) == 4


def test_minimum_duration_adds_invocations_until_it_is_met(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf")

    events, code, stderr = _worker(
        _spec(model, runs=1, min_duration_s=0.3, generation={"prompt_lens": [16], "gen_len": 8})
    )

    assert code == 0, stderr[-2000:]
    measured = [e for e in events if e["type"] == "tokens" and e["phase"] == MEASURE]
    # 8 tokens at 0.4 ms per 100 kB of model: a repetition takes about 5 ms, so 0.3 s needs far more than one
    assert len(measured) > 10
    assert measured[-1]["token_end_ns"][-1] - measured[0]["start_ns"] >= 0.2e9


def test_a_model_llama_bench_cannot_load_fails_the_job_in_one_line(tmp_path: Path) -> None:
    model = tmp_path / "notgguf.bin"
    model.write_bytes(b"\x00" * 4096)

    events, code, _ = _worker(_spec(model))

    (error,) = [e for e in events if e["type"] == "error"]
    assert code == 3
    assert error["kind"] == "invalid_model" and error["phase"] == "prepare"
    assert "GGUF magic" in error["message"] and "\n" not in error["message"]


def test_a_missing_llama_bench_is_a_missing_runtime(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf")

    events, code, _ = _worker(_spec(model, llama_bench=str(tmp_path / "nowhere" / "llama-bench")))

    (error,) = [e for e in events if e["type"] == "error"]
    assert code == 3 and error["kind"] == "runtime_missing"
    assert "llama-bench is not an executable file" in error["message"]


def test_a_text_prompt_needs_the_python_binding(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf")

    events, code, _ = _worker(_spec(model, generation={"prompt_text": "hello", "gen_len": 4}))

    (error,) = [e for e in events if e["type"] == "error"]
    assert code == 3 and error["kind"] == "invalid_input"
    assert "--prompt-len" in error["message"]
