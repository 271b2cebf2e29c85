"""Fleets as a user runs them: agents found by tag on loopback, profiled at once, one member down or killed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.fleet.config import Fleet
from host.fleet.discovery import DiscoveredAgent
from host.fleet.members import fleet_members, fleet_targets
from host.prepare.modelfile import inspect
from host.run.profiling import DeviceProgress, ProfileSettings, run_profile
from tests.conftest import console_script
from tests.test_discovery import AgentProc, fleet_token, spawn_agents

#: Unique per test session, so agents other test runs on this machine advertise never join our fleets.
LAB = f"lab-{uuid.uuid4().hex[:8]}"
FAST = ["--runs", "50", "--min-duration", "0.3", "--idle", "0", "--warmup", "2", "--threads", "1", "--quiet"]


def host(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("host"), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=os.environ.copy()
    )


def dead_address() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "edgeprof.toml").write_text(text)
    return directory


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProc]]:
    root = tmp_path_factory.mktemp("lab-agents")
    started = spawn_agents(
        [("generic-linux", LAB), ("rpi5", f"{LAB},arm"), ("generic-linux", f"{LAB},x86")],
        root,
        token_file=fleet_token(root),
    )
    yield started
    for agent in started:
        agent.stop()


def test_fleet_with_a_member_down_profiles_the_others_and_exits_1(
    lab: list[AgentProc], squeezenet: Path, tmp_path: Path
) -> None:
    down = dead_address()
    cwd = write_config(
        tmp_path / "work",
        f'[fleets.lab]\nagents = ["{down}"]\ntags = ["{LAB}"]\ndiscover_timeout_s = 2.0\n'
        f'token_file = "{lab[0].token_file}"\n',
    )

    proc = host("profile", str(squeezenet), "--fleet", "lab", *FAST, "--json", "r.json", cwd=cwd)

    assert proc.returncode == 1, proc.stderr
    devices = {d["address"]: d for d in json.loads((cwd / "r.json").read_text())["devices"]}
    assert set(devices) == {down} | {a.address for a in lab}
    assert devices[down]["status"] == "error" and f"nothing listens at {down}" in devices[down]["error"]
    assert all(devices[a.address]["status"] == "ok" for a in lab)


def test_fleet_ls_shows_health_profile_versions_and_one_line_error_for_a_down_member(
    lab: list[AgentProc], tmp_path: Path
) -> None:
    down = dead_address()
    cwd = write_config(
        tmp_path / "work",
        f'[fleets.lab]\nagents = ["{down}"]\ntags = ["{LAB}"]\ndiscover_timeout_s = 2.0\n'
        f'token_file = "{lab[0].token_file}"\n',
    )

    as_json = host("fleet", "ls", "--json", cwd=cwd)
    as_text = host("fleet", "ls", cwd=cwd)

    assert as_json.returncode == 1, as_json.stderr  # a member is down: scripts and CI can tell
    (fleet,) = json.loads(as_json.stdout)
    members = {m["address"]: m for m in fleet["members"]}
    assert set(members) == {down} | {a.address for a in lab}
    assert members[down]["source"] == "static" and f"nothing listens at {down}" in members[down]["error"]
    for agent in lab:
        member = members[agent.address]
        assert member["health"] == "SERVING" and member["error"] is None and member["source"] == "discovered"
        assert member["profile"] == agent.profile and member["agent_version"] == "0.1.0"
        assert any(rt["name"] == "onnxruntime" and rt["version"] for rt in member["runtimes"])
    assert as_text.returncode == 1 and "Traceback" not in as_text.stdout + as_text.stderr
    assert f"host: 1 fleet member(s) not serving: {down}" in as_text.stderr
    assert f"error: {members[down]['error']}" in as_text.stdout


def test_agent_killed_mid_run_fails_alone_with_its_error_in_the_document(squeezenet: Path, tmp_path: Path) -> None:
    tag = f"kill-{uuid.uuid4().hex[:8]}"
    token_file = fleet_token(tmp_path / "agents")
    agents = spawn_agents([("generic-linux", tag), ("generic-linux", tag)], tmp_path / "agents", token_file=token_file)
    try:
        targets = fleet_targets(Fleet(name="kill", tags=[tag], discover_timeout_s=2.0, token_file=token_file), None)
        assert sorted(t.address for t in targets) == sorted(a.address for a in agents)
        victim = next(a for a in agents if a.address == targets[0].address)
        killed = threading.Event()

        def progress(p: DeviceProgress) -> None:
            if p.device == targets[0].name and p.measured > 0 and not killed.is_set():
                killed.set()
                victim.kill()

        settings = ProfileSettings(runs=50, min_duration_s=1.5, idle_s=0, warmup=2, threads=1, reconnect_s=1.0)
        run = run_profile(inspect(squeezenet), targets, settings, store=None, progress=progress)
    finally:
        for agent in agents:
            agent.stop()

    assert killed.is_set()
    devices = {d["address"]: d for d in run.document["devices"]}
    assert devices[victim.address]["status"] == "error"
    assert "lost the agent" in devices[victim.address]["error"]
    (survivor,) = [d for addr, d in devices.items() if addr != victim.address]
    assert survivor["status"] == "ok" and survivor["n_inferences"] >= 50


def test_static_agent_also_discovered_is_one_member() -> None:
    fleet = Fleet(name="lab", agents=["localhost:50051", "localhost:50051"], tags=["lab"])
    found = [
        DiscoveredAgent(
            name="box-50051", address="127.0.0.1:50051", profile="rpi5", tags=["lab"], addresses=["127.0.0.1"]
        ),
        DiscoveredAgent(
            name="box-50052", address="127.0.0.1:50052", profile="rpi5", tags=["lab"], addresses=["127.0.0.1"]
        ),
    ]

    members = fleet_members(fleet, lambda timeout_s, tags: found)

    assert [(m.name, m.address, m.source) for m in members] == [
        ("localhost:50051", "localhost:50051", "static"),
        ("box-50052", "127.0.0.1:50052", "discovered"),
    ]


def test_fleet_without_tags_does_not_browse() -> None:
    def no_browse(timeout_s: float, tags: list[str]) -> list[DiscoveredAgent]:
        raise AssertionError("discovery ran for a fleet without tags")

    members = fleet_members(Fleet(name="static", agents=["10.0.0.5:50051"]), no_browse)

    assert [m.address for m in members] == ["10.0.0.5:50051"]


def test_stored_run_acknowledges_each_agents_job_after_saving(squeezenet: Path, tmp_path: Path) -> None:
    from host.fleet.client import AgentClient
    from host.fleet.target import Target
    from host.store.open import open_store
    from tests.faultlib import AgentProc as PlainAgent

    for i in range(3):
        (tmp_path / f"a{i}").mkdir()
    agents = [PlainAgent(tmp_path / f"a{i}").start() for i in range(3)]
    try:
        targets = [Target(name=f"board-{i}", address=a.address) for i, a in enumerate(agents)]
        settings = ProfileSettings(runs=5, min_duration_s=0.0, idle_s=0, warmup=1, threads=1)
        store = open_store(tmp_path / "runs.sqlite")
        run = run_profile(inspect(squeezenet), targets, settings, store=store, progress=lambda p: None)
        for agent, entry in zip(agents, run.document["devices"], strict=True):
            with AgentClient(agent.address) as client:
                open_jobs = {j.job_id for j in client.list_jobs()}
                all_jobs = {j.job_id for j in client.list_jobs(include_acknowledged=True)}
            assert entry["status"] == "ok" and entry["job_id"] in all_jobs
            assert entry["job_id"] not in open_jobs, f"{entry['device']}: its job was not acknowledged"
        assert store.pending(run.document["run_id"]) == []
    finally:
        for agent in agents:
            agent.stop()


def test_fleet_ls_folds_a_long_member_error_to_the_terminal_width(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from host.cli.fleet import _print_fleets

    error = (
        "nothing listens at 10.0.0.7:50051 (connection refused): is `agent serve` running there, on that port? "
        "Start it with `agent serve --port 50051` or fix the address in the fleet's config"
    )
    member = {
        "name": "pi-kitchen",
        "address": "10.0.0.7:50051",
        "source": "static",
        "health": None,
        "profile": None,
        "agent_version": None,
        "runtimes": [],
        "error": error,
    }
    monkeypatch.setenv("COLUMNS", "80")

    _print_fleets([{"fleet": "lab", "tags": [], "members": [member]}])

    out = capsys.readouterr().out
    error_lines = out.splitlines()[3:]
    assert len(error_lines) > 1 and all(len(line) <= 80 for line in error_lines), out
    assert error_lines[0].startswith("    error: nothing listens") and error_lines[1].startswith(" " * 11 + "serve`")
    assert " ".join(line.strip() for line in error_lines) == f"error: {error}"
