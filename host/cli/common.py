"""What every host command shares: the one-line failure exit and the run store."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from host.store import Store, StoreError


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line for a user mistake and exit non-zero: no traceback."""
    print(f"host: {message}", file=sys.stderr)
    raise typer.Exit(code)


def open_store() -> Store:
    try:
        return Store()
    except StoreError as err:
        fail(str(err))
