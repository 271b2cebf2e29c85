"""The `host` command line: one Typer app, one module per command group, registered here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="host",
    help="edgeprof host: profile models on edge agents and report latency, energy, memory, temperature.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each module adds its commands to `app` on import; imported here, not at module level of
    # the package, so `python -m host --help` stays fast and import order is explicit.
    from host.cli import profile, runs  # noqa: F401

    for optional in ("fleet", "report", "compare", "fetch"):
        try:
            __import__(f"host.cli.{optional}")
        except ModuleNotFoundError as err:
            if err.name != f"host.cli.{optional}":
                raise


def main() -> None:
    _register()
    app()
