"""The HTML report in a real headless Chromium: drawn, offline, no script errors, fast enough."""

from __future__ import annotations

import re
import struct
import subprocess
import time
import zlib
from html import escape
from pathlib import Path

import numpy as np
import pytest

from host.report.formats import write_report
from host.report.svg import PALETTE, PHASE_FILL
from host.report.synthetic import synthetic_run

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


def decode_png(data: bytes) -> np.ndarray:
    """8-bit RGB/RGBA non-interlaced PNG -> (h, w, channels) uint8, filters undone along anti-diagonals.

    Each pixel depends only on its left, upper and upper-left neighbours, so all pixels of one
    anti-diagonal are reconstructed at once: h + w numpy steps instead of h x w Python steps.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, "unsupported PNG layout"
    bpp = 3 if colour_type == 2 else 4
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * bpp)
    kinds = rows[:, 0].astype(np.int64)
    filtered = rows[:, 1:].reshape(height, width, bpp).astype(np.int64)
    out = np.zeros((height + 1, width + 1, bpp), dtype=np.int64)  # zero row above and column left
    for d in range(height + width - 1):
        r = np.arange(max(0, d - width + 1), min(height, d + 1))
        x = d - r
        a, b, c = out[r + 1, x], out[r, x + 1], out[r, x]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        k = kinds[r][:, None]
        pred = np.select([k == 1, k == 2, k == 3, k == 4], [a, b, (a + b) // 2, paeth], 0)
        out[r + 1, x + 1] = (filtered[r, x] + pred) & 255
    return out[1:, 1:].astype(np.uint8)


def pixels_near(image: np.ndarray, hex_colour: str, tolerance: int = 12) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int(np.count_nonzero(np.all(np.abs(image[..., :3].astype(np.int64) - rgb) <= tolerance, axis=-1)))


def screenshot(html: Path, tmp_path: Path) -> tuple[np.ndarray, str]:
    png = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={png}",
            "--window-size=1400,3000",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and png.exists(), proc.stderr[-2000:]
    return decode_png(png.read_bytes()), proc.stderr


@needs_chromium
def test_report_with_several_devices_renders_all_plots_in_chromium(tmp_path: Path) -> None:
    run = synthetic_run(n_devices=4, n_inferences=2000, unpowered=1, failed=1)
    html = tmp_path / "report.html"
    write_report(run, html, grid_g_per_kwh=400.0)

    image, log = screenshot(html, tmp_path)

    assert image.shape[:2] == (3000, 1400)
    assert float(image[..., :3].std()) > 20, "screenshot is (nearly) blank"
    # Device 0's histogram bars and power line, device 1's: drawn in their palette colours.
    assert pixels_near(image, PALETTE[0]) > 3000
    assert pixels_near(image, PALETTE[1]) > 3000
    # Phase shading of the power and memory plots.
    assert pixels_near(image, PHASE_FILL["measure"], 4) > 20000
    assert pixels_near(image, PHASE_FILL["idle"], 4) > 5000
    # No script errors, and nothing blocked by the page's no-network Content-Security-Policy.
    assert not re.search(r"Uncaught|CONSOLE\(\d+\).*error|Refused to (load|connect|execute)", log), log[-2000:]


def test_html_is_self_contained_and_labels_missing_energy(tmp_path: Path) -> None:
    run = synthetic_run(n_devices=3, n_inferences=500, unpowered=1)
    html = tmp_path / "r.html"

    write_report(run, html)
    text = html.read_text()

    assert "<script" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page must fetch nothing"
    assert "default-src 'none'" in text
    assert text.count("<svg") >= 2 + 3 * 3  # CDF + Pareto, and histogram/power/memory per device
    assert "no power sensor" in text
    for section in ("How this was measured", "energy method", "sampling rate", "recipe", "OS / kernel"):
        assert section in text
    assert "onnx: fix-dims" in text  # the recipe row names the format each device received and its steps
    assert "@media print" in text


def test_ten_devices_by_ten_thousand_inferences_render_under_two_seconds(tmp_path: Path) -> None:
    run = synthetic_run(n_devices=10, n_inferences=10_000, unpowered=2)
    html = tmp_path / "big.html"

    started = time.perf_counter()
    write_report(run, html)
    elapsed = time.perf_counter() - started

    assert elapsed < 2.0, f"10 x 10,000 took {elapsed:.2f} s"
    assert html.stat().st_size < 3_000_000, "downsampling should keep the page small"


# The page of a real result document, label by label (issue 18: mutation testing found the metadata labels,
# the summary head, the error row and the validity text unchecked). Expected texts are written out from the
# document's own fields, not produced by the report code.
class _Page:
    """Definition-list pairs, table rows and section texts of a rendered page."""

    def __init__(self, page: str) -> None:
        from html.parser import HTMLParser

        self.meta: list[dict[str, str]] = []
        self.rows: list[list[tuple[str, dict[str, str | None]]]] = []
        outer = self

        class Parser(HTMLParser):
            cell: list[str] | None = None
            attrs: dict[str, str | None] = {}

            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                if tag == "dl":
                    outer.meta.append({})
                elif tag == "tr":
                    outer.rows.append([])
                elif tag in ("dt", "dd", "td", "th"):
                    self.cell, self.attrs = [], dict(attrs)

            def handle_endtag(self, tag: str) -> None:
                if self.cell is None or tag not in ("dt", "dd", "td", "th"):
                    return
                text = "".join(self.cell)
                if tag == "dt":
                    self.key = text
                elif tag == "dd":
                    outer.meta[-1][self.key] = text
                elif tag in ("td", "th"):
                    outer.rows[-1].append((text, self.attrs))
                self.cell = None

            def handle_data(self, data: str) -> None:
                if self.cell is not None:
                    self.cell.append(data)

        Parser().feed(page)


def _real_run():  # type: ignore[no-untyped-def]
    from real_run import load_real_run

    return load_real_run()


def test_device_metadata_of_a_real_run_reads_label_by_label() -> None:
    from host.report.html import render_html

    run = _real_run()
    (d,) = run.document["devices"]
    board = d["board"]
    v = d["validity"]

    (meta,) = _Page(render_html(run)).meta

    assert meta == {
        "board": f"{board['hostname']} · {board['machine']} · {board['cpu_model']}",
        "CPU cores / RAM": f"{board['cpu_cores']} / {round(board['ram_mb'])} MB",
        "OS / kernel": f"{board['os']} / {board['kernel']}",
        "device profile": d["profile"],
        "runtime": d["runtime"],
        "execution providers": ", ".join(d["execution_providers"]),
        "runtimes on the board": ", ".join(f"{k} {val}" for k, val in board["runtimes"].items()),
        "intra-op threads": "runtime default",  # threads 0: the runtime chose
        "recipe": f"{d['recipe']['target_format']}: {', '.join(d['recipe']['steps'])}",
        "inputs": ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in d["inputs"]) + " (random)",
        "sensors": "no power sensor",
        "sampling rate": f"{d['sample_rate_hz']:.1f} Hz requested",
        "energy method": "no power sensor",
        "warmup / measured": f"{d['n_warmup']} / {d['n_inferences']} inferences over {d['duration_s']:.3f} s",
        "throttling": "not monitored",
        "agent": f"{board['agent_version']} · {d['address']}",
        "validity": "NOT VALID: " + "; ".join(v["reasons"]) + " (" + "; ".join(v["warnings"]) + ")",
    }


def test_summary_of_a_failed_and_a_measured_device_with_the_co2e_column() -> None:
    import copy

    from host.report.html import render_html
    from host.store.rundata import RunData

    run = _real_run()
    doc = copy.deepcopy(run.document)
    ok = doc["devices"][0]
    ok["threads"] = 2
    ok["validity"] = {"valid": True, "reasons": [], "warnings": ["w1", "w2"]}
    doc["devices"].append({"device": "pi <5>", "status": "error", "error": "worker died: <segfault>"})
    page = render_html(RunData(document=doc, raw=run.raw), grid_g_per_kwh=400)
    parsed = _Page(page)

    head = [text for text, _ in parsed.rows[0]]
    assert head == [
        "device", "status", "validity", "runtime / provider", "n", "p50 ms [95% CI]", "p90 ms", "p99 ms", "inf/s",
        "mJ/inf [95% CI]", "dynamic mJ/inf [95% CI]", "avg W", "idle W", "peak MB", "max °C", "throttled",
        "g CO2e / 1M inf (estimate)",
    ]  # fmt: skip
    measured = next(r for r in parsed.rows if r and r[0][0] == ok["device"])
    assert [text for text, _ in measured[1:5]] == ["ok", "valid", "onnxruntime 1.32.0 / CPU", str(ok["n_inferences"])]
    assert measured[1][1] == {"class": "text"}
    failed = next(i for i, r in enumerate(parsed.rows) if r and r[0][0] == "pi <5>")
    assert [text for text, _ in parsed.rows[failed][1:5]] == ["error", "–", "–", "0"]
    assert parsed.rows[failed][1][1] == {"class": "text err"}
    error_row = parsed.rows[failed + 1]
    assert error_row[1] == ("worker died: <segfault>", {"class": "text err", "colspan": str(len(head) - 1)})
    assert "<segfault>" not in page  # escaped everywhere it is shown
    assert "g CO2e per million inferences is an estimate: gross energy × grid carbon intensity 400 g/kWh" in page
    ok_meta, failed_meta = parsed.meta
    assert ok_meta["intra-op threads"] == "2" and ok_meta["validity"] == "valid (w1; w2)"
    assert failed_meta["validity"] == "–" and failed_meta["board"] == "–" and failed_meta["CPU cores / RAM"] == "–"
    assert failed_meta["recipe"] == "– (as uploaded)" and failed_meta["sampling rate"] == "–"
    assert "<h3>" not in page.split("pi &lt;5&gt;</h3>")[1].split("</section>")[0]  # its own section only
    assert "worker died: &lt;segfault&gt;" in page.split("pi &lt;5&gt;</h3>")[1].split("</section>")[0]


def test_page_head_names_the_model_run_and_settings() -> None:
    from host.report.html import render_html

    run = _real_run()
    doc = run.document
    settings = doc["settings"]

    page = render_html(run)

    model_name = Path(doc["model"]["path"]).name
    assert f"<title>edgeprof · {model_name} · {doc['run_id']}</title>" in page
    assert f"<h1>{model_name}</h1>" in page
    shown = ", ".join(
        f"{k} {settings[k]}" for k in settings if k in ("runs", "warmup", "min_duration_s", "idle_s", "threads")
    )
    assert (
        f'<p class="sub">run <code>{doc["run_id"]}</code> · {doc["created_at"]} · model sha256 '
        f"<code>{doc['model']['sha256'][:16]}</code> · 1 device(s) · {shown}</p>"
    ) in page
    assert f"edgeprof {doc['host_version']} · this page is self-contained (no scripts, no network)." in page
    assert "g CO2e per million" not in page  # no grid intensity given: no estimate


def test_a_measured_board_with_energy_and_temperature_fills_every_summary_cell() -> None:
    from host.report.html import render_html
    from host.store.rundata import RunData

    entry = {
        "device": "jetson",
        "status": "ok",
        "runtime": "onnxruntime 1.20",
        "execution_provider": "CUDAExecutionProvider",
        "threads": 4,
        "n_inferences": 500,
        "sample_rate_hz": 200.0,
        "latency_ms": {"p50": 2.5, "p50_ci95": [2.4, 2.6], "p90": 3.0, "p99": 4.0},
        "throughput_ips": 400.0,
        "peak_rss_mb": 120.5,
        "energy": {
            "method": "power-integration",
            "sensor": "whole board: ina3221:VDD_IN",
            "energy_mj_per_inference": 12.5,
            "energy_mj_per_inference_ci95": [12.0, 13.0],
            "dynamic_energy_mj_per_inference": 5.25,
            "dynamic_energy_mj_per_inference_ci95": [5.0, 5.5],
            "avg_power_w": 6.25,
            "idle_power_w": 3.5,
            "sample_rate_hz": 198.5,
        },
        "thermal": {"max_temp_c": 61.5, "throttled": True, "throttle_reason": "GPU clock held at 600 MHz"},
    }
    run = RunData(document={"run_id": "r1", "model": {"path": "m.onnx"}, "devices": [entry]}, raw={})

    parsed = _Page(render_html(run, grid_g_per_kwh=400))

    row = next([text for text, _ in r] for r in parsed.rows if r and r[0][0] == "jetson")
    # 12.5 mJ x 1e6 inferences = 12.5 kJ = 0.003472 kWh; x 400 g/kWh = 1.39 g.
    assert row == [
        "jetson", "ok", "–", "onnxruntime 1.20 / CUDA", "500", "2.500 [2.400–2.600]", "3.000", "4.000", "400.0",
        "12.50 [12.00–13.00]", "5.250 [5.000–5.500]", "6.250", "3.500", "120.5", "61.50", "yes", "1.39",
    ]  # fmt: skip
    (meta,) = parsed.meta
    assert meta["sampling rate"] == "200.0 Hz requested, 198.5 Hz effective on the energy channel"
    assert meta["energy method"] == "power-integration (whole board: ina3221:VDD_IN)"
    assert meta["throttling"] == "GPU clock held at 600 MHz"
    assert meta["execution providers"] == "CUDAExecutionProvider" and meta["intra-op threads"] == "4"
    assert meta["warmup / measured"] == "– / 500 inferences" and meta["agent"] == "–" and meta["inputs"] == "–"


#: Elements whose content model has no place for text: browsers move stray text out of tables ("foster
#: parenting") and show it above them, and a definition list holds only dt/dd.
_NO_TEXT_INSIDE = frozenset({"table", "thead", "tbody", "tr", "dl", "head"})
_VOID = frozenset({"meta", "br", "img", "link", "hr", "input", "col", "wbr"})


class _Structure:
    """Stray text, unbalanced tags and the head's meta tags of a page (html.parser, as lenient as a browser)."""

    def __init__(self, page: str) -> None:
        from html.parser import HTMLParser

        self.stray: list[tuple[str, str]] = []
        self.unbalanced: list[str] = []
        self.metas: list[dict[str, str | None]] = []
        stack: list[str] = []
        outer = self

        class Parser(HTMLParser):
            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                if tag == "meta":
                    outer.metas.append(dict(attrs))
                if tag not in _VOID:
                    stack.append(tag)

            def handle_endtag(self, tag: str) -> None:
                if not stack or stack[-1] != tag:
                    outer.unbalanced.append(f"</{tag}> closes <{stack[-1] if stack else ''}>")
                    return
                stack.pop()

            def handle_data(self, data: str) -> None:
                if stack and stack[-1] in _NO_TEXT_INSIDE and data.strip():
                    outer.stray.append((stack[-1], data.strip()))

        Parser().feed(page)
        self.unclosed = list(stack)


