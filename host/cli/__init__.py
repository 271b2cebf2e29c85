"""The `host` command line: one Typer app (host/cli/app.py), one module per command group, registered here.

The cli wing is the top of host/: it may import every other wing, and nothing imports it.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

import typer

from host.cli.app import app


def _register() -> None:
    # Each module adds its commands to `app` on import; imported here, not at module level of
    # the package, so `python -m host --help` stays fast and import order is explicit.
    from host.cli import profile, runs  # noqa: F401

    for optional in ("fleet", "report", "compare", "ab", "fetch", "serve"):
        try:
            __import__(f"host.cli.{optional}")
        except ModuleNotFoundError as err:
            if err.name != f"host.cli.{optional}":
                raise


_TYPE_WORDS = {int: "INTEGER", float: "NUMBER", str: "TEXT"}


def _plain_metavar(param: Any) -> str | None:
    """What a user expects after an option: nothing for a flag, PATH, INTEGER, a|b, else TEXT.

    Typer from 0.2x shows Python annotations (<str>, <list[str]>, <bool>); its parameters carry a
    ``type_descriptor`` there. Older Typer hands click's own TEXT/INTEGER through: left as they are.
    """
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return None
    if getattr(param, "is_flag", False):
        return ""
    if desc.is_choice and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    if desc.is_path or getattr(desc, "is_file", False):
        word = "PATH"
    else:
        annotation = getattr(desc, "annotation", None)
        inner = get_args(annotation)[0] if get_origin(annotation) is list and get_args(annotation) else annotation
        word = _TYPE_WORDS.get(inner, "TEXT") if isinstance(inner, type) else "TEXT"
    return f"{word}..." if getattr(param, "multiple", False) or getattr(param, "nargs", 1) != 1 else word


def _with_plain_metavars(command: Any) -> Any:
    for param in command.params:
        word = _plain_metavar(param)
        if word is None:
            continue
        if param.param_type_name == "argument":
            # Typer's arguments show their type and ignore metavar there; the usage line keeps MODEL.
            param.display_type_rich = lambda ctx, _word=word: ""
        elif param.metavar is None:
            param.metavar = word
    if hasattr(command, "get_help_option"):
        make_help = command.get_help_option

        def get_help_option(ctx: Any, _make: Any = make_help) -> Any:
            option = _make(ctx)
            if option is not None and getattr(option, "type_descriptor", None) is not None:
                option.metavar = ""
            return option

        command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _with_plain_metavars(sub)
    return command


def build_command() -> Any:
    """The whole `host` command line, every command registered, as it runs (help with plain metavars)."""
    _register()
    return _with_plain_metavars(typer.main.get_command(app))


def main() -> None:
    build_command()(prog_name="host")
