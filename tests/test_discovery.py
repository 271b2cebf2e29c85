"""Zeroconf on loopback: real agents in their own processes announce themselves, the host finds them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ifaddr
import pytest

from agent.discovery import Advertiser, advertised_addresses
from host.discovery import discover, pick_address
from host.local_agent import read_listen_port
from tests.conftest import console_script

REPO = Path(__file__).resolve().parent.parent
DISCOVER_S = 2.5


@dataclass
class AgentProc:
    """An `agent serve` subprocess in its own session (so its worker dies with it)."""

    proc: subprocess.Popen[str]
    profile: str
    tags: list[str]
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL the agent only, as a crash or a pulled plug would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the agent and any worker it left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def spawn_agents(specs: list[tuple[str, str]], root: Path, timeout_s: float = 60.0) -> list[AgentProc]:
    """Start one advertising agent per (profile, comma-separated tags), all at once; wait for their ports."""
    agents: list[AgentProc] = []
    try:
        for i, (profile, tags) in enumerate(specs):
            data = root / f"agent{i}"
            data.mkdir(parents=True, exist_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "agent",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--profile",
                profile,
                "--tags",
                tags,
                "--data-dir",
                str(data),
            ]
            with open(data / "agent.log", "w") as log:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, start_new_session=True
                )
            agents.append(AgentProc(proc, profile, [t for t in tags.split(",") if t]))
        for agent in agents:
            agent.port = _read_port(agent, timeout_s)
    except BaseException:
        for agent in agents:
            agent.stop()
        raise
    return agents


def _read_port(agent: AgentProc, timeout_s: float) -> int:
    port = read_listen_port(agent.proc, timeout_s)
    if port is None:
        raise RuntimeError(f"agent with profile {agent.profile} did not start")
    return port


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProc]]:
    started = spawn_agents(
        [("generic-linux", "lab"), ("rpi5", "lab,arm"), ("generic-linux", "other")],
        tmp_path_factory.mktemp("discovery-agents"),
    )
    yield started
    for agent in started:
        agent.stop()


def test_discover_finds_every_loopback_agent_with_its_txt(agents: list[AgentProc]) -> None:
    found = {a.address: a for a in discover(timeout_s=DISCOVER_S)}

    for agent in agents:
        assert agent.address in found, f"{agent.address} not discovered; found {sorted(found)}"
        seen = found[agent.address]
        assert seen.profile == agent.profile
        assert seen.tags == agent.tags
        assert seen.version == "0.1.0"
        assert seen.auth_required is False
        assert seen.name.endswith(f"-{agent.port}")


def test_discover_with_tags_keeps_only_agents_carrying_one(agents: list[AgentProc]) -> None:
    found = discover(timeout_s=DISCOVER_S, tags=["arm", "other"])

    mine = {a.address for a in agents}
    assert {a.address for a in found if a.address in mine} == {agents[1].address, agents[2].address}


def test_host_fleet_discover_json_lists_the_agents(agents: list[AgentProc]) -> None:
    proc = subprocess.run(
        [console_script("host"), "fleet", "discover", "--timeout", str(DISCOVER_S), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    listed = {entry["address"]: entry for entry in json.loads(proc.stdout)}
    for agent in agents:
        assert listed[agent.address]["profile"] == agent.profile
        assert listed[agent.address]["tags"] == agent.tags


def test_closed_advertiser_is_no_longer_discovered() -> None:
    advertiser = Advertiser.start(
        listen_host="127.0.0.1", port=9, profile="rpi4", tags=["goodbye-test"], auth_required=True
    )
    try:
        assert advertiser.wait_registered(timeout_s=10)
        (before,) = discover(timeout_s=1.0, tags=["goodbye-test"])
    finally:
        advertiser.close()

    assert before.address == "127.0.0.1:9" and before.auth_required is True and before.profile == "rpi4"
    assert discover(timeout_s=1.0, tags=["goodbye-test"]) == []


def test_wildcard_listener_is_announced_with_every_address_including_loopback() -> None:
    addresses, interfaces = advertised_addresses("0.0.0.0")

    ipv4 = {str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4}
    assert ipv4 | {"127.0.0.1"} == set(addresses) == set(interfaces)
    assert advertised_addresses("localhost") == (["127.0.0.1"], ["127.0.0.1"])
    assert advertised_addresses("127.0.0.1") == (["127.0.0.1"], ["127.0.0.1"])


def test_host_prefers_a_routable_ipv4_address() -> None:
    assert pick_address(["127.0.0.1", "fd00::2", "192.0.2.7"]) == "192.0.2.7"
    assert pick_address(["fe80::1", "127.0.0.1"]) == "127.0.0.1"
    assert pick_address(["fe80::1", "fd00::2"]) == "fd00::2"
    assert pick_address([]) is None
