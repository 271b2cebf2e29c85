"""The `host` Typer app that every command module adds its commands to (registered by host/cli/__init__.py)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="host",
    help="edgeprof host: profile models on edge agents and report latency, energy, memory, temperature.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from host import __version__

        print(f"edgeprof host {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """edgeprof host: profile models on edge agents and report latency, energy, memory, temperature."""
