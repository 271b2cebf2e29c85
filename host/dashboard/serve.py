"""`host serve`: the read-only dashboard over the run store, on loopback unless protected.

Served by hypercorn on asyncio with a connection cap and handshake, request and read timeouts
(host/dashboard/http_server.py says why not http.server), GET/HEAD only. Beyond loopback it needs a token
(HTTP Basic with the token as password, so a browser asks for it, or `Authorization: Bearer`) or mutual TLS,
as the agent does; `--insecure` is the explicit way around that. Every page is rendered on the server without
scripts and sent with a Content-Security-Policy that forbids them. A run whose stored document does not
follow the result schema is left out of the pages with one line saying so, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from html import escape
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from host.dashboard.fleet_view import FleetWatch, render_fleet
from host.dashboard.http_server import MAX_CONNECTIONS, HttpServer
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
    #: Connections open at once (host/dashboard/http_server.py).
    max_connections: int = MAX_CONNECTIONS


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
        tls = _tls_context(options)
        try:
            sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        except OSError as err:
            raise ServeError(f"cannot listen on {options.listen}: {err.strerror or err}") from err
        self.port = int(sock.getsockname()[1])
        self._http = HttpServer(sock, self.asgi, tls, options.max_connections)

    @property
    def url(self) -> str:
        host = split_listen(self.options.listen)[0]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.options.tls_cert else 'http'}://{shown}:{self.port}/"

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def close(self) -> None:
        self._http.close()

    # -- HTTP ----------------------------------------------------------------------------------------------------

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """GET/HEAD of a page, once authorised; the page is rendered on the server's render threads."""
        if scope["type"] != "http":
            return
        method = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if method not in ("GET", "HEAD"):
            status, body = HTTPStatus.METHOD_NOT_ALLOWED, page("read-only", "<p>this dashboard is read-only.</p>", "")
            extra = {"Allow": "GET, HEAD"}
        elif not self._authorised(headers.get("authorization", "")):
            status = HTTPStatus.UNAUTHORIZED
            body = page("token needed", "<p>this dashboard needs its token (as the password).</p>", "")
            extra = {"WWW-Authenticate": 'Basic realm="edgeprof", charset="UTF-8"'}
        else:
            target = scope.get("raw_path", b"/") + b"?" + scope["query_string"]
            url = urlsplit(target.decode("latin-1"))
            loop = asyncio.get_running_loop()
            pool = self._http.render_pool
            status, body = await loop.run_in_executor(pool, self._render_safely, url.path, parse_qs(url.query))
            extra = {}
        data = body.encode("utf-8")
        response = {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Length": str(len(data)),
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            **extra,
        }
        await send(
            {
                "type": "http.response.start",
                "status": int(status),
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else data})

    def _authorised(self, header: str) -> bool:
        token = self.options.token
        if not token:
            return True
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

    def _render_safely(self, path: str, query: dict[str, list[str]]) -> tuple[HTTPStatus, str]:
        try:
            return self.render(path, query)
        except StoreError as err:
            return HTTPStatus.SERVICE_UNAVAILABLE, page("store error", f"<p>{escape(str(err))}</p>", "")
        except Exception as err:  # one broken page must not end the dashboard; the reason is shown, escaped
            stamp = dt.datetime.now(dt.timezone.utc).isoformat()
            body = page("error", f'<p class="error">{escape(type(err).__name__)}: {escape(str(err))} ({stamp})</p>', "")
            return HTTPStatus.INTERNAL_SERVER_ERROR, body

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
            body = self._malformed_note() + render_runs(docs, pending, where, str(self.store.path))
            return HTTPStatus.OK, page("Runs", body, "runs")
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

    def _malformed_note(self) -> str:
        """One line naming the stored runs left out because their documents do not follow the result schema."""
        malformed = dict(self.store.malformed)
        if not malformed:
            return ""
        shown = "; ".join(f"{escape(run_id)} ({escape(reason[:200])})" for run_id, reason in sorted(malformed.items()))
        return (
            f'<p class="error">{len(malformed)} stored run(s) left out, malformed: {shown}.'
            " <code>host runs rm RUN</code> removes one.</p>"
        )

    def _last_runs(self) -> dict[str, dict[str, Any]]:
        newest: dict[str, dict[str, Any]] = {}
        for doc in self.store.documents_between(limit=500):  # newest first: the first run naming a device wins
            for entry in doc.get("devices") or []:
                newest.setdefault(str(entry.get("device", "")), doc)
        return newest


def _tls_context(options: ServeOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None or options.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(options.tls_cert, options.tls_key)
        if options.tls_client_ca is not None:
            context.load_verify_locations(options.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as err:
        raise ServeError(f"cannot load the TLS files: {err}") from err
    context.set_alpn_protocols(["http/1.1"])
    return context


def _config_path() -> str:
    from host.fleet.config import ConfigError, config_path

    try:
        return str(config_path() or "no config file found")
    except ConfigError as err:
        return str(err)
