"""`host serve`: the read-only web dashboard over the run store (runs, reports, trends, fleet)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from host.cli.app import app
from host.cli.common import fail, open_store
from host.dashboard.fleet_view import FleetWatch
from host.dashboard.serve import Dashboard, ServeError, ServeOptions
from host.fleet.config import ConfigError, read_token_file


@app.command("serve")
def serve(
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on (port 0 picks a free one)")] = "127.0.0.1:8080",
    token_file: Annotated[
        Path | None, typer.Option(help="token readers must give (as the password); needed beyond loopback")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM): serve https")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="CA (PEM) whose client certificates may read (mutual TLS)")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="serve beyond loopback without a token or mutual TLS")
    ] = False,
    agent_token_file: Annotated[
        Path | None, typer.Option(help="bearer token for the agents the fleet page probes")
    ] = None,
    gate_pct: Annotated[
        float, typer.Option(min=0, metavar="PCT", help="trend points fail the gate beyond PCT percent worse")
    ] = 5.0,
) -> None:
    """Serve a read-only dashboard: runs with filters, each run's report, trends per model × device, the fleet."""
    try:
        token = read_token_file(token_file) if token_file else None
    except ConfigError as err:
        fail(str(err))
    options = ServeOptions(listen, token, tls_cert, tls_key, tls_client_ca, insecure, gate_pct)
    store = open_store()
    try:
        dashboard = Dashboard(store, options, FleetWatch(token_file=agent_token_file))
    except ServeError as err:
        store.close()
        fail(str(err))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=dashboard.serve_forever, name="dashboard", daemon=True)
    thread.start()
    print(f"dashboard on {dashboard.url} (store: {store.path}); Ctrl-C stops it", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.close()
        store.close()
