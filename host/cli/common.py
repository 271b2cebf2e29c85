"""What every host command shares: the one-line failure exit, the run store, and options to reach agents."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from host.store import Store, StoreError

#: `--tls-ca PATH` of every command that talks to agents; read by host.config.credentials_for.
TlsCaOption = Annotated[
    Path | None,
    typer.Option("--tls-ca", help="CA certificate (PEM) the agents' TLS certificates chain to"),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line for a user mistake and exit non-zero: no traceback."""
    print(f"host: {message}", file=sys.stderr)
    raise typer.Exit(code)


def open_store() -> Store:
    try:
        return Store()
    except StoreError as err:
        fail(str(err))
