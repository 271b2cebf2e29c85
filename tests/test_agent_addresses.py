"""Agent addresses as users type them: a missing port means 50051, and what cannot be reached says why."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from host.fleet.config import DEFAULT_AGENT_PORT, ConfigError, agent_address
from tests.conftest import console_script


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("jetson-01.local", f"jetson-01.local:{DEFAULT_AGENT_PORT}"),
        ("jetson-01.local:6000", "jetson-01.local:6000"),
        (" 10.0.0.7 ", f"10.0.0.7:{DEFAULT_AGENT_PORT}"),
        ("fe80::1", f"[fe80::1]:{DEFAULT_AGENT_PORT}"),
        ("[fe80::1]", f"[fe80::1]:{DEFAULT_AGENT_PORT}"),
        ("[fe80::1]:7000", "[fe80::1]:7000"),
    ],
)
def test_address_without_port_gets_the_agents_default(text: str, address: str) -> None:
    assert agent_address(text) == address


@pytest.mark.parametrize("text", ["", "board:http", "board:0", "board:70000", "[fe80::1]x"])
def test_bad_address_is_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_address(text)
    assert "\n" not in str(caught.value)


def _profile(squeezenet: Path, device: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("host"), "profile", str(squeezenet), "--device", device, "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def test_unresolvable_name_says_it_does_not_resolve(squeezenet: Path) -> None:
    result = _profile(squeezenet, "no-such-board.invalid")

    assert result.returncode == 1
    assert "the name no-such-board.invalid does not resolve" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_port_with_nothing_listening_says_connection_refused(squeezenet: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = _profile(squeezenet, f"127.0.0.1:{port}")

    assert result.returncode == 1
    assert f"nothing listens at 127.0.0.1:{port} (connection refused)" in result.stdout + result.stderr


def test_bad_port_on_the_command_line_is_one_line(squeezenet: Path) -> None:
    result = _profile(squeezenet, "board:http")

    assert result.returncode == 1
    assert result.stderr.strip() == "host: agent address 'board:http': the port must be a number from 1 to 65535"
