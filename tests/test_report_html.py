"""The HTML report in a real headless Chromium: drawn, offline, no script errors, fast enough."""

from __future__ import annotations

import re
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from host.report import write_report
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
