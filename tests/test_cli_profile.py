"""`host profile` and `agent` as a user runs them: installed console scripts, real models, real agents."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import console_script
from tests.faultlib import AgentProc, spawn

RESULT_KEYS = {
    "device",
    "profile",
    "status",
    "error",
    "runtime",
    "execution_provider",
    "n_inferences",
    "upload_bytes",
    "latency_ms",
    "throughput_ips",
    "load_time_ms",
    "peak_rss_mb",
    "energy",
    "thermal",
}
FAST = ["--runs", "30", "--min-duration", "0.2", "--idle", "0", "--warmup", "2", "--quiet"]


def host(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("host"), *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy(), cwd=cwd
    )


def test_profile_on_embedded_default_writes_complete_document(squeezenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = host(
        "profile",
        str(squeezenet),
        "--runs",
        "50",
        "--min-duration",
        "0.2",
        "--idle",
        "0",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert {"run_id", "model", "created_at", "devices"} <= set(doc)
    assert doc["model"]["sha256"] and doc["model"]["path"] == str(squeezenet)
    (dev,) = doc["devices"]
    assert set(dev) >= RESULT_KEYS
    assert dev["status"] == "ok" and dev["error"] is None
    assert dev["n_inferences"] >= 50
    lat = dev["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    if lat["p50_ci95"] is not None:
        assert lat["p50_ci95"][0] <= lat["p50"] <= lat["p50_ci95"][1]
    else:  # a busy machine's latency can wander more slowly than 200 inferences resolve: no interval, and why
        assert lat["ci_method"].startswith("none: ") and not dev["validity"]["valid"]
    assert dev["throughput_ips"] > 0 and dev["load_time_ms"] > 0 and dev["peak_rss_mb"] > 10
    assert set(dev["energy"]) >= {
        "method",
        "sensor",
        "idle_power_w",
        "avg_power_w",
        "energy_mj_per_inference",
        "dynamic_energy_mj_per_inference",
        "energy_mj_per_inference_ci95",
    }
    assert set(dev["thermal"]) >= {"max_temp_c", "throttled"}
    assert "p50 ms" in proc.stdout and "local" in proc.stdout
    listing = host("runs", "ls")
    assert doc["run_id"] in listing.stdout


def test_second_run_of_same_model_uploads_nothing(squeezenet: Path, tmp_path: Path) -> None:
    docs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        proc = host("profile", str(squeezenet), *FAST, "--json", str(out))
        assert proc.returncode == 0, proc.stderr
        docs.append(json.loads(out.read_text()))
    # What travels is the artifact compiled for the target's profile (generic-linux: ORT offline optimised).
    assert docs[0]["devices"][0]["upload_bytes"] > 0
    assert docs[0]["devices"][0]["recipe"]["steps"]
    assert docs[1]["devices"][0]["upload_bytes"] == 0


def test_tflite_model_profiles_end_to_end(tflite_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = host("profile", str(tflite_model), *FAST, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    (dev,) = json.loads(out.read_text())["devices"]
    assert dev["status"] == "ok" and dev["runtime"].startswith("tflite")
    assert dev["inputs"][0]["shape"] == [1, 96, 96, 3]


def _bad_inputs(tmp_path: Path, squeezenet: Path) -> dict[str, list[str]]:
    random_onnx = tmp_path / "random.onnx"
    random_onnx.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(squeezenet.read_bytes()[: squeezenet.stat().st_size // 2])
    text_tflite = tmp_path / "notes.tflite"
    text_tflite.write_text("this is not a model\n")
    return {
        "missing file": [str(tmp_path / "nope.onnx")],
        "random bytes": [str(random_onnx)],
        "truncated onnx": [str(truncated)],
        "text named tflite": [str(text_tflite)],
        "wrong input shape": [str(squeezenet), "--input-shape", "data_0=1x3x100x100"],
        "unknown input name": [str(squeezenet), "--input-shape", "image=1x3x224x224"],
        "malformed shape": [str(squeezenet), "--input-shape", "data_0=1by3"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "random bytes",
        "truncated onnx",
        "text named tflite",
        "wrong input shape",
        "unknown input name",
        "malformed shape",
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_1(case: str, tmp_path: Path, squeezenet: Path) -> None:
    args = _bad_inputs(tmp_path, squeezenet)[case]
    proc = host("profile", *args, *FAST, timeout=60)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("host: ")
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.fixture
def agent_subprocess(tmp_path: Path) -> Iterator[str]:
    agent = AgentProc(tmp_path).start()
    yield agent.address
    agent.stop()


def test_two_hosts_on_one_agent_never_measure_concurrently(
    agent_subprocess: str, shufflenet: Path, tmp_path: Path
) -> None:
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    cmd = [
        console_script("host"),
        "profile",
        str(shufflenet),
        "--device",
        agent_subprocess,
        "--runs",
        "30",
        "--min-duration",
        "0.5",
        "--idle",
        "0",
        "--quiet",
    ]
    procs = [
        spawn([*cmd, "--json", str(o)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for o in outs
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    spans = []
    for out in outs:
        (dev,) = json.loads(out.read_text())["devices"]
        measure = next(p for p in dev["phases"] if p["name"] == "measure")
        spans.append((measure["start_ns"], measure["end_ns"]))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"measure windows overlap: {spans}"


def test_unreachable_device_fails_with_one_line_and_exit_1(squeezenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = host("profile", str(squeezenet), "--device", "127.0.0.1:1", *FAST, "--json", str(out), timeout=60)
    assert proc.returncode == 1
    (dev,) = json.loads(out.read_text())["devices"]
    assert dev["status"] == "error" and "nothing listens at 127.0.0.1:1 (connection refused)" in dev["error"]
    assert "Traceback" not in proc.stderr


def test_agent_info_json_describes_the_board() -> None:
    proc = subprocess.run([console_script("agent"), "info", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["cpu_cores"] >= 1 and info["ram_bytes"] > 0 and info["kernel"]
    assert {rt["name"] for rt in info["runtimes"]} >= {"onnxruntime"}
    assert info["profile"]


@pytest.mark.parametrize("fmt", [["--json"], []], ids=["json", "text"])
def test_agent_info_into_a_reader_that_left_ends_quietly_and_says_the_kernel_once(fmt: list[str]) -> None:
    # `agent info --json | head`: the reader is gone before the info is printed.
    proc = subprocess.Popen([console_script("agent"), "info", *fmt], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    full = subprocess.run([console_script("agent"), "info", *fmt], capture_output=True, text=True, timeout=120)

    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert proc.returncode == 141  # as a Unix tool cut off by SIGPIPE
    kernel = json.loads(full.stdout)["kernel"] if fmt else full.stdout.split("kernel ")[1].split()[0]
    assert full.stdout.count(kernel) == 1, full.stdout


def test_agent_info_fits_an_80_column_terminal() -> None:
    from tests.terminal import run_in_terminal

    screen = run_in_terminal([console_script("agent"), "info"], 80, os.environ.copy(), timeout_s=120)

    assert screen.returncode == 0, screen.text
    assert max(len(line) for line in screen.lines) <= 80, screen.text  # the missing runtimes' reasons folded


def test_python_dash_m_entry_points_work() -> None:
    for module in ("host", "agent"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "usage" in (proc.stdout + proc.stderr).lower()


def test_result_states_validity_and_reasons(squeezenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    # A run that meets every rule is valid, with no reasons. One rule is the machine's, not the run's: other
    # processes holding half the CPU (other tests, other jobs on a shared CI box) make any run invalid.
    # 200 inferences: under 50 no interval can check how correlated they are, and a run without one is not valid.
    enough = [*FAST[: FAST.index("--runs")], "--runs", "200", *FAST[FAST.index("--runs") + 2 :]]
    proc = host("profile", str(squeezenet), *enough, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    (dev,) = json.loads(out.read_text())["devices"]
    reasons = dev["validity"]["reasons"]
    assert dev["validity"]["valid"] is (reasons == []), dev["validity"]
    machine = ("other processes used", "too short for its own intervals", "latency drifted")
    if not any(r.startswith(machine) for r in reasons):
        # A loaded machine also makes latency wander (drift, no interval): only a quiet one must pass every rule.
        assert reasons == [], dev["validity"]

    # One that skips the warmup measured cold inferences: invalid, and the document says why.
    cold = tmp_path / "cold.json"
    no_warmup = [*FAST[: FAST.index("--warmup")], "--warmup", "0", *FAST[FAST.index("--warmup") + 2 :]]
    proc = host("profile", str(squeezenet), *no_warmup, "--json", str(cold))
    assert proc.returncode == 0, proc.stderr
    (dev,) = json.loads(cold.read_text())["devices"]
    assert dev["status"] == "ok" and dev["validity"]["valid"] is False, dev["validity"]
    no_warmup_reason = "no warmup inferences: the first (cold caches, lazy initialisation) were measured"
    assert no_warmup_reason in dev["validity"]["reasons"], dev["validity"]


def test_local_agent_does_not_outlive_a_killed_host(squeezenet: Path, tmp_path: Path) -> None:
    import signal

    import psutil

    proc = spawn(
        [console_script("host"), "profile", str(squeezenet), "--runs", "100000", "--min-duration", "60", "--idle", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stderr_lines: queue.Queue[str | None] = queue.Queue()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_lines.put(line)
        stderr_lines.put(None)  # end of output: the host exited

    threading.Thread(target=read_stderr, daemon=True).start()
    agents: list[psutil.Process] = []
    try:
        # Wait (at most 120 s) until the host reports measuring: the local agent (and its worker) exist by then.
        deadline = time.monotonic() + 120
        seen: list[str] = []
        while not any("measure" in line for line in seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the host never reported measuring: {''.join(seen)[-2000:]}"
            try:
                line = stderr_lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"the host exited before measuring: {''.join(seen)[-2000:]}"
            seen.append(line)
        agents = [c for c in psutil.Process(proc.pid).children(recursive=True) if "serve" in " ".join(c.cmdline())]
        assert agents, "the host started no local agent"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(agents, timeout=20)
        assert not alive, f"local agent still running after its host was killed: {[p.pid for p in alive]}"
    finally:
        # Whatever failed above, no 60-second host (or an agent it left) outlives this test.
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for agent in agents:
            with contextlib.suppress(psutil.NoSuchProcess):
                agent.kill()


def test_profile_writes_the_report_named_by_report(squeezenet: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    proc = host("profile", str(squeezenet), *FAST, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert "local" in report.read_text() and "p50" in report.read_text()


def test_bad_report_name_fails_before_profiling(squeezenet: Path, tmp_path: Path) -> None:
    proc = host("profile", str(squeezenet), *FAST, "--report", str(tmp_path / "r.xyz"), timeout=30)
    assert proc.returncode == 1 and "report format" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.xyz").exists()


def test_op_profile_reports_time_by_op_type_and_top_nodes(squeezenet: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "r.json", tmp_path / "r.md"
    proc = host(
        "profile", str(squeezenet), *FAST, "--op-profile", "--json", str(out), "--report", str(report), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    (dev,) = json.loads(out.read_text())["devices"]
    by_type = dev["op_profile"]["by_type"]
    # The terminal shows the op-type table, and the runtime's raw trace is kept as a Chrome trace file.
    table = proc.stdout.split("op profile  local: time by operator type", 1)[1].splitlines()
    assert table[1].split()[:5] == ["op", "type", "total", "ms", "share"] and table[2].split()[0] == "Conv"
    trace = Path(dev["op_profile"]["trace_file"])
    assert trace.parent == tmp_path and trace.name.startswith("op-trace-") and f"trace: {trace}" in proc.stdout
    events = json.loads(trace.read_text())
    kernels = [e for e in events if str(e.get("name", "")).endswith("_kernel_time")]
    assert kernels and all({"ph", "ts", "dur", "pid", "tid"} <= set(e) for e in kernels)  # Trace Event Format
    assert {e["args"]["op_name"] for e in kernels} >= {"Conv", "Concat"}
    assert by_type[0]["op_type"] == "Conv"  # SqueezeNet's time is in its convolutions
    assert all(row["total_us"] > 0 and row["calls"] > 0 for row in by_type)
    assert dev["op_profile"]["top_nodes"] and all(n["node"] for n in dev["op_profile"]["top_nodes"])
    assert "time by operator type" in report.read_text() and "| Conv |" in report.read_text()
    html = tmp_path / "r.html"
    assert host("report", "--last", "-o", str(html)).returncode == 0
    by_type_table = html.read_text().split("Time by operator type", 1)[1].split("</table>", 1)[0]
    first_row = re.findall(r"<td[^>]*>([^<]*)</td>", by_type_table.split("<tr>")[2])
    assert re.findall(r"<th>([^<]*)</th>", by_type_table) == ["op type", "total ms", "share", "calls"]
    assert first_row[0] == "Conv" and len(first_row) == 4  # the op type once, not in two columns


def test_quantize_int8_profiles_the_quantized_model(squeezenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = host("profile", str(squeezenet), *FAST, "--quantize", "int8", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    (dev,) = json.loads(out.read_text())["devices"]
    assert dev["status"] == "ok"
    assert any(step.startswith("quantize-int8") for step in dev["recipe"]["steps"])
    # Dynamic int8 is often slower than float on a CPU: the result says why and what to try instead.
    assert any("dynamic int8 quantizes activations at run time" in w for w in dev["validity"]["warnings"])
    assert dev["board"]["metadata"]["cpu_int8_dot"] in ("yes", "no")


def test_unknown_quantize_is_one_line_error(squeezenet: Path) -> None:
    proc = host("profile", str(squeezenet), *FAST, "--quantize", "int3", timeout=30)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