def test_the_page_is_well_formed_where_browsers_are_strict() -> None:
    import copy

    from host.report.html import render_html
    from host.store.rundata import RunData

    run = _real_run()
    doc = copy.deepcopy(run.document)
    doc["devices"][0]["op_profile"] = {
        "by_type": [
            {"op_type": "Conv", "total_us": 900.0, "calls": 26},
            {"op_type": "Relu", "total_us": 100.0, "calls": 26},
        ],
        "top_nodes": [{"node": "conv1", "op_type": "Conv", "total_us": 300.0, "calls": 1}],
    }
    doc["devices"].append({"device": "pi", "status": "error", "error": "worker died"})

    page = _Structure(render_html(RunData(document=doc, raw=run.raw)))

    assert page.stray == [] and page.unbalanced == [] and page.unclosed == []
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.metas
    # Nothing the page could load: no scripts, no network, images only inline.
    (csp,) = [m for m in page.metas if (m.get("http-equiv") or "").lower() == "content-security-policy"]
    assert csp["content"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def test_metadata_shows_a_dash_for_what_the_agent_did_not_say() -> None:
    import copy

    from host.report.html import render_html
    from host.store.rundata import RunData

    run = _real_run()
    doc = copy.deepcopy(run.document)
    d = doc["devices"][0]
    d.pop("execution_providers", None)
    d.pop("execution_provider", None)
    d["board"]["sensors"] = [{"sensor": "ina3221", "name": "VDD_IN", "kind": "power_mw"}]

    (meta,) = _Page(render_html(RunData(document=doc, raw=run.raw))).meta

    assert meta["execution providers"] == "–" and meta["sensors"] == "ina3221:VDD_IN (power_mw, -)"


def test_a_device_with_samples_but_no_inferences_still_gets_its_plots() -> None:
    # A job that failed during warmup: the board's sensors ran, no inference was measured.
    from host.report.html import render_html
    from host.store.rundata import DeviceRaw, RunData

    run = _real_run()
    (d,) = run.document["devices"]
    raw = run.raw[d["device"]]
    only_samples = DeviceRaw(device=raw.device, series=raw.series, phases=raw.phases)

    page = render_html(RunData(document=run.document, raw={d["device"]: only_samples}))

    section = page.split('<section class="device">')[1]
    assert "no raw samples stored" not in section and "<svg" in section


def test_a_board_without_power_sensor_says_so_once_and_leaves_the_other_energy_cells_empty() -> None:
    from host.report.html import render_html

    header, row = _Page(render_html(_real_run())).rows[:2]
    cells = {name: cell for (name, _), cell in zip(header, row, strict=True)}

    assert cells["mJ/inf [95% CI]"] == ("no power sensor", {"class": "nosensor-cell"})
    assert [cells[k] for k in ("dynamic mJ/inf [95% CI]", "avg W", "idle W")] == [("–", {})] * 3


def test_a_device_with_one_inference_and_no_samples_is_plotted_and_one_with_nothing_says_so() -> None:
    from host.report.html import render_html
    from host.store.rundata import DeviceRaw, RunData

    run = _real_run()
    (d,) = run.document["devices"]
    raw = run.raw[d["device"]]
    one = DeviceRaw(device=raw.device, start_ns=raw.start_ns[:1], end_ns=raw.end_ns[:1], phases=raw.phases)
    nothing = DeviceRaw(device=raw.device, phases=raw.phases)

    with_one = render_html(RunData(document=run.document, raw={d["device"]: one}))
    with_nothing = render_html(RunData(document=run.document, raw={d["device"]: nothing}))

    section = with_one.split('<section class="device">')[1]
    assert re.findall(r'<svg class="chart"[^>]* aria-label="([^"]+)"', section) == [
        f"latency distribution, {d['device']}",
        f"power over time, {d['device']}",
    ]
    assert re.findall(r'<div class="nodata">([^<]*)</div>', section) == ["no memory samples"]
    section = with_nothing.split('<section class="device">')[1]
    assert "<svg" not in section
    assert re.findall(r'<div class="nodata">([^<]*)</div>', section) == [
        "no raw samples stored (report built from a result document)"
    ]


def test_the_generation_power_line_is_drawn_in_its_devices_colour() -> None:
    import copy

    from host.report.html import render_html
    from host.store.rundata import RunData, Series

    run = _real_run()
    doc = copy.deepcopy(run.document)
    d = doc["devices"][0]
    raw = run.raw[d["device"]]
    measure = next(p for p in raw.phases if p.name == "measure")
    ms = 1_000_000
    starts = measure.start_ns + np.array([100, 600]) * ms
    tokens = np.concatenate([s + np.array([40, 50, 60, 70]) * ms for s in starts])
    power_t = np.arange(measure.start_ns, measure.end_ns, 10 * ms)
    raw.series += [
        Series("VDD_IN", "power_mw", "total", "ina3221", power_t, np.full(power_t.size, 5000.0)),
        Series("gen_start", "gen_start", t_ns=starts, value=np.array([16.0, 16.0])),
        Series("gen_prefill", "gen_prefill", t_ns=starts + 20 * ms, value=np.array([0.0, 1.0])),
        Series("gen_token", "gen_token", t_ns=tokens, value=np.repeat([0.0, 1.0], 4)),
    ]
    d["energy"].update(method="power-integration", sensor="whole board: ina3221:VDD_IN")
    d["generation"] = [{"prompt_len": 16, "gen_len": 4, "n_generations": 2}]
    doc["devices"].insert(0, {"device": "pi", "status": "error", "error": "worker died"})  # the run's device is 2nd

    page = render_html(RunData(document=doc, raw=run.raw))

    generation = page.split("<h4>Generation</h4>")[1].split("</section>")[0]
    strokes = {
        re.findall(r'aria-label="([^"]+)"', svg)[0]: re.findall(r'<polyline fill="none" stroke="([^"]+)"', svg)
        for svg in re.findall(r"<svg .*?</svg>", generation, re.S)
    }
    assert strokes == {
        f"inter-token latency, {d['device']}": [PALETTE[0]],  # one curve per prompt length
        f"power during generation, {d['device']}": [PALETTE[1]],  # the device's own colour, as its swatch
    }


def test_metadata_shows_a_dash_when_the_board_names_neither_os_nor_kernel() -> None:
    import copy

    from host.report.html import render_html
    from host.store.rundata import RunData

    run = _real_run()
    doc = copy.deepcopy(run.document)
    board = doc["devices"][0]["board"]
    del board["os"], board["kernel"]

    (meta,) = _Page(render_html(RunData(document=doc, raw=run.raw))).meta

    assert meta["OS / kernel"] == "–"


def test_metadata_names_each_sensors_role() -> None:
    import copy

    from host.report.html import render_html
    from host.store.rundata import RunData

    run = _real_run()
    doc = copy.deepcopy(run.document)
    doc["devices"][0]["board"]["sensors"] = [
        {"sensor": "ina3221", "name": "VDD_IN", "kind": "power_mw", "role": "total"},
        {"sensor": "ina3221", "name": "VDD_CPU_GPU_CV", "kind": "power_mw", "role": "component"},
    ]

    (meta,) = _Page(render_html(RunData(document=doc, raw=run.raw))).meta

    assert meta["sensors"] == "ina3221:VDD_IN (power_mw, total), ina3221:VDD_CPU_GPU_CV (power_mw, component)"


def test_op_profile_tables_of_a_real_run_are_headed_by_their_columns() -> None:
    from host.report.html import render_html

    run = _real_run()
    (d,) = run.document["devices"]

    page = render_html(run)

    ops = page.split('<div class="ops">')[1].split("</div>")[0]
    assert re.findall(r"<h4>(.*?)</h4>", ops) == ["Time by operator type", "Slowest nodes"]
    heads = [[text for text, _ in row] for row in _Page(ops).rows if row and row[0][0] in ("op type", "node")]
    assert heads == [["op type", "total ms", "share", "calls"], ["node", "op type", "total ms", "share", "calls"]]
    assert len(_Page(ops).rows) == 2 + min(len(d["op_profile"]["by_type"]), 12) + min(
        len(d["op_profile"]["top_nodes"]), 12
    )


def test_a_measured_device_that_also_carries_an_error_text_gets_no_error_row() -> None:
    import copy

    from host.report.html import render_html
    from host.store.rundata import RunData

    run = _real_run()
    doc = copy.deepcopy(run.document)
    doc["devices"][0]["error"] = "first attempt timed out; retried"

    parsed = _Page(render_html(RunData(document=doc, raw=run.raw)))

    assert [cell for row in parsed.rows for cell in row if cell[1].get("class") == "text err"] == []
    assert len([row for row in parsed.rows if row and row[0][0] == doc["devices"][0]["device"]]) == 1


def test_a_device_entry_without_a_name_is_shown_as_a_question_mark() -> None:
    from host.report.html import render_html
    from host.store.rundata import RunData

    run = RunData(document={"run_id": "r1", "model": {"path": "m.onnx"}, "devices": [{"status": "error"}]}, raw={})

    page = render_html(run)

    summary_row = _Page(page).rows[1]
    assert summary_row[0][0] == "?" and summary_row[1][0] == "error"
    assert re.findall(r"<h3>.*?</span>(.*?)</h3>", page) == ["?"]


def test_the_runtime_and_provider_cell_is_text_aligned_left() -> None:
    from host.report.html import render_html

    run = _real_run()
    (d,) = run.document["devices"]

    page = render_html(run)

    row = next(r for r in _Page(page).rows if r and r[0][0] == d["device"])
    assert d["runtime"].startswith("onnxruntime ")  # the recorded run's runtime and version
    assert row[3] == (f"{d['runtime']} / CPU", {"class": "text"})
    assert "th:first-child, td:first-child, td.text { text-align: left; }" in page


def test_page_head_leaves_out_what_a_document_does_not_record() -> None:
    from host.report.html import render_html
    from host.store.rundata import RunData

    run = RunData(document={"run_id": "r1", "model": {"path": "models/m.onnx"}, "devices": []}, raw={})

    page = render_html(run)

    assert '<p class="sub">run <code>r1</code> · 0 device(s)</p>' in page
    assert "None" not in page
    dated = RunData(document={**run.document, "created_at": "2026-12-01T10:00:00Z", "model": {"sha256": "ab" * 32}})
    assert (
        '<p class="sub">run <code>r1</code> · 2026-12-01T10:00:00Z · model sha256 <code>abababababababab</code>'
        " · 0 device(s)</p>"
    ) in render_html(dated)


def test_the_page_has_its_four_sections_and_every_validity_reason_separated() -> None:
    from host.report.html import render_html

    run = _real_run()
    (d,) = run.document["devices"]
    d["validity"]["reasons"] = [*d["validity"]["reasons"], "the board throttled: 1.2 s at reduced clocks"]

    page = render_html(run)

    assert re.findall(r"<h2>(.*?)</h2>", page) == ["Summary", "Across devices", "Per device", "How this was measured"]
    reasons = escape("; ".join(d["validity"]["reasons"]))
    assert f"NOT VALID: {reasons} (" in page and reasons.count("; ") == 1
