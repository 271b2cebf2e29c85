"""The `host` command line reads like a Unix tool: plain metavars in help, and a --version."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from host import __version__

# Typer 0.2x prints Python annotations as metavars: <str>, <list[str]>, <bool>, <float range>…
PYTHON_TYPE_METAVAR = re.compile(r"<(str|int|float|bool|list\[[^\]]*\]|Path|[a-z]+ range)>")


def _host(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )


@pytest.mark.parametrize("command", [[], ["profile"], ["report"], ["compare"], ["runs", "ls"], ["fleet", "ls"]])
def test_help_shows_plain_metavars_not_python_types(command: list[str]) -> None:
    result = _host(*command, "--help")

    assert result.returncode == 0, result.stderr
    assert "--help" in result.stdout
    assert not PYTHON_TYPE_METAVAR.findall(result.stdout), result.stdout


def test_profile_help_names_paths_numbers_and_bare_flags() -> None:
    out = _host("profile", "--help").stdout
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ --")}

    assert "PATH" in lines["--json"]
    assert "INTEGER" in lines["--runs"]
    assert "NUMBER" in lines["--min-duration"]
    assert re.match(r"│ --op-profile\s+collect", lines["--op-profile"])


def test_version_prints_one_line_and_exits_zero() -> None:
    result = _host("--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"edgeprof host {__version__}"


def test_profile_and_ab_take_every_profiling_option_with_the_same_default() -> None:
    import dataclasses

    from host.cli import build_command
    from host.cli.profile_setup import ProfileOptions

    commands = build_command().commands
    shared = {f.name: f.default for f in dataclasses.fields(ProfileOptions) if f.default is not dataclasses.MISSING}
    for name in ("profile", "ab"):
        params = {p.name: p.default for p in commands[name].params}
        missing = sorted(set(shared) - set(params))
        assert missing == [], f"`host {name}` lacks {missing}"
        differing = {k: (params[k], v) for k, v in shared.items() if params[k] != v and params[k] is not None}
        assert differing == {}, f"`host {name}` defaults differ from ProfileOptions: {differing}"
