"""Zeroconf on loopback: real agents in their own processes announce themselves, the host finds them by tag
and profiles them all with one command (issue 4)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ifaddr
import pytest

from agent.service.discovery import Advertiser, advertised_addresses
from host.fleet.discovery import DiscoveredAgent, discover, pick_address
from host.fleet.local_agent import read_listen_port
from tests.conftest import console_script
from tests.faultlib import spawn, wait_for

REPO = Path(__file__).resolve().parent.parent
#: One browse window. Presence is polled over several browses (up to FOUND_WITHIN_S), never one window.
DISCOVER_S = 2.5
FOUND_WITHIN_S = 60.0
#: Unique per test session, so agents that other test runs on this machine advertise never match.
SESSION = uuid.uuid4().hex[:8]
LAB, ARM, X86 = f"lab-{SESSION}", f"arm-{SESSION}", f"x86-{SESSION}"
#: Four boards on one machine, each with its own device profile.
BOARDS = [("generic-linux", LAB), ("rpi5", f"{LAB},{ARM}"), ("rpi4", f"{LAB},{ARM}"), ("x86-rapl", f"{LAB},{X86}")]
FAST = ["--runs", "30", "--min-duration", "0.2", "--idle", "0", "--warmup", "2", "--threads", "1", "--quiet"]


@dataclass
class AgentProc:
    """An `agent serve` subprocess in its own session (so its worker dies with it)."""

    proc: subprocess.Popen[str]
    profile: str
    tags: list[str]
    port: int = 0
    log_path: Path | None = None
    token_file: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def announced(self) -> bool:
        """True once the agent logged that its zeroconf announcement went out."""
        return self.log_path is not None and "zeroconf: announced" in self.log_path.read_text()

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


def fleet_token(directory: Path) -> Path:
    """A fresh fleet token in a 0600 file: discovered agents must prove they hold it to join a fleet."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fleet.token"
    path.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    path.chmod(0o600)
    return path


def spawn_agents(
    specs: list[tuple[str, str]], root: Path, timeout_s: float = 60.0, token_file: Path | None = None
) -> list[AgentProc]:
    """Start one advertising agent per (profile, comma-separated tags), all at once; wait for their ports.

    With `token_file` every agent requires (and can prove it holds) that token.
    """
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
                *(["--token-file", str(token_file)] if token_file else []),
            ]
            log_path = data / "agent.log"
            with open(log_path, "w") as log:
                proc = spawn(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, start_new_session=True)
            agents.append(
                AgentProc(proc, profile, [t for t in tags.split(",") if t], log_path=log_path, token_file=token_file)
            )
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
    root = tmp_path_factory.mktemp("discovery-agents")
    started = spawn_agents(BOARDS, root, token_file=fleet_token(root))
    try:
        # As a user would: the boards are up (announced) before the host is asked to find them.
        wait_for(lambda: all(a.announced() for a in started), 30, "all four agents to announce themselves")
        yield started
    finally:
        for agent in started:
            agent.stop()


def discover_until(
    done: Callable[[list[DiscoveredAgent]], bool], what: str, tags: list[str] | None = None
) -> list[DiscoveredAgent]:
    """Browse again and again until one browse's findings satisfy `done`; fail naming `what` after FOUND_WITHIN_S.

    A loaded machine can answer later than one window: presence is polled. An absence is only asserted on a
    browse that also saw what it had to see (a control), so a browse that heard nothing proves nothing.
    """
    found: list[DiscoveredAgent] = []

    def browse() -> bool:
        nonlocal found
        found = discover(timeout_s=DISCOVER_S, tags=tags)
        return done(found)

    wait_for(browse, FOUND_WITHIN_S, what, poll_s=0)
    return found


def host(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("host"), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=os.environ.copy()
    )


