"""The dashboard's trend keeps runs that ran differently apart (issue 29 item 4) and dates its time axis (item 12).

One model file profiled as given, as dynamic int8, as static int8 with a calibration file and fed an `--inputs`
file: four things measured, four lines, and a run is gated against the run before it of the same variant only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from host.dashboard.trend import mark_gate_failures, render_trend, time_ticks, trend_points
from host.report.svg import PALETTE
from host.report.synthetic import _entry, synthetic_run
from host.store.open import open_store
from host.store.rundata import RunData
from tests.test_report_html import needs_chromium, pixels_near
from tests.test_serve_dashboard import _shot, start_serve

DEVICE = "dev00-jetson"
FLOAT: dict[str, Any] = {}
DYNAMIC = {"quantize": "int8", "quantize_mode": "dynamic"}
STATIC = {"quantize": "int8", "quantize_mode": "static", "calibration_sha256": "c0ffee" + "0" * 58}
INPUTS = {"inputs_npz": True, "inputs_sha256": "beef" + "1" * 60}


def _run(hour: int, settings: dict[str, Any], speed: float) -> RunData:
    """mobilenet_v2.onnx on one device at 2026-03-01 HOUR:00 UTC; `speed` scales every inference's time."""
    run = synthetic_run(n_devices=1, n_inferences=400, seed=hour, unpowered=0)
    ((name, raw),) = run.raw.items()
    raw.end_ns = raw.start_ns + ((raw.end_ns - raw.start_ns) * speed).astype(np.int64)
    run.document["devices"][0] = _entry(raw, 0, True, 1000.0)
    run.document.update(run_id=f"20260301-{hour:02d}0000-{hour:06x}", created_at=f"2026-03-01T{hour:02d}:00:00+00:00")
    run.document["model"] = {"path": "models/mobilenet_v2.onnx", "sha256": "ab" * 32}
    run.document["settings"] = {"runs": 400, **settings}
    assert name == DEVICE
    return run


#: float, dynamic int8 (0.6x), float again, static int8 (0.5x), float with --inputs, float: six hours.
RUNS = [(6, FLOAT, 1.0), (7, DYNAMIC, 0.6), (8, FLOAT, 1.0), (9, STATIC, 0.5), (10, INPUTS, 1.0), (11, FLOAT, 1.02)]


def _stored() -> list[RunData]:
    store = open_store()
    runs = [_run(*spec) for spec in RUNS]
    for run in runs:
        store.save_run(run)
    return runs


def _latency_svg(page: str) -> str:
    return page.split("<h2>Latency p50</h2>")[1].split("<h2>")[0]


def test_each_variant_is_its_own_line_and_named_in_the_legend_and_the_table() -> None:
    runs = _stored()

    points = trend_points([r.document for r in runs], "mobilenet_v2.onnx", DEVICE)
    page = render_trend(points, "mobilenet_v2.onnx", DEVICE, 5.0)

    svg = _latency_svg(page)
    assert svg.count("<polyline") == 4 and svg.count("<circle") == 6
    legend = re.findall(r'<span class="variant"><span style="[^"]*background:(#\w+)"></span>([^<]*)</span>', page)
    labels = ["as given", "quantize=int8-dynamic", "quantize=int8-static calibration=c0ffee00", "inputs=npz:beef1111"]
    assert legend == list(zip(PALETTE[:4], labels, strict=True))
    variants = re.findall(r"</code></a></td><td>[^<]*</td><td>([^<]*)</td>", page)
    assert variants == ["as given", "inputs=npz:beef1111", "quantize=int8-static calibration=c0ffee00", "as given",
                        "quantize=int8-dynamic", "as given"]  # fmt: skip


def test_a_float_run_is_gated_against_the_float_run_before_it_not_a_faster_int8_one() -> None:
    runs = _stored()
    points = trend_points([r.document for r in runs], "mobilenet_v2.onnx", DEVICE)

    mark_gate_failures(open_store(), points, DEVICE, 5.0)

    # 08:00 (float) after 07:00 (int8, 0.6x) was "1.67x slower" when every run followed the one before it.
    assert [p.run_id for p in points if p.gate_failures] == []


def test_the_time_axis_is_labelled_with_times_of_day_and_dates() -> None:
    runs = _stored()
    points = trend_points([r.document for r in runs], "mobilenet_v2.onnx", DEVICE)

    svg = _latency_svg(render_trend(points, "mobilenet_v2.onnx", DEVICE, 5.0))

    ticks = re.findall(r'class="tick" text-anchor="middle">([^<]*)</text>', svg)
    assert ticks[0] == "03-01 06:00" and ticks[1:4] == ["07:00", "08:00", "09:00"], ticks
    assert "days since" not in svg and "time of the run (UTC)" in svg
    two_weeks = time_ticks(0.0, 14 * 86400.0)
    assert [text for _, text in two_weeks][:2] == ["1970-01-01", "1970-01-03"]


@needs_chromium
def test_the_trend_of_mixed_variants_renders_four_coloured_lines(tmp_path: Path) -> None:
    _stored()
    server = start_serve(dict(os.environ))
    shots = Path(os.environ.get("EDGEPROF_SCREENSHOTS", tmp_path))
    try:
        image = _shot(server.url + f"trend?model=mobilenet_v2.onnx&device={DEVICE}", shots, "trend-variants")
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)

    for colour in PALETTE[:4]:
        assert pixels_near(image, colour) > 150, colour  # each variant's line, points and bars


def test_runtime_precision_and_llama_settings_are_part_of_the_variant() -> None:
    from host.analysis.variant import variant_parts

    tensorrt = {
        "model": {"format": "onnx"},
        "settings": {
            "options": {"runtime": "tensorrt", "tensorrt.precision": "int8", "tensorrt.dla_core": "0"},
            "calibration_sha256": "ab" * 32,
        },
    }
    gguf = {"model": {"format": "gguf"}, "settings": {"llama_options": {"n_ctx": "4096"}, "gen_len": 32}}

    assert variant_parts(tensorrt) == ["runtime=tensorrt", "precision=int8", "dla_core=0", "calibration=abababab"]
    assert variant_parts(gguf) == ["n_ctx=4096", "gen_len=32"]
