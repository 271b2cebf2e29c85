"""`agent serve --metrics-listen`: Prometheus metrics of a real agent on a faked Jetson, scraped over HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.sensors.base import POWER_MW, Channel, Sensor
from agent.service.metrics import AgentState, MetricsServer
from agent.service.serve import AgentProcess, ServeError, ServeOptions
from tests.conftest import console_script
from tests.faultlib import AgentProc, isolated_env
from tests.sensor_fakes import ORIN_NANO_RAILS, build_orin_nano, build_thermal

FAST = ["--runs", "5", "--min-duration", "0.05", "--idle", "0", "--warmup", "1", "--threads", "1", "--quiet"]


def _metrics_port(agent: AgentProc, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # the log line is written right after the endpoint is bound
        found = re.search(r"Prometheus metrics on \S+ port (\d+)", agent.log_path.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no metrics endpoint announced: {agent.log_path.read_text()[-2000:]}")


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


@pytest.fixture
def jetson(tmp_path: Path) -> Iterator[tuple[AgentProc, int]]:
    root = tmp_path / "sys"
    build_orin_nano(root)
    build_thermal(root, {"CPU-therm": 41.5, "GPU-therm": 39.0})
    agent = AgentProc(tmp_path, "--metrics-listen", "127.0.0.1:0", env={"EDGEPROF_SYSFS_ROOT": str(root)}).start()
    try:
        yield agent, _metrics_port(agent)
    finally:
        agent.stop()


def test_metrics_show_rail_power_temperatures_queue_and_health(jetson: tuple[AgentProc, int]) -> None:
    _, port = jetson

    samples = scrape(port)

    assert samples["edgeprof_agent_up"] == [({}, 1.0)]
    (info,) = samples["edgeprof_agent_info"]
    assert info[0]["profile"] == "jetson-orin-nano" and info[0]["version"]
    power = {labels["channel"]: watts for labels, watts in samples["edgeprof_power_watts"]}
    vdd_in = next(r for r in ORIN_NANO_RAILS if r.label == "VDD_IN")
    assert power["VDD_IN"] == pytest.approx(vdd_in.power_mw / 1000)
    temps = {labels["zone"]: c for labels, c in samples["edgeprof_temperature_celsius"]}
    assert temps == {"CPU-therm": 41.5, "GPU-therm": 39.0}
    assert samples["edgeprof_queued_jobs"] == [({}, 0.0)]
    assert {labels["state"]: n for labels, n in samples["edgeprof_journal_jobs"]}["ok"] == 0


def test_a_finished_job_is_counted_by_outcome(jetson: tuple[AgentProc, int], squeezenet: Path) -> None:
    agent, port = jetson
    out = subprocess.run(
        [console_script("host"), "profile", str(squeezenet), "--device", agent.address, *FAST],
        capture_output=True,
        text=True,
        timeout=300,
        env=isolated_env(agent.tmp / "host"),
    )
    assert out.returncode == 0, out.stderr

    jobs = {labels["state"]: n for labels, n in scrape(port)["edgeprof_journal_jobs"]}
    assert jobs["ok"] == 1 and jobs["error"] == 0 and jobs["running"] == 0


def test_a_bad_metrics_address_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "serve", "--listen", "127.0.0.1:0", "--no-advertise",
         "--data-dir", str(tmp_path / "agent"), "--metrics-listen", "nowhere"],
        capture_output=True, text=True, timeout=120, env=isolated_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "agent: --metrics-listen 'nowhere' must be HOST:PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


class _CountingRail(Sensor):
    """One power rail that counts how often it is read (RAPL behind --rapl-access would be read as often)."""

    backend = "fake"

    def __init__(self) -> None:
        self.reads = 0

    def channels(self) -> list[Channel]:
        return [Channel("package-0", POWER_MW, "total")]

    def read(self) -> list[float]:
        self.reads += 1
        return [4200.0]


def _state(sensor: Sensor) -> AgentState:
    return AgentState("0.1.0", "generic-linux", "", [sensor], lambda: 0, lambda: True, lambda: [])


def _get(port: int, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_two_hundred_scrapes_read_the_power_sensors_once(tmp_path: Path) -> None:
    rail = _CountingRail()
    server = MetricsServer("127.0.0.1:0", _state(rail))
    try:
        bodies = [_get(server.port)[1] for _ in range(200)]
    finally:
        server.close()

    assert rail.reads == 1  # 200 before: each scrape read the sensors (780 scrapes/s measured)
    assert all("edgeprof_power_watts" in body and "4.2" in body for body in bodies)


def test_metrics_beyond_loopback_need_the_token_mutual_tls_or_insecure(tmp_path: Path) -> None:
    opts = ServeOptions(listen="127.0.0.1:0", advertise=False, data_dir=tmp_path / "a", metrics_listen="0.0.0.0:0")

    with pytest.raises(ServeError) as refused:
        AgentProcess(opts)
    opts.insecure = True
    agent = AgentProcess(opts)  # the explicit way around it, as for gRPC
    agent.start()
    agent.stop()

    assert "refusing to serve metrics on 0.0.0.0:0" in str(refused.value)
    assert "--token-file" in str(refused.value) and "--insecure" in str(refused.value)


def test_an_agent_with_a_token_answers_metrics_only_to_its_holders(tmp_path: Path) -> None:
    token = "m" * 32
    (tmp_path / "token").write_text(token)
    (tmp_path / "token").chmod(0o600)
    opts = ServeOptions(
        listen="127.0.0.1:0", advertise=False, data_dir=tmp_path / "a", token_file=tmp_path / "token",
        metrics_listen="127.0.0.1:0",
    )  # fmt: skip
    agent = AgentProcess(opts)
    agent.start()
    try:
        port = agent.metrics.port
        anonymous, wrong, holder = _get(port), _get(port, "not-the-token-0123456789"), _get(port, token)
    finally:
        agent.stop()

    assert anonymous[0] == 401 and wrong[0] == 401 and "edgeprof_agent_up" not in anonymous[1] + wrong[1]
    assert holder[0] == 200 and "edgeprof_agent_up 1.0" in holder[1]


def test_an_idle_connection_does_not_block_https_metrics(tmp_path: Path) -> None:
    import socket
    import ssl

    from agent.service.metrics import MetricsAccess
    from tests.faultlib import generate_certs

    certs = generate_certs(tmp_path / "certs")
    access = MetricsAccess(cert_file=str(certs["server"]), key_file=str(certs["server_key"]))
    server = MetricsServer("127.0.0.1:0", _state(_CountingRail()), access)
    idle = socket.create_connection(("127.0.0.1", server.port))  # never says hello
    try:
        started = time.monotonic()
        context = ssl.create_default_context(cafile=str(certs["ca"]))
        with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/metrics", context=context, timeout=4) as reply:
            status, waited_s = reply.status, time.monotonic() - started
    finally:
        idle.close()
        server.close()

    assert status == 200 and waited_s < 2  # the handshake runs on the connection's thread, not the accepting one