def test_four_agents_found_by_tag_with_default_settings_are_profiled_by_one_command_and_rerun_uploads_nothing(
    agents: list[AgentProc], tmp_path: Path
) -> None:
    # The fleet names no addresses and no discovery settings: its members are whatever announces the tag
    # and proves it holds the fleet's token.
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "edgeprof.toml").write_text(f'[fleets.lab]\ntags = ["{LAB}"]\ntoken_file = "{agents[0].token_file}"\n')
    expected = {a.address: a.profile for a in agents}
    assert len(expected) == 4 and len(set(expected.values())) == 4

    docs = []
    for i in range(2):
        proc = host("profile", "example:squeezenet", "--fleet", "lab", *FAST, "--json", f"r{i}.json", cwd=cwd)
        assert proc.returncode == 0, proc.stderr
        docs.append(json.loads((cwd / f"r{i}.json").read_text()))

    first, second = docs
    for doc in docs:
        assert {d["address"]: d["profile"] for d in doc["devices"]} == expected
        assert len(doc["devices"]) == 4 and len({d["device"] for d in doc["devices"]}) == 4
        for device in doc["devices"]:
            assert device["status"] == "ok" and device["error"] is None, device
            assert device["n_inferences"] >= 30 and device["latency_ms"]["p50"] > 0
    assert first["run_id"] != second["run_id"] and first["model"]["sha256"] == second["model"]["sha256"]
    # Each agent receives the artifact compiled for its profile once; the second run finds it cached.
    assert all(d["upload_bytes"] > 0 for d in first["devices"]), first["devices"]
    assert all(d["upload_bytes"] == 0 for d in second["devices"]), second["devices"]
    # All four share this machine's CLOCK_MONOTONIC: the jobs ran concurrently, so their spans overlap.
    spans = [(min(p["start_ns"] for p in d["phases"]), max(p["end_ns"] for p in d["phases"])) for d in first["devices"]]
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def test_discover_finds_every_loopback_agent_with_its_txt(agents: list[AgentProc]) -> None:
    addresses = {agent.address for agent in agents}
    found = discover_until(lambda f: addresses <= {a.address for a in f}, "all four agents in one browse")

    ours = {a.address: a for a in found if LAB in a.tags}
    assert set(ours) == {agent.address for agent in agents}
    for agent in agents:
        seen = ours[agent.address]
        assert seen.profile == agent.profile
        assert seen.tags == agent.tags
        assert seen.version == "0.1.0"
        assert seen.auth_required is True
        assert seen.name.endswith(f"-{agent.port}")


def test_discover_with_tags_keeps_only_agents_carrying_one(agents: list[AgentProc]) -> None:
    tagged = {agents[1].address, agents[2].address, agents[3].address}
    found = discover_until(lambda f: tagged <= {a.address for a in f}, "the three tagged agents", tags=[ARM, X86])

    # The same browse heard the three tagged agents: agents[0] (LAB only), announcing too, was filtered out.
    assert {a.address for a in found} == tagged


def test_host_fleet_discover_json_lists_the_agents(agents: list[AgentProc]) -> None:
    listed: dict[str, dict[str, object]] = {}

    def run_discover() -> bool:
        nonlocal listed
        proc = subprocess.run(
            [console_script("host"), "fleet", "discover", "--timeout", str(DISCOVER_S), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        listed = {entry["address"]: entry for entry in json.loads(proc.stdout) if LAB in entry["tags"]}
        return set(listed) >= {agent.address for agent in agents}

    wait_for(run_discover, FOUND_WITHIN_S, "host fleet discover to list all four agents", poll_s=0)
    assert set(listed) == {agent.address for agent in agents}
    for agent in agents:
        assert listed[agent.address]["profile"] == agent.profile
        assert listed[agent.address]["tags"] == agent.tags


def test_closed_advertiser_is_no_longer_discovered() -> None:
    tag = f"goodbye-{SESSION}"
    leaving = Advertiser.start(listen_host="127.0.0.1", port=9, profile="rpi4", tags=[tag], auth_required=True)
    control = Advertiser.start(listen_host="127.0.0.1", port=10, profile="rpi5", tags=[tag], auth_required=True)
    try:
        try:
            assert leaving.wait_registered(timeout_s=10) and control.wait_registered(timeout_s=10)
            both = discover_until(lambda f: len(f) == 2, "both advertisers in one browse", tags=[tag])
        finally:
            leaving.close()
        before = next(a for a in both if a.address == "127.0.0.1:9")
        assert before.auth_required is True and before.profile == "rpi4"
        # Absence, asserted on a browse that heard the control still announcing with the same tag.
        after = discover_until(lambda f: "127.0.0.1:10" in {a.address for a in f}, "the control advertiser", tags=[tag])
        assert [a.address for a in after] == ["127.0.0.1:10"]
    finally:
        control.close()


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


def test_an_announcement_naming_a_network_address_is_never_dialed_on_our_loopback() -> None:
    from types import SimpleNamespace

    from host.fleet.discovery import SERVICE_TYPE, agent_from_info

    def info(*addresses: str) -> SimpleNamespace:
        return SimpleNamespace(
            parsed_addresses=lambda: list(addresses),
            port=50051,
            properties={b"tags": b"lab"},
            name=f"rogue-50051.{SERVICE_TYPE}",
        )

    # From the network (it names a global IPv6 address too): our own 127.0.0.1 is not where it lives.
    remote = agent_from_info(info("127.0.0.1", "2001:db8::5"))
    # An agent on this machine's lo announces loopback only, and is dialed there.
    local = agent_from_info(info("127.0.0.1"))

    assert remote is not None and remote.address == "[2001:db8::5]:50051"
    assert local is not None and local.address == "127.0.0.1:50051"
