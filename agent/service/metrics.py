"""Prometheus exposition for a lab's monitoring (`agent serve --metrics-listen ADDR`): opt-in, read-only.

Board power per rail, temperatures per thermal zone, the job queue, jobs in the journal by outcome, and
agent health, gathered at scrape time. Power sensors are read only while no job is measuring: during a
measurement the sampler owns them (a serial meter cannot answer two readers, and a scrape must never
disturb a measurement), so a scrape then shows the newest idle reading and its timestamp says how old it is.
Temperatures come from sysfs files, which any reader may read at any time.

Sensor readings are cached for SENSOR_CACHE_S: however often it is scraped (780 scrapes/s were measured), the
endpoint reads the sensors at most once per interval, so it cannot be used to sample RAPL or rail power at a
rate that would leak what the board computes (the PLATYPUS class of side channel). It answers as the agent's
gRPC port does: beyond loopback only with the token (`Authorization: Bearer`), mutual TLS or --insecure, and
with the token whenever the agent has one (docs/security.md says what it reveals).
"""

from __future__ import annotations

import contextlib
import hmac
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from agent.sensors.base import Sensor, SensorError
from agent.sensors.thermal import find_zones
from agent.service.server import split_address

#: Journal states a job ends in, and the ones before; every state is always exported (0 when none).
JOB_STATES = ("queued", "running", "ok", "error", "cancelled")
#: Sensors are read at most once per this many seconds, whatever the scrape rate (a fast Prometheus interval).
SENSOR_CACHE_S = 5.0
#: Connections served at once; more are closed at once. Each has CONNECTION_TIMEOUT_S for its TLS handshake
#: and request, on its own thread (never on the accepting one).
MAX_CONNECTIONS = 8
CONNECTION_TIMEOUT_S = 10.0


class MetricsError(Exception):
    """A --metrics-listen address that cannot be served: one line for the user."""


@dataclass
class AgentState:
    """What the collector reads from the running agent (callables, so every scrape sees the present)."""

    version: str
    profile: str
    board: str
    sensors: Sequence[Sensor]
    queued: Callable[[], int]
    alive: Callable[[], bool]
    job_states: Callable[[], list[str]]


class AgentCollector:
    """A prometheus_client collector: `collect()` yields the metric families of one scrape."""

    def __init__(self, state: AgentState, cache_s: float = SENSOR_CACHE_S) -> None:
        self.state = state
        self.cache_s = cache_s
        self._lock = threading.Lock()
        #: (channel name, kind, role, backend) -> (value in the channel's unit, Unix time read)
        self._last: dict[tuple[str, str, str, str], tuple[float, float]] = {}
        self._temps: list[tuple[str, float]] = []
        self._read_at = -float("inf")  # time.monotonic() of the last sensor read

    def _read_sensors(self) -> None:
        """Power and temperatures, at most once per cache_s (the caller holds the lock)."""
        now = time.monotonic()
        if now - self._read_at < self.cache_s:
            return
        self._read_at = now
        self._read_power()
        temps = []
        for zone in find_zones():
            try:
                temps.append((zone.type, int(zone.temp_path.read_text().strip()) / 1000.0))
            except (OSError, ValueError):
                continue  # a zone that stopped reading is left out of this scrape
        self._temps = temps

    def _read_power(self) -> None:
        if "running" in self.state.job_states():
            return  # the sampler owns the sensors during a measurement
        for sensor in self.state.sensors:
            channels = [c for c in sensor.channels() if c.kind in ("power_mw", "energy_uj")]
            if not channels:
                continue
            try:
                values = sensor.read()
            except SensorError:
                continue
            now = time.time()
            for channel, value in zip(sensor.channels(), values, strict=False):
                if channel.kind in ("power_mw", "energy_uj"):
                    self._last[(channel.name, channel.kind, channel.role, sensor.backend)] = (float(value), now)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        s = self.state
        up = GaugeMetricFamily("edgeprof_agent_up", "1 while the agent's job runner is alive and serving")
        up.add_metric([], 1.0 if s.alive() else 0.0)
        yield up
        yield InfoMetricFamily(
            "edgeprof_agent", "the agent's version, device profile and board", {
                "version": s.version, "profile": s.profile, "board": s.board,
            },
        )  # fmt: skip
        queue = GaugeMetricFamily("edgeprof_queued_jobs", "jobs waiting for the board behind the running one")
        queue.add_metric([], float(s.queued()))
        yield queue
        states = s.job_states()
        jobs = GaugeMetricFamily(
            "edgeprof_journal_jobs", "jobs in the agent's journal by state (pruned after a day)", labels=["state"]
        )
        for state in sorted(set(JOB_STATES) | set(states)):
            jobs.add_metric([state], float(states.count(state)))
        yield jobs

        with self._lock:
            self._read_sensors()
            last, temps_c = dict(self._last), list(self._temps)
        labels = ["channel", "role", "sensor"]
        power = GaugeMetricFamily("edgeprof_power_watts", "board power per rail (newest idle reading)", labels=labels)
        energy = CounterMetricFamily("edgeprof_energy_joules", "energy counter per rail", labels=labels)
        stamp = GaugeMetricFamily(
            "edgeprof_power_reading_timestamp_seconds", "Unix time of the power reading shown", labels=labels
        )
        for (name, kind, role, backend), (value, read_at) in sorted(last.items()):
            if kind == "power_mw":
                power.add_metric([name, role, backend], value / 1000.0)
            else:
                energy.add_metric([name, role, backend], value / 1e6)
            stamp.add_metric([name, role, backend], read_at)
        yield power
        yield energy
        yield stamp

        temps = GaugeMetricFamily("edgeprof_temperature_celsius", "thermal zone temperature", labels=["zone"])
        for zone_type, celsius in temps_c:
            temps.add_metric([zone_type], celsius)
        yield temps


