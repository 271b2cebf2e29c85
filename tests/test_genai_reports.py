"""The generation section of every report format, on a real generative run through `agent serve` + `host profile`.

Expected figures are recomputed from the stored token timestamps with plain numpy (the gen_* series), never
taken from the code under test; the device is renamed to hostile text, as an agent or an imported document
could name it, to check that every format escapes it.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

from host.report.formats import render, write_report
from host.report.generation import DECODE_FILL, PREFILL_FILL
from host.store.open import open_store
from host.store.rundata import DeviceRaw, RunData
from tests.genai_model import write_genai_dir
from tests.genai_runs import profile_genai, rapl_agent
from tests.test_report_html import CHROMIUM, needs_chromium, pixels_near, screenshot

HOSTILE = '=HYPERLINK("x")<b>bold</b>|*d*'
PROMPTS = (16, 512)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    tmp = tmp_path_factory.mktemp("genai_reports")
    model_dir = write_genai_dir(tmp / "tiny_genai_dir")
    with rapl_agent(tmp) as address:
        document = profile_genai(model_dir, address, tmp / "runs.db", tmp / "run.json", prompt_lens="16,512", gen_len=8)
    stored = open_store(tmp / "runs.db").load_run(document["run_id"])
    (entry,) = stored.document["devices"]
    raw = stored.raw.pop(entry["device"])
    entry["device"] = raw.device = HOSTILE
    stored.raw[HOSTILE] = raw
    return stored


def _from_tokens(raw: DeviceRaw) -> dict[int, dict[str, float]]:
    """Per prompt length, from the stored gen_* series of the measure phase: TTFT p50 and decode tokens/s."""
    by_kind = {s.kind: s for s in raw.series}
    start, token = by_kind["gen_start"], by_kind["gen_token"]
    measure = [(p.start_ns, p.end_ns) for p in raw.phases if p.name == "measure"]
    out: dict[int, dict[str, list[float]]] = {}
    for index, (t0, prompt) in enumerate(zip(start.t_ns, start.value, strict=True)):
        if not any(lo <= t0 <= hi for lo, hi in measure):
            continue
        ts = np.sort(token.t_ns[token.value == index])
        acc = out.setdefault(int(prompt), {"ttft": [], "decoded": [], "decode_s": []})
        acc["ttft"].append((ts[0] - t0) / 1e6)
        acc["decoded"].append(ts.size - 1)
        acc["decode_s"].append((ts[-1] - ts[0]) / 1e9)
    return {
        p: {
            "ttft_p50": float(np.percentile(a["ttft"], 50)),
            "decode_tokens_per_s": sum(a["decoded"]) / sum(a["decode_s"]),
            "n": len(a["ttft"]),
        }
        for p, a in out.items()
    }


def _close(text: str, value: float, digits: int = 4) -> bool:
    """A figure shown to `digits` significant digits matches `value` (half a unit of the last digit)."""
    return math.isclose(float(text), value, rel_tol=0.5 * 10.0 ** (1 - digits) * 1.001)


def test_document_generation_figures_are_those_of_the_token_timestamps(run: RunData) -> None:
    (entry,) = run.document["devices"]
    expected = _from_tokens(run.raw[HOSTILE])

    rows = {r["prompt_len"]: r for r in entry["generation"]}

    assert sorted(rows) == sorted(expected) == list(PROMPTS)
    for prompt, want in expected.items():
        assert rows[prompt]["n_generations"] == want["n"] >= 5
        assert rows[prompt]["ttft_ms"]["p50"] == pytest.approx(want["ttft_p50"], rel=1e-9)
        assert rows[prompt]["decode_tokens_per_s"] == pytest.approx(want["decode_tokens_per_s"], rel=1e-9)


def _markdown_table(text: str, heading: str) -> list[dict[str, str]]:
    lines = text.splitlines()
    at = lines.index(heading)
    header = [c.strip() for c in lines[at + 2].strip("|").split(" | ")]
    body = []
    for line in lines[at + 4 :]:
        if not line.startswith("|"):
            break
        body.append(dict(zip(header, [c.strip() for c in line.strip("|").split(" | ")], strict=True)))
    return body


def test_markdown_generation_table_shows_each_prompt_length_and_escapes_the_device(run: RunData) -> None:
    expected = _from_tokens(run.raw[HOSTILE])
    (entry,) = run.document["devices"]

    text = render(run, "md")

    heading = r'**=HYPERLINK("x")&lt;b&gt;bold&lt;/b&gt;\|\*d\*: generation**'
    table = _markdown_table(text, heading)
    assert [int(r["prompt tokens"]) for r in table] == list(PROMPTS)
    for row, doc_row in zip(table, entry["generation"], strict=True):
        want = expected[int(row["prompt tokens"])]
        assert row["generated"] == "8" and int(row["n"]) == want["n"]
        p50, _, interval = row["TTFT p50 ms [95% CI]"].partition(" ")
        assert _close(p50, want["ttft_p50"])
        ci = doc_row["ttft_ms"]["p50_ci95"]
        if ci is None:  # generations whose speed wandered more than the run resolves: no interval is shown
            assert interval == ""
        else:
            lo, hi = (float(x) for x in interval.strip("[]").split("–"))
            assert _close(str(lo), ci[0]) and _close(str(hi), ci[1])
        assert _close(row["decode tok/s"], want["decode_tokens_per_s"])
        assert _close(row["mJ/generated token"], doc_row["energy_mj_per_generated_token"])
        assert _close(row["tokens/J"], doc_row["tokens_per_joule"])
        assert _close(row["prefill tok/s"], doc_row["prefill_tokens_per_s"])
    assert "<b>" not in text


def test_csv_has_one_row_per_prompt_length_at_full_precision_and_no_formula(run: RunData) -> None:
    expected = _from_tokens(run.raw[HOSTILE])
    (entry,) = run.document["devices"]

    rows = list(csv.DictReader(io.StringIO(render(run, "csv"))))

    assert [int(r["prompt_len"]) for r in rows] == list(PROMPTS)
    for row, doc_row in zip(rows, entry["generation"], strict=True):
        want = expected[int(row["prompt_len"])]
        assert row["device"] == "'" + HOSTILE  # a spreadsheet shows it as text, never runs it
        assert row["run_id"] == run.run_id and row["status"] == "ok"
        assert float(row["ttft_p50_ms"]) == pytest.approx(want["ttft_p50"], rel=1e-12)
        assert float(row["decode_tokens_per_s"]) == pytest.approx(want["decode_tokens_per_s"], rel=1e-12)
        ci = doc_row["ttft_ms"]["p50_ci95"]
        assert row["ttft_p50_ci95_lo_ms"] == "" if ci is None else float(row["ttft_p50_ci95_lo_ms"]) == ci[0]
        assert float(row["itl_p99_ms"]) == doc_row["itl_ms"]["p99"]
        assert float(row["energy_mj_per_prompt_token"]) == doc_row["energy_mj_per_prompt_token"]
        assert float(row["tokens_per_joule"]) == doc_row["tokens_per_joule"]
        assert int(row["tokens_generated"]) == want["n"] * 8
        assert float(row["latency_p50_ms"]) == entry["latency_ms"]["p50"]  # the device's own columns repeated


def test_html_generation_section_is_escaped_and_has_its_plots(run: RunData) -> None:
    text = render(run, "html")

    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "<h4>Generation</h4>" in text
    assert re.search(r'aria-label="inter-token latency, [^"]*"', text)
    assert re.search(r'aria-label="power during generation, [^"]*"', text)
    section = text[text.index("<h4>Generation</h4>") :]
    for header in ("TTFT p50 ms [95% CI]", "ITL p99 ms", "decode tok/s", "mJ/generated token", "tokens/J"):
        assert f"<th>{header}</th>" in section


@needs_chromium
def test_html_generation_plots_render_in_chromium(run: RunData, tmp_path: Path) -> None:
    html = tmp_path / "gen.html"
    write_report(run, html)

    image, log = screenshot(html, tmp_path)

    assert CHROMIUM.exists()
    # Prompt 512's prefill takes most of its stretch of the timeline, prompt 16's 8-token decode most of its own.
    assert pixels_near(image, PREFILL_FILL, 4) > 5000
    assert pixels_near(image, DECODE_FILL, 4) > 5000
    assert not re.search(r"Uncaught|CONSOLE\(\d+\).*error|Refused to (load|connect|execute)", log), log[-2000:]
