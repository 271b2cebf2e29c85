"""`host serve`: the read-only dashboard over the run store, on loopback unless protected.

Stdlib http.server, one thread per request, GET/HEAD only. Beyond loopback it needs a token (HTTP Basic
with the token as password, so a browser asks for it, or `Authorization: Bearer`) or mutual TLS, as the
agent does; `--insecure` is the explicit way around that. Every page is rendered on the server without
scripts and sent with a Content-Security-Policy that forbids them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from host.dashboard.fleet_view import FleetWatch, render_fleet
from host.dashboard.layout import CONTENT_SECURITY_POLICY, page
from host.dashboard.runs_view import FilterError, RunFilter, render_runs
from host.dashboard.trend import mark_gate_failures, render_trend, render_trend_index, trend_points
from host.report.html import render_html
from host.store.sqlite import Store, StoreError

#: How many of the newest runs the trend pages read (one point per run).
TREND_RUNS = 5000


class ServeError(Exception):
    """A setting `host serve` cannot start with: one line for the user."""


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ServeError(f"--listen '{listen}' is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeOptions:
    listen: str = "127.0.0.1:8080"
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure: bool = False
    gate_pct: float = 5.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class Dashboard:
    """The HTTP server: `start()` binds (port 0 picks one), `serve_forever()` answers, `close()` stops."""

    def __init__(self, store: Store, options: ServeOptions, fleet: FleetWatch | None = None) -> None:
        host, port = split_listen(options.listen)
        authenticated = bool(options.token) or options.tls_client_ca is not None
        if not is_loopback(host) and not authenticated and not options.insecure:
            raise ServeError(
                f"refusing to serve the run store on {host}, beyond loopback, to anyone who reaches it: give"
                " --token-file or --tls-client-ca (mutual TLS), or --insecure on a network you trust"
            )
        if (options.tls_cert is None) != (options.tls_key is None):
            raise ServeError("give --tls-cert and --tls-key together")
        if options.tls_client_ca is not None and options.tls_cert is None:
            raise ServeError("--tls-client-ca needs --tls-cert and --tls-key")
        self.store, self.options, self.fleet = store, options, fleet or FleetWatch()
        handler = type("Handler", (_Handler,), {"dashboard": self})
        _Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.server = _Server((host, port), handler)
        except OSError as err:
            raise ServeError(f"cannot listen on {options.listen}: {err.strerror or err}") from err
        if options.tls_cert is not None and options.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(options.tls_cert, options.tls_key)
                if options.tls_client_ca is not None:
                    context.load_verify_locations(options.tls_client_ca)
                    context.verify_mode = ssl.CERT_REQUIRED
            except (OSError, ssl.SSLError) as err:
                self.server.server_close()
                raise ServeError(f"cannot load the TLS files: {err}") from err
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = split_listen(self.options.listen)[0]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.options.tls_cert else 'http'}://{shown}:{self.port}/"

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- pages ---------------------------------------------------------------------------------------------------

    def render(self, path: str, query: dict[str, list[str]]) -> tuple[HTTPStatus, str]:
        def one(name: str) -> str:
            return (query.get(name) or [""])[0].strip()

        if path == "/":
            try:
                where = RunFilter.from_query(query)
            except FilterError as err:
                return HTTPStatus.BAD_REQUEST, page("bad filter", f'<p class="error">{escape(str(err))}</p>', "runs")
            docs = self.store.documents_between(where.since, where.until_exclusive(), limit=where.limit)
            pending = {job.run_id for job in self.store.pending()}
            return HTTPStatus.OK, page("Runs", render_runs(docs, pending, where, str(self.store.path)), "runs")
        if path.startswith("/runs/"):
            try:
                run = self.store.load_run(unquote(path[len("/runs/") :]))
            except StoreError as err:
                return HTTPStatus.NOT_FOUND, page("no such run", f'<p class="error">{escape(str(err))}</p>', "runs")
            return HTTPStatus.OK, render_html(run)
        if path == "/trends":
            docs = self.store.documents_between(limit=TREND_RUNS)
            return HTTPStatus.OK, page("Trends", render_trend_index(docs, one("model")), "trends")
        if path == "/trend":
            model, device = one("model"), one("device")
            if not model or not device:
                body = '<p class="error">a trend needs ?model=NAME&amp;device=NAME (see Trends)</p>'
                return HTTPStatus.BAD_REQUEST, page("bad trend", body, "trends")
            points = trend_points(self.store.documents_between(limit=TREND_RUNS), model, device)
            mark_gate_failures(self.store, points, device, self.options.gate_pct)
            body = render_trend(points, model, device, self.options.gate_pct)
            return HTTPStatus.OK, page(f"{model} on {device}", body, "trends")
        if path == "/fleet":
            agents, error = self.fleet.snapshot()
            return HTTPStatus.OK, page("Fleet", render_fleet(agents, error, self._last_runs(), _config_path()), "fleet")
        return HTTPStatus.NOT_FOUND, page("not found", '<p class="error">no such page</p>', "")

    def _last_runs(self) -> dict[str, dict[str, Any]]:
        newest: dict[str, dict[str, Any]] = {}
        for doc in self.store.documents_between(limit=500):  # newest first: the first run naming a device wins
            for entry in doc.get("devices") or []:
                newest.setdefault(str(entry.get("device", "")), doc)
        return newest


def _config_path() -> str:
    from host.fleet.config import ConfigError, config_path

    try:
        return str(config_path() or "no config file found")
    except ConfigError as err:
        return str(err)


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "edgeprof-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a dashboard left open reloads often; the terminal stays for the start line and errors

    def _authorised(self) -> bool:
        token = self.dashboard.options.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            offered = value.strip()
        elif scheme.lower() == "basic":
            try:
                offered = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return False
        else:
            return False
        return hmac.compare_digest(offered.encode(), token.encode())

    def _send(self, status: HTTPStatus, body: str, extra: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Length": str(len(data)),
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            **(extra or {}),
        }
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:
        if not self._authorised():
            self._send(
                HTTPStatus.UNAUTHORIZED,
                page("token needed", "<p>this dashboard needs its token (as the password).</p>", ""),
                {"WWW-Authenticate": 'Basic realm="edgeprof", charset="UTF-8"'},
            )
            return
        url = urlsplit(self.path)
        try:
            status, body = self.dashboard.render(url.path, parse_qs(url.query))
        except StoreError as err:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, page("store error", f"<p>{escape(str(err))}</p>", "")
        except Exception as err:  # one broken page must not end the dashboard; the reason is shown, escaped
            stamp = dt.datetime.now(dt.timezone.utc).isoformat()
            body = page("error", f'<p class="error">{escape(type(err).__name__)}: {escape(str(err))} ({stamp})</p>', "")
            status = HTTPStatus.INTERNAL_SERVER_ERROR
        self._send(status, body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def _read_only(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, page("read-only", "<p>this dashboard is read-only.</p>", ""))

    do_POST = do_PUT = do_DELETE = do_PATCH = _read_only