@dataclass(frozen=True)
class MetricsAccess:
    """Who may scrape: the agent's token (Bearer), its TLS files (client_ca_file: mutual TLS), or anyone."""

    token: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.token is not None or self.client_ca_file is not None


def _guarded(app: Callable[..., Iterable[bytes]], token: str | None) -> Callable[..., Iterable[bytes]]:
    """The exposition app behind a bearer-token check (constant-time), when the agent has a token."""
    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = str(environ.get("HTTP_AUTHORIZATION", "")).encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"this agent's metrics need its token: Authorization: Bearer <token>\n"]
        return app(environ, start_response)

    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds would fill the agent's log


class _Server(WSGIServer):
    """wsgiref's server with a thread per connection, at most MAX_CONNECTIONS of them, each with a timeout, and
    the TLS handshake on that thread: an idle connection cannot block the accepting thread."""

    daemon_threads = True
    #: Set per endpoint (a subclass made in MetricsServer): the context each connection's thread wraps it in.
    tls: ssl.SSLContext | None = None

    def server_bind(self) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed, the others keep being served
            return
        threading.Thread(target=self._serve, args=(request, client_address), daemon=True).start()

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        # One deadline for the whole connection (handshake, request, answer): a client sending a byte at a time
        # cannot hold its slot for longer than that.
        deadline = threading.Timer(CONNECTION_TIMEOUT_S, _hang_up, args=(request,))
        deadline.start()
        try:
            request.settimeout(CONNECTION_TIMEOUT_S)
            if self.tls is not None:
                request = self.tls.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except (OSError, ssl.SSLError):
            pass  # a client that hung up, timed out or failed the handshake costs only its own connection
        finally:
            deadline.cancel()
            self.shutdown_request(request)
            self.slots.release()


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _tls_context(access: MetricsAccess, listen: str) -> ssl.SSLContext | None:
    if access.cert_file is None or access.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(access.cert_file, access.key_file)
        if access.client_ca_file is not None:
            context.load_verify_locations(access.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as err:
        raise MetricsError(f"--metrics-listen {listen}: cannot load the TLS files: {err}") from err
    return context


class MetricsServer:
    """The /metrics HTTP endpoint on its own thread; `port` is the one bound (0 in the address picks one)."""

    def __init__(self, listen: str, state: AgentState, access: MetricsAccess = MetricsAccess()) -> None:
        from prometheus_client import CollectorRegistry, make_wsgi_app

        try:
            host, port = split_address(listen)
        except ValueError as err:
            raise MetricsError(f"--metrics-listen '{listen}' must be HOST:PORT, e.g. 127.0.0.1:9464") from err
        host = host.strip("[]")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(state))
        tls = _tls_context(access, listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("MetricsHTTPServer", (_Server,), {"address_family": family, "tls": tls})
        try:
            self._server: _Server = make_server(
                host, port, _guarded(make_wsgi_app(registry), access.token), server_class, handler_class=_QuietHandler
            )
        except OSError as err:
            raise MetricsError(f"--metrics-listen {listen}: {err.strerror or err}") from err
        self.port = int(self._server.server_address[1])
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
