"""The host never waits without a bound: streams that end without a JobEnd, and half-open links.

Each test runs the real `host profile` in a subprocess with a timeout well past the bound it asserts,
so a host that hangs fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fake_agent import FakeAgentServer, job_batches
from faultlib import SQUEEZENET, AgentProc, TcpProxy, isolated_env, sha256_bytes, wait_for

from host.fleet.client import AgentClient
from host.store.open import open_store
from host.store.sqlite import PendingJob

_HOST = [sys.executable, "-m", "host"]
# `host runs fetch` registers itself on import (see tests/test_faults_host.py).
_FETCH = [sys.executable, "-c", "import host.cli.fetch, host.cli; host.cli.main()"]
_FAST = ["--warmup", "1", "--idle", "0", "-q"]
#: Slack on top of a bound for a loaded 2-core box (process start, imports, scheduling).
_SLACK_S = 10.0
#: How long keepalive takes at most to notice a link that carries nothing (host/fleet/client.py: 5 s + 10 s).
_KEEPALIVE_DETECT_S = 15.0


def _host(tmp: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_HOST, *args], cwd=tmp, env=isolated_env(tmp), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _finish(host: subprocess.Popen[str], timeout_s: float) -> tuple[str, str]:
    try:
        return host.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        host.kill()
        host.communicate()
        raise AssertionError(f"the host command still runs after {timeout_s:g} s: it waits without a bound") from None


def _error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error")]


def test_stream_ending_without_job_end_gives_up_within_the_reconnect_budget(tmp_path: Path) -> None:
    # The agent ends every stream after three batches without the job's end (as an agent whose runner died
    # after marking the job ended, but before journaling its JobEnd, does).
    fake = FakeAgentServer(lambda job_id: job_batches(job_id, [1, 2, 3], end=False))
    reconnect_s = 3.0
    try:
        host = _host(tmp_path, "profile", str(SQUEEZENET), "--device", fake.address, "--reconnect", "3", *_FAST)
        try:
            wait_for(lambda: fake.servicer.attaches or host.poll() is not None, 120, "the host's first re-attach")
            ended_at = time.monotonic()  # the stream ended just before: the budget runs from here
            assert fake.servicer.attaches, f"the host ended without re-attaching: {host.communicate()}"
            out, err = _finish(host, reconnect_s + 30)
            elapsed_s = time.monotonic() - ended_at
        finally:
            if host.poll() is None:
                host.kill()
                host.communicate()
    finally:
        fake.stop()

    assert host.returncode == 1, err
    assert elapsed_s <= reconnect_s + _SLACK_S, elapsed_s
    assert "Traceback" not in err
    [line] = _error_lines(out)
    assert f"lost the agent at {fake.address}" in line and "its stream ended before the job did" in line
    assert "collect it later with `host runs fetch`" in line
    assert set(fake.servicer.attaches) == {3}, "every re-attach resumes after the last batch received"
    store = open_store(Path(isolated_env(tmp_path)["EDGEPROF_DB"]))
    try:
        [pending] = store.pending()
        [entry] = store.load_run(pending.run_id).document["devices"]
    finally:
        store.close()
    assert pending.address == fake.address and pending.job_id == entry["job_id"]
    assert entry["status"] == "error"


def test_runs_fetch_of_a_stream_ending_without_job_end_leaves_the_job_pending_within_budget(tmp_path: Path) -> None:
    fake = FakeAgentServer(lambda job_id: job_batches(job_id, [1, 2], end=False))
    run_id = "20260101-120000-abcdef"
    job_id = uuid.uuid4().hex
    store = open_store(Path(isolated_env(tmp_path)["EDGEPROF_DB"]))
    try:
        store.add_pending(PendingJob(run_id, "board-a", fake.address, job_id, {"model": {"sha256": "ab"}}, {}))
        fetch = subprocess.Popen(
            [*_FETCH, "runs", "fetch", run_id, "--reconnect", "3"],
            cwd=tmp_path,
            env=isolated_env(tmp_path),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: fake.servicer.attaches or fetch.poll() is not None, 120, "the first attach")
        started_at = time.monotonic()
        out, err = _finish(fetch, 3 + 30)
        elapsed_s = time.monotonic() - started_at
        [pending] = store.pending()
    finally:
        store.close()
        fake.stop()

    assert fetch.returncode == 1 and elapsed_s <= 3 + _SLACK_S, (elapsed_s, err)
    assert f"{run_id}  board-a  left  lost the agent at {fake.address}" in out
    assert "its stream ended before the job did" in out
    assert "still pending" in err and "Traceback" not in err
    assert f"give them up with `host runs rm {run_id}`" in err  # a CI step is never stuck with them
    assert pending.job_id == job_id
    assert set(fake.servicer.attaches) == {0, 2}


@pytest.fixture
def proxied_agent(tmp_path: Path) -> Iterator[tuple[AgentProc, TcpProxy]]:
    agent = AgentProc(tmp_path).start()
    proxy = TcpProxy(agent.port)
    try:
        yield agent, proxy
    finally:
        proxy.stop()
        agent.stop()


def _streaming(agent: AgentProc, proxy: TcpProxy) -> None:
    """Wait until the job runs and its batches flow through the proxy."""
    with agent.client() as client:
        wait_for(lambda: any(j.state == "running" for j in client.list_jobs()), 120, "the job to start")
    running_at = proxy.bytes_to_client
    wait_for(lambda: proxy.bytes_to_client > running_at + 4096, 30, "batches to stream through the proxy")


def test_frozen_link_is_detected_and_the_host_resumes_when_it_thaws(
    proxied_agent: tuple[AgentProc, TcpProxy], tmp_path: Path
) -> None:
    agent, proxy = proxied_agent
    command = ["profile", str(SQUEEZENET), "--device", proxy.address, "--runs", "20", "--min-duration", "6"]
    host = _host(tmp_path, *command, "--reconnect", "120", "--json", str(tmp_path / "run.json"), *_FAST)
    try:
        _streaming(agent, proxy)
        connections = proxy.connections
        proxy.freeze()
        # Keepalive finds the link dead and the host opens a new connection (held by the frozen proxy too).
        wait_for(lambda: proxy.connections > connections, _KEEPALIVE_DETECT_S + _SLACK_S, "the host to reconnect")
        proxy.thaw()
        out, err = _finish(host, 120)
    finally:
        if host.poll() is None:
            host.kill()
            host.communicate()

    assert host.returncode == 0, out + err
    [entry] = json.loads((tmp_path / "run.json").read_text())["devices"]
    measure = next(p for p in entry["phases"] if p["name"] == "measure")
    # The collector accepts each sequence number exactly once, in order: an ok run has every batch once.
    assert entry["status"] == "ok" and entry["n_inferences"] == measure["count"] >= 20


def test_frozen_link_that_never_thaws_gives_up_within_the_reconnect_budget(
    proxied_agent: tuple[AgentProc, TcpProxy], tmp_path: Path
) -> None:
    agent, proxy = proxied_agent
    reconnect_s = 5.0
    command = ["profile", str(SQUEEZENET), "--device", proxy.address, "--runs", "20", "--min-duration", "30"]
    host = _host(tmp_path, *command, "--reconnect", "5", *_FAST)
    try:
        _streaming(agent, proxy)
        proxy.freeze()
        frozen_at = time.monotonic()
        out, err = _finish(host, 90)
        elapsed_s = time.monotonic() - frozen_at
    finally:
        if host.poll() is None:
            host.kill()
            host.communicate()

    assert host.returncode == 1, err
    assert elapsed_s <= _KEEPALIVE_DETECT_S + reconnect_s + _SLACK_S, elapsed_s
    assert "Traceback" not in err
    [line] = _error_lines(out)
    assert f"lost the agent at {proxy.address} during " in line
    assert "collect it later with `host runs fetch`" in line
    store = open_store(Path(isolated_env(tmp_path)["EDGEPROF_DB"]))
    try:
        [pending] = store.pending()
    finally:
        store.close()
    assert pending.address == proxy.address
    with agent.client() as client:
        assert client.health() == "SERVING"


def test_upload_over_a_frozen_link_fails_instead_of_hanging(
    proxied_agent: tuple[AgentProc, TcpProxy], tmp_path: Path
) -> None:
    _agent, proxy = proxied_agent
    data = os.urandom(3 * 1024 * 1024)
    model = tmp_path / "model.onnx"
    model.write_bytes(data)
    failures: list[grpc.RpcError] = []
    with AgentClient(proxy.address) as client:
        client.describe()  # the connection is up before the link freezes
        proxy.freeze()

        def send() -> None:
            try:
                client.upload(model, sha256_bytes(data), "onnx")
            except grpc.RpcError as err:
                failures.append(err)

        uploader = threading.Thread(target=send, daemon=True)
        uploader.start()
        uploader.join(_KEEPALIVE_DETECT_S + _SLACK_S)
        stuck = uploader.is_alive()
        proxy.thaw()  # a stuck upload then finishes, so a regression fails here rather than hanging
        uploader.join(60)

    assert not stuck, "the upload waited on a frozen link past the keepalive bound"
    [failure] = failures
    assert failure.code() == grpc.StatusCode.UNAVAILABLE
