"""The dashboard's HTTP server: hypercorn's HTTP/1.1 on asyncio, with a connection cap and timeouts.

Why not http.server (issue 23.3): it ran the TLS handshake inside accept() on its one serving thread, with no
timeout, so one idle TCP connection blocked the dashboard for everyone, and it gave every connection a thread
for as long as the client liked (300 half-sent requests held 303 threads). Here:

- Connections live on one asyncio loop: an idle or half-sent one holds a file descriptor and a few kB, never a
  thread. Pages are rendered on a small pool of threads (the store's reads are blocking), after the whole
  request has arrived.
- TLS is asyncio's: the handshake runs on the loop beside everything else, never in the accepting code, and
  a client that has not finished it within HANDSHAKE_TIMEOUT_S is dropped.
- hypercorn (a maintained ASGI server: HTTP/1.1 by h11, header size caps) closes a connection that has not
  sent a complete request within REQUEST_TIMEOUT_S (its keep-alive timer also runs before the first
  request), and one that sends nothing for READ_TIMEOUT_S.
- At most `max_connections` are open: a new one beyond that closes the oldest one that is not being answered
  (a half-sent request, an idle keep-alive), so a flood of slow clients churns while a reader's request, which
  completes within milliseconds, still gets in. No per-address cap: on loopback every local user is one
  address, and such a cap would let one of them lock the others out.

hypercorn has no connection cap of its own, so connections are accepted here (asyncio.start_server) and each is
handed to hypercorn's TCPServer, its per-connection driver; pyproject pins the hypercorn versions whose
TCPServer takes these arguments, and tests/test_dashboard_server.py exercises every bound above.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("host.dashboard.http")

#: A TLS client must finish its handshake within this.
HANDSHAKE_TIMEOUT_S = 5.0
#: A connection must deliver a complete request within this (and an idle keep-alive connection is closed then).
REQUEST_TIMEOUT_S = 5.0
#: A connection that sends nothing for this long is closed, whatever it was doing.
READ_TIMEOUT_S = 10.0
#: Connections open at once; beyond it the oldest one not being answered is closed.
MAX_CONNECTIONS = 512
#: Threads that render pages (reads from the store).
RENDER_THREADS = 4

#: An ASGI application: (scope, receive, send).
Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class HttpServer:
    """Serves `app` (ASGI) on an already bound listening socket until close()."""

    def __init__(
        self, sock: socket.socket, app: Asgi, tls: ssl.SSLContext | None, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self._sock, self._app, self._tls, self.max_connections = sock, app, tls, max_connections
        self.render_pool = ThreadPoolExecutor(max_workers=RENDER_THREADS, thread_name_prefix="dashboard-render")
        self._open: dict[asyncio.StreamWriter, None] = {}  # oldest first; moved to the end when answered
        self._answering: set[asyncio.StreamWriter] = set()
        self._by_peer: dict[tuple[Any, ...], asyncio.StreamWriter] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self.render_pool.shutdown(wait=False, cancel_futures=True)
            self._sock.close()

    def close(self) -> None:
        """Stop serving (from any thread); returns once the loop has stopped, or at once if it never started."""
        self._closed = True
        if self._started.is_set() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        else:
            self._sock.close()

    async def _serve(self) -> None:
        from hypercorn.asyncio.tcp_server import TCPServer
        from hypercorn.asyncio.worker_context import WorkerContext
        from hypercorn.config import Config
        from hypercorn.utils import wrap_app

        config = Config()
        config.keep_alive_timeout = REQUEST_TIMEOUT_S
        config.read_timeout = int(READ_TIMEOUT_S)
        config.ssl_handshake_timeout = HANDSHAKE_TIMEOUT_S
        config.include_server_header = False
        config.accesslog = None
        config.errorlog = log
        config.wsgi_max_body_size = 0
        app = wrap_app(self._tracked, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
        context = WorkerContext(None)
        loop = asyncio.get_running_loop()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not self._admit(writer):
                writer.transport.abort()
                return
            try:
                await TCPServer(app, loop, config, context, {}, reader, writer)
            finally:
                self._forget(writer)

        self._loop, self._stop = loop, asyncio.Event()
        server = await asyncio.start_server(
            on_connection,
            sock=self._sock,
            ssl=self._tls,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self._tls is not None else None,
            backlog=256,
        )
        self._started.set()
        if self._closed:
            self._stop.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._open):
                writer.transport.abort()
            await asyncio.sleep(0)

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Room for one more connection, made by closing the oldest one not being answered if need be."""
        if len(self._open) >= self.max_connections:
            idle = next((w for w in self._open if w not in self._answering), None)
            if idle is None:
                return False  # every connection is being answered: this one waits its turn by reconnecting
            idle.transport.abort()
            self._forget(idle)
        self._open[writer] = None
        peer = writer.get_extra_info("peername")
        if peer is not None:
            self._by_peer[tuple(peer)[:2]] = writer
        return True

    def _forget(self, writer: asyncio.StreamWriter) -> None:
        self._open.pop(writer, None)
        self._answering.discard(writer)
        peer = writer.get_extra_info("peername")
        if peer is not None and self._by_peer.get(tuple(peer)[:2]) is writer:
            del self._by_peer[tuple(peer)[:2]]

    async def _tracked(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The app, with its connection marked as being answered (never closed to make room) meanwhile."""
        client = scope.get("client")
        writer = self._by_peer.get(tuple(client)[:2]) if client else None
        if writer is not None:
            self._answering.add(writer)
        try:
            await self._app(scope, receive, send)
        finally:
            if writer is not None:
                self._answering.discard(writer)
                if writer in self._open:  # answered: the newest in line, the last to be closed for room
                    del self._open[writer]
                    self._open[writer] = None
