"""The dashboard's HTTP server holds up to slow and idle clients: TLS off the accept path, no thread per
connection, a deadline for every request, a connection cap that closes the idle first (issue 23.3)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import host.dashboard.http_server as http_server
from host.dashboard.serve import Dashboard, ServeOptions
from host.report.synthetic import synthetic_run
from host.store.open import open_store
from host.store.sqlite import Store
from tests.faultlib import generate_certs

HALF_SENT = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\n"  # no blank line: never complete


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(str(tmp_path / "runs.sqlite"))
    store.save_run(synthetic_run(n_devices=1, n_inferences=50, seed=3))
    yield store
    store.close()


def _serve(store: Store, **options: object) -> tuple[Dashboard, threading.Thread]:
    dashboard = Dashboard(store, ServeOptions(listen="127.0.0.1:0", **options))  # type: ignore[arg-type]
    thread = threading.Thread(target=dashboard.serve_forever, daemon=True)
    thread.start()
    return dashboard, thread


def _half_sent(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(HALF_SENT)
        socks.append(sock)
    return socks


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        sock.settimeout(0.01)
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed too


def test_an_idle_tcp_connection_does_not_block_the_tls_dashboard(store: Store, tmp_path: Path) -> None:
    certs = generate_certs(tmp_path / "certs")
    dashboard, thread = _serve(store, tls_cert=certs["server"], tls_key=certs["server_key"])
    client_tls = ssl.create_default_context(cafile=str(certs["ca"]))
    idle = socket.create_connection(("127.0.0.1", dashboard.port))  # connects, never says hello
    try:
        started = time.monotonic()
        with urllib.request.urlopen(f"https://127.0.0.1:{dashboard.port}/", context=client_tls, timeout=4) as reply:
            status, waited_s = reply.status, time.monotonic() - started
    finally:
        idle.close()
        dashboard.close()
        thread.join(10)

    assert status == 200 and waited_s < 2  # blocked for good before: the handshake ran inside accept()


def test_three_hundred_half_sent_requests_hold_no_thread_and_block_no_one(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_server, "REQUEST_TIMEOUT_S", 1.0)
    baseline = threading.active_count()
    dashboard, thread = _serve(store)
    socks = _half_sent(dashboard.port, 300)
    try:
        time.sleep(0.2)  # let the server take them all in
        threads_while_held = threading.active_count() - baseline
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard.port}/", timeout=4) as reply:
            answered = reply.status
        deadline = time.monotonic() + 4
        while not all(_closed_by_server(s) for s in socks) and time.monotonic() < deadline:
            time.sleep(0.1)
        closed = sum(_closed_by_server(s) for s in socks)
    finally:
        for sock in socks:
            sock.close()
        dashboard.close()
        thread.join(10)

    assert answered == 200
    assert threads_while_held <= http_server.RENDER_THREADS + 2, threads_while_held  # 300+ before
    assert closed == 300  # each after the request deadline (1 s here, 5 s by default); held for good before


def test_beyond_the_connection_cap_the_oldest_idle_connection_makes_room(store: Store) -> None:
    dashboard, thread = _serve(store, max_connections=64)
    socks = _half_sent(dashboard.port, 300)
    try:
        time.sleep(0.2)
        held = dashboard._http.open_connections
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard.port}/", timeout=4) as reply:
            answered = reply.status
        oldest_closed, newest_open = _closed_by_server(socks[0]), not _closed_by_server(socks[-1])
    finally:
        for sock in socks:
            sock.close()
        dashboard.close()
        thread.join(10)

    assert held <= 64 and answered == 200
    assert oldest_closed and newest_open
