"""`host serve`: the read-only dashboard as a real subprocess over a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from host.report.svg import PALETTE
from host.report.synthetic import _entry, synthetic_run
from host.store.open import open_store
from host.store.rundata import RunData
from host.store.sqlite import Store
from tests.conftest import console_script
from tests.test_report_html import CHROMIUM, decode_png, needs_chromium, pixels_near

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
MODEL_SHA = "ab" * 32


def _run(day: int, slower: float = 1.0, seed: int = 7) -> RunData:
    """A run of mobilenet_v2.onnx on two devices on 2026-03-DAY; `slower` stretches every inference."""
    run = synthetic_run(n_devices=2, n_inferences=400, seed=seed + day, unpowered=0)
    for index, (name, raw) in enumerate(run.raw.items()):
        raw.end_ns = raw.start_ns + ((raw.end_ns - raw.start_ns) * slower).astype(np.int64)
        run.document["devices"][index] = _entry(raw, index, True, 1000.0)
        assert run.document["devices"][index]["device"] == name
    run.document.update(run_id=f"202603{day:02d}-120000-{day:06x}", created_at=f"2026-03-{day:02d}T12:00:00+00:00")
    run.document["model"] = {"path": "models/mobilenet_v2.onnx", "sha256": MODEL_SHA}
    return run


def _fill(store: Store) -> list[RunData]:
    runs = [_run(1), _run(2), _run(3, slower=1.6), _run(4, slower=1.6)]
    broken = synthetic_run(n_devices=1, n_inferences=100, seed=99, unpowered=0, failed=1)
    broken.document["devices"][1]["device"] = HOSTILE
    broken.document["devices"][1]["error"] = HOSTILE
    broken.document.update(run_id="20260305-120000-00bad0", created_at="2026-03-05T12:00:00+00:00")
    broken.document["model"] = {"path": f"models/{HOSTILE}.onnx", "sha256": "cd" * 32}
    for run in [*runs, broken]:
        store.save_run(run)
    return runs


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def get(self, path: str, auth: str | None = None, method: str = "GET") -> tuple[int, str, dict[str, str]]:
        request = urllib.request.Request(self.url.rstrip("/") + path, method=method)
        if auth:
            request.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, reply.read().decode(), dict(reply.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)


def start_serve(env: dict[str, str], *args: str) -> Served:
    proc = subprocess.Popen(
        [console_script("host"), "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the start line, or "" when it exited
    match = re.search(r"dashboard on (\S+)", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"host serve did not start: {line!r} {proc.communicate()[1]}")
    return Served(proc, match.group(1))


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Served, list[RunData]]]:
    target = str(tmp_path / "runs.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    runs = _fill(open_store(target))
    server = start_serve({**os.environ, "EDGEPROF_DB": target})
    yield server, runs
    server.proc.terminate()
    assert server.proc.wait(timeout=30) == 0  # SIGTERM stops it cleanly


def test_runs_page_lists_and_filters_runs_with_stored_text_escaped(served: tuple[Served, list[RunData]]) -> None:
    server, runs = served
    status, body, headers = server.get("/")
    assert status == 200
    assert (
        "script-src" not in headers["Content-Security-Policy"]
        and "default-src 'none'" in headers["Content-Security-Policy"]
    )
    for run in runs:
        assert run.run_id in body
    assert "20260305-120000-00bad0" in body
    assert "<script>" not in body and "<img src=x" not in body  # the agent's text is shown, inert
    assert "&lt;script&gt;" in body

    _, errors_only, _ = server.get("/?status=partial")
    assert "20260305-120000-00bad0" in errors_only and runs[0].run_id not in errors_only
    _, march3_on, _ = server.get("/?since=2026-03-03&until=2026-03-04&model=mobilenet")
    assert [r.run_id for r in runs if r.run_id in march3_on] == [runs[2].run_id, runs[3].run_id]
    _, by_device, _ = server.get("/?device=rasp")
    assert runs[0].run_id in by_device and "20260305-120000-00bad0" not in by_device
    status, body, _ = server.get("/?since=yesterday")
    assert status == 400 and "must be a date" in body


def test_a_run_page_is_its_html_report(served: tuple[Served, list[RunData]]) -> None:
    server, runs = served
    status, body, _ = server.get(f"/runs/{runs[1].run_id}")
    assert status == 200 and "<h2>Summary</h2>" in body and runs[1].run_id in body
    assert body.count("<svg") >= 4
    status, body, _ = server.get("/runs/1999")
    assert status == 404 and "no run &#x27;1999&#x27;" in body


def test_trend_has_a_point_per_run_with_intervals_and_marks_the_regressing_run(
    served: tuple[Served, list[RunData]],
) -> None:
    server, runs = served
    status, index, _ = server.get("/trends")
    assert status == 200 and "dev00-jetson" in index and "dev01-raspberry" in index

    status, body, _ = server.get("/trend?model=mobilenet_v2.onnx&device=dev00-jetson")
    assert status == 200
    latency_svg = body.split("<h2>Latency p50</h2>")[1].split("<h2>")[0]
    assert latency_svg.count("<circle") == 4  # one point per run
    assert latency_svg.count('stroke-width="1.4"') == 4  # each with its interval bar
    gate_rows = re.findall(r"<code>(\d{8}-\d{6}-\w+)</code></a></td>.*?<td class=\"gate\">([^<]*)</td>", body)
    failed = {run_id for run_id, metrics in gate_rows if metrics}
    assert failed == {runs[2].run_id}  # 1.6x slower than the day before; day 4 is as slow as day 3
    assert "latency" in dict(gate_rows)[runs[2].run_id]
    status, _, _ = server.get("/trend?model=mobilenet_v2.onnx")
    assert status == 400


def test_the_dashboard_is_read_only(served: tuple[Served, list[RunData]]) -> None:
    server, runs = served
    status, _, _ = server.get(f"/runs/{runs[0].run_id}", method="POST")
    assert status == 405
    status, _, _ = server.get(f"/runs/{runs[0].run_id}", method="DELETE")
    assert status == 405
    assert open_store(os.environ["EDGEPROF_DB"]) is not None


def test_fleet_page_shows_a_live_agent_and_a_dead_one(agent_process: object, tmp_path: Path) -> None:
    config = tmp_path / "edgeprof.toml"
    address = f"127.0.0.1:{agent_process.port}"  # type: ignore[attr-defined]
    config.write_text(f'[fleets.lab]\nagents = ["{address}", "127.0.0.1:1"]\n')
    open_store().save_run(_run(1))
    server = start_serve({**os.environ, "EDGEPROF_CONFIG": str(config)})
    try:
        status, body, _ = server.get("/fleet")
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)

    assert status == 200
    live, dead = body.split("<tr>")[2:4]
    assert address in live and "SERVING" in live and "generic-linux" in live
    assert re.search(r'<td class="num">0</td>', live)  # queue
    assert "UTC (now)" in live  # last seen
    assert "127.0.0.1:1" in dead and "never" in dead and 'class="error"' in dead


def test_beyond_loopback_it_needs_a_token_and_checks_it(tmp_path: Path) -> None:
    refused = subprocess.run(
        [console_script("host"), "serve", "--listen", "0.0.0.0:0"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "--token-file" in refused.stderr

    token = tmp_path / "dashboard.token"
    token.write_text("s3cret-token\n")
    server = start_serve(dict(os.environ), "--token-file", str(token))
    try:
        assert server.get("/")[0] == 401
        assert "WWW-Authenticate" in server.get("/")[2]
        wrong = "Basic " + base64.b64encode(b"me:guess").decode()
        right = "Basic " + base64.b64encode(b"me:s3cret-token").decode()
        assert server.get("/", auth=wrong)[0] == 401
        assert server.get("/", auth=right)[0] == 200
        assert server.get("/", auth="Bearer s3cret-token")[0] == 200
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def _shot(url: str, tmp_path: Path, name: str) -> np.ndarray:
    png = tmp_path / f"{name}.png"
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
            f"--user-data-dir={tmp_path / ('profile-' + name)}",
            f"--screenshot={png}",
            "--window-size=1300,1500",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0 and png.exists(), proc.stderr[-2000:]
    return decode_png(png.read_bytes())


@needs_chromium
def test_pages_render_in_headless_chromium(tmp_path: Path) -> None:
    runs = _fill(open_store())
    server = start_serve(dict(os.environ))
    shots = Path(os.environ.get("EDGEPROF_SCREENSHOTS", tmp_path))
    try:
        runs_page = _shot(server.url, shots, "dashboard-runs")
        trend = _shot(server.url + "trend?model=mobilenet_v2.onnx&device=dev00-jetson", shots, "dashboard-trend")
        report = _shot(server.url + f"runs/{runs[0].run_id}", shots, "dashboard-report")
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)

    assert pixels_near(runs_page, "#1f2933") > 20000  # the navigation bar
    assert pixels_near(runs_page, "#1b7f3b", 40) > 50  # green "ok" device links
    assert pixels_near(trend, PALETTE[0]) > 1500  # the trend lines, points and interval bars
    assert pixels_near(trend, "#b00020", 30) > 100  # the gate-failure mark
    assert pixels_near(report, PALETTE[0]) > 3000  # the report's own plots
