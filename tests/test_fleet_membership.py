"""A rogue announcing the fleet's tag gets neither token nor model; the fleet's real members are profiled (issue 13.1).

Real zeroconf on loopback, a real `agent serve` member, rogue gRPC servers that record every call, and
`host profile --fleet` as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.service.discovery import Advertiser
from agent.service.membership import MembershipProver, ProveRefused
from agent.service.serve import AgentProcess, ServeOptions
from host.fleet.client import Credentials
from host.fleet.config import Fleet
from host.fleet.members import Member, admit_members
from host.fleet.membership import prove
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from protos.auth import prove_mac
from tests.conftest import console_script
from tests.faultlib import generate_certs, wait_for
from tests.test_discovery import AgentProc, fleet_token, spawn_agents

FAST = ["--runs", "20", "--min-duration", "0.2", "--idle", "0", "--warmup", "2", "--threads", "1", "--quiet"]


@dataclass
class Call:
    method: str
    metadata: dict[str, Any]
    request: Any = None


@dataclass
class RogueAgent(agent_pb2_grpc.AgentServicer):
    """Pretends to be a fleet member and records everything a host sends it.

    With `relay_to`, it passes the host's challenge on to a real agent: as it is (the real agent must
    refuse an address it does not listen on), or with `rewrite` the dialed address made the real agent's
    (then the answer is for the wrong address, and the host's check fails).
    """

    relay_to: str | None = None
    rewrite: bool = False
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, method: str, context: grpc.ServicerContext, request: Any = None) -> None:
        with self.lock:
            self.calls.append(Call(method, dict(context.invocation_metadata()), request))

    def Describe(self, request: Any, context: grpc.ServicerContext) -> pb.DeviceInfo:
        self._record("Describe", context)
        return pb.DeviceInfo(hostname="rogue", profile="generic-linux", agent_version="0.1.0")

    def HasModel(self, request: Any, context: grpc.ServicerContext) -> pb.HasModelReply:
        self._record("HasModel", context, request)
        return pb.HasModelReply(present=False)  # so that a trusting host would upload the model

    def UploadModel(self, request_iterator: Any, context: grpc.ServicerContext) -> pb.UploadReply:
        received = sum(len(chunk.data) for chunk in request_iterator)
        self._record("UploadModel", context, received)
        return pb.UploadReply(received_bytes=received)

    def Profile(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.MeasurementBatch]:
        self._record("Profile", context, request)
        context.abort(grpc.StatusCode.UNAVAILABLE, "rogue")
        yield pb.MeasurementBatch()

    def Prove(self, request: pb.ProveRequest, context: grpc.ServicerContext) -> pb.ProveReply:
        self._record("Prove", context, request)
        if self.relay_to is None:
            return pb.ProveReply(mac="0" * 64)
        with grpc.insecure_channel(self.relay_to) as channel:
            relayed = pb.ProveRequest(
                nonce=request.nonce, dialed_address=self.relay_to if self.rewrite else request.dialed_address
            )
            return agent_pb2_grpc.AgentStub(channel).Prove(relayed, timeout=5)


@dataclass
class Announced:
    rogue: RogueAgent
    server: grpc.Server
    advertiser: Advertiser
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.advertiser.close()
        self.server.stop(0).wait()


def announce_rogue(rogue: RogueAgent, tag: str, credentials: grpc.ServerCredentials | None = None) -> Announced:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_AgentServicer_to_server(rogue, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    advertiser = Advertiser.start(
        listen_host="127.0.0.1", port=port, profile="generic-linux", tags=[tag], auth_required=True
    )
    return Announced(rogue, server, advertiser, port)


@pytest.fixture
def fleet_with_rogues(tmp_path: Path) -> Iterator[tuple[str, Path, AgentProc, list[Announced]]]:
    tag = f"lab-{uuid.uuid4().hex[:8]}"
    token_file = fleet_token(tmp_path / "agents")
    (member,) = spawn_agents([("generic-linux", tag)], tmp_path / "agents", token_file=token_file)
    rogues: list[Announced] = []
    try:
        rogues.append(announce_rogue(RogueAgent(), tag))
        rogues.append(announce_rogue(RogueAgent(relay_to=member.address), tag))
        rogues.append(announce_rogue(RogueAgent(relay_to=member.address, rewrite=True), tag))
        wait_for(member.announced, 30, "the real agent to announce itself")
        assert all(r.advertiser.wait_registered(timeout_s=10) for r in rogues)
        yield tag, token_file, member, rogues
    finally:
        for rogue in rogues:
            rogue.close()
        member.stop()


def test_rogue_announcers_get_no_token_and_no_model_while_the_real_member_is_profiled(
    fleet_with_rogues: tuple[str, Path, AgentProc, list[Announced]], tmp_path: Path
) -> None:
    tag, token_file, member, rogues = fleet_with_rogues
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "edgeprof.toml").write_text(
        f'[fleets.lab]\ntags = ["{tag}"]\ntoken_file = "{token_file}"\ndiscover_timeout_s = 2.5\n'
    )

    proc = subprocess.run(
        [console_script("host"), "profile", "example:squeezenet", "--fleet", "lab", *FAST, "--json", "r.json"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=os.environ.copy(),
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    devices = json.loads((cwd / "r.json").read_text())["devices"]
    assert [(d["address"], d["status"]) for d in devices] == [(member.address, "ok")]
    for announced in rogues:
        calls = announced.rogue.calls
        assert [c.method for c in calls] == ["Prove"], "a stranger is only ever challenged"
        assert all("authorization" not in c.metadata for c in calls), "the token went to a rogue"
        assert token_file.read_text().strip() not in repr([c.request for c in calls])
        warnings = [ln for ln in proc.stderr.splitlines() if announced.address in ln]
        assert len(warnings) == 1 and "leaving out" in warnings[0], proc.stderr


def test_real_agent_refuses_to_answer_a_challenge_for_another_address(tmp_path: Path) -> None:
    token = uuid.uuid4().hex * 2
    (tmp_path / "token").write_text(token)
    agent = AgentProcess(
        ServeOptions(
            listen="127.0.0.1:0",
            profile="generic-linux",
            advertise=False,
            data_dir=tmp_path / "agent",
            token_file=tmp_path / "token",
        )
    )
    agent.start()
    own = f"127.0.0.1:{agent.port}"
    relayed = f"127.0.0.1:{agent.port + 1}"
    nonce = uuid.uuid4().hex
    try:
        with grpc.insecure_channel(own) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            answer = stub.Prove(pb.ProveRequest(nonce=nonce, dialed_address=own), timeout=5)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Prove(pb.ProveRequest(nonce=nonce, dialed_address=relayed), timeout=5)
        proven = prove(own, Credentials(token=token))
        wrong_token = prove(own, Credentials(token="not-the-fleet-token-0123456789"))
    finally:
        agent.stop(grace_s=0)

    assert answer.mac == prove_mac(token, nonce, own)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "does not listen on" in refused.value.details()
    assert proven is None
    assert wrong_token is not None and "does not hold the fleet's token" in wrong_token


@pytest.mark.parametrize(
    ("bound", "dialed", "caller", "ok"),
    [
        ("0.0.0.0", "192.0.2.7:5000", "ipv4:192.0.2.9:40000", True),  # one of its interfaces
        ("0.0.0.0", "192.0.2.8:5000", "ipv4:192.0.2.9:40000", False),  # another machine's address: a relay
        ("0.0.0.0", "192.0.2.7:5001", "ipv4:192.0.2.9:40000", False),  # its address, another port: a relay
        ("192.0.2.7", "[::1]:5000", "ipv6:[::1]:40000", False),
        ("127.0.0.1", "127.0.0.1:5000", "ipv4:127.0.0.1:40000", True),
        ("127.0.0.1", "rogue.local:5000", "ipv4:127.0.0.1:40000", False),  # discovered agents are dialed by IP
        # Loopback is one of an agent's addresses, but only a caller on this machine dialed it (issue 23.5).
        ("0.0.0.0", "127.0.0.1:5000", "ipv4:192.0.2.9:40000", False),
        ("0.0.0.0", "127.0.0.1:5000", "ipv4:127.0.0.1:40000", True),
        ("0.0.0.0", "[::1]:5000", "ipv4:192.0.2.9:40000", False),
        ("127.0.0.1", "127.0.0.1:5000", "", False),
    ],
)
def test_agent_answers_only_for_an_address_it_listens_on(bound: str, dialed: str, caller: str, ok: bool) -> None:
    prover = MembershipProver("t" * 32, bound, lambda: 5000, own_ips=lambda: ["192.0.2.7", "127.0.0.1", "::1"])
    nonce = "ab" * 16

    if ok:
        assert prover.answer(nonce, dialed, caller) == prove_mac("t" * 32, nonce, dialed)
    else:
        with pytest.raises(ProveRefused):
            prover.answer(nonce, dialed, caller)


def _lan_ipv4() -> str | None:
    """An address of this machine that is not loopback (a relay's connection comes from one)."""
    from agent.service.membership import interface_ips

    found = sorted(ip for ip in interface_ips() if "." in ip and not ip.startswith("127."))
    return found[0] if found else None


def test_agent_on_all_interfaces_refuses_a_loopback_challenge_relayed_from_the_network(tmp_path: Path) -> None:
    lan_ip = _lan_ipv4()
    if lan_ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to relay from")
    token = uuid.uuid4().hex * 2
    (tmp_path / "token").write_text(token)
    agent = AgentProcess(
        ServeOptions(
            listen="0.0.0.0:0",  # the installer's default
            profile="generic-linux",
            advertise=False,
            data_dir=tmp_path / "agent",
            token_file=tmp_path / "token",
        )
    )
    agent.start()
    dialed = f"127.0.0.1:{agent.port}"  # what a host dialed to reach a local user's relay on its own loopback
    nonce = uuid.uuid4().hex
    try:
        # The relay forwards the host's challenge unchanged, over the network (from a non-loopback address).
        challenge = pb.ProveRequest(nonce=nonce, dialed_address=dialed)
        with grpc.insecure_channel(f"{lan_ip}:{agent.port}") as channel, pytest.raises(grpc.RpcError) as refused:
            agent_pb2_grpc.AgentStub(channel).Prove(challenge, timeout=5)
        # A host on this machine that dialed the agent's loopback is still answered.
        with grpc.insecure_channel(dialed) as channel:
            local = agent_pb2_grpc.AgentStub(channel).Prove(challenge, timeout=5)
    finally:
        agent.stop(grace_s=0)

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "does not listen on" in refused.value.details()
    assert local.mac == prove_mac(token, nonce, dialed)


@settings(max_examples=200, deadline=None)
@given(
    nonce=st.one_of(st.text(max_size=140), st.text("0123456789abcdef", min_size=32, max_size=128)),
    dialed=st.one_of(st.text(max_size=80), st.from_regex(r"\A\[?[0-9a-f.:]{1,40}\]?:[0-9]{1,6}\Z")),
)
def test_any_challenge_gets_a_mac_or_a_refusal_never_a_crash(nonce: str, dialed: str) -> None:
    prover = MembershipProver("t" * 32, "0.0.0.0", lambda: 5000, own_ips=lambda: ["192.0.2.7"])

    try:
        mac = prover.answer(nonce, dialed, "ipv4:127.0.0.1:40000")
    except ProveRefused as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert mac == prove_mac("t" * 32, nonce, dialed) and dialed.endswith(":5000")


def test_tls_fleet_admits_the_agent_with_the_fleets_certificate_and_never_calls_the_other(tmp_path: Path) -> None:
    certs = generate_certs(tmp_path / "certs")
    agent = AgentProcess(
        ServeOptions(
            listen="127.0.0.1:0",
            profile="generic-linux",
            advertise=False,
            data_dir=tmp_path / "agent",
            tls_cert=certs["server"],
            tls_key=certs["server_key"],
        )
    )
    agent.start()
    rogue_creds = grpc.ssl_server_credentials([(certs["rogue_key"].read_bytes(), certs["rogue"].read_bytes())])
    rogue = announce_rogue(RogueAgent(), f"tls-{uuid.uuid4().hex[:8]}", rogue_creds)
    credentials = Credentials(token="fleet-token-0123456789", root_ca_pem=certs["ca"].read_bytes())
    try:
        real_reason = prove(f"127.0.0.1:{agent.port}", credentials, timeout_s=10)
        rogue_reason = prove(rogue.address, credentials, timeout_s=3)
    finally:
        rogue.close()
        agent.stop(grace_s=0)

    assert real_reason is None
    assert rogue_reason is not None and "fleet's CA" in rogue_reason
    assert rogue.rogue.calls == [], "nothing, not even a challenge, reaches a TLS impostor"


def test_fleet_without_token_or_ca_ignores_discovered_agents_in_one_line() -> None:
    fleet = Fleet(name="lab", agents=["10.0.0.5:50051"], tags=["lab"])
    members = [
        Member(name="10.0.0.5:50051", address="10.0.0.5:50051", source="static"),
        Member(name="box-1", address="127.0.0.1:1", source="discovered"),
        Member(name="box-2", address="127.0.0.1:2", source="discovered"),
    ]

    def no_proof(addresses: list[str], credentials: Credentials) -> dict[str, str]:
        raise AssertionError("nothing to prove against: no agent may be contacted")

    admission = admit_members(fleet, members, Credentials(), no_proof)

    assert [m.address for m in admission.members] == ["10.0.0.5:50051"]
    (warning,) = admission.warnings
    assert "box-1 (127.0.0.1:1)" in warning and "box-2 (127.0.0.1:2)" in warning
    assert "neither a token nor a TLS CA" in warning


def test_fleet_ls_lists_rogues_as_left_out_without_sending_them_the_token(
    fleet_with_rogues: tuple[str, Path, AgentProc, list[Announced]], tmp_path: Path
) -> None:
    tag, token_file, member, rogues = fleet_with_rogues
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "edgeprof.toml").write_text(
        f'[fleets.lab]\ntags = ["{tag}"]\ntoken_file = "{token_file}"\ndiscover_timeout_s = 2.5\n'
    )

    proc = subprocess.run(
        [console_script("host"), "fleet", "ls", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=os.environ.copy(),
    )

    assert proc.returncode == 0, proc.stderr
    (fleet,) = json.loads(proc.stdout)
    members = {m["address"]: m for m in fleet["members"]}
    assert set(members) == {member.address} | {r.address for r in rogues}
    assert members[member.address]["error"] is None and members[member.address]["health"] == "SERVING"
    for announced in rogues:
        assert members[announced.address]["error"].startswith("left out, it gets no token")
        assert [c.method for c in announced.rogue.calls] == ["Prove"]
        assert all("authorization" not in c.metadata for c in announced.rogue.calls)


def test_runs_fetch_proves_a_discovered_address_again_before_sending_the_token(tmp_path: Path) -> None:
    """A zeroconf address taken over by a stranger since the run: the fetch gives it no token."""
    from host.store.open import open_store
    from host.store.sqlite import PendingJob

    token_file = fleet_token(tmp_path / "agents")
    rogue = RogueAgent()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_AgentServicer_to_server(rogue, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    run_id, job_id = "20260101-000000-feed01", uuid.uuid4().hex
    store = open_store()
    store.add_pending(
        PendingJob(run_id, "jetson-07", address, job_id, {"model": {"sha256": "ab" * 32}, "discovered": True}, {})
    )
    try:
        result = subprocess.run(
            [console_script("host"), "runs", "fetch", run_id, "--token-file", str(token_file), "--reconnect", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy(),
        )
    finally:
        server.stop(0).wait()

    assert result.returncode == 1
    assert f"the agent now at {address} did not prove it belongs to the fleet" in result.stdout + result.stderr
    assert [c.method for c in rogue.calls] == ["Prove"]
    assert all("authorization" not in c.metadata for c in rogue.calls)
    assert [j.job_id for j in store.pending()] == [job_id]  # kept: the real agent may come back there


def test_a_nonce_with_a_trailing_newline_is_refused() -> None:
    prover = MembershipProver("t" * 32, "127.0.0.1", lambda: 5000, own_ips=lambda: ["127.0.0.1"])

    with pytest.raises(ProveRefused, match="nonce"):
        prover.answer("ab" * 16 + "\n", "127.0.0.1:5000", "ipv4:127.0.0.1:40000")


def test_rogue_reusing_a_members_host_txt_and_sorting_first_does_not_knock_the_member_out(tmp_path: Path) -> None:
    from host.fleet.config import Fleet
    from host.fleet.discovery import DiscoveredAgent
    from host.fleet.members import fleet_members

    token = uuid.uuid4().hex * 2
    (tmp_path / "token").write_text(token)
    agent = AgentProcess(
        ServeOptions(
            listen="127.0.0.1:0", profile="generic-linux", advertise=False, data_dir=tmp_path / "agent",
            token_file=tmp_path / "token",
        )
    )  # fmt: skip
    agent.start()
    rogue = RogueAgent()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    agent_pb2_grpc.add_AgentServicer_to_server(rogue, server)
    # Another loopback address, the member's port: what a second machine announcing the same `host` would be.
    server.add_insecure_port(f"127.0.0.2:{agent.port}")
    server.start()
    member_address, rogue_address = f"127.0.0.1:{agent.port}", f"127.0.0.2:{agent.port}"
    announced = [  # as discover() returns them: sorted by name, the rogue first
        DiscoveredAgent("a-rogue", rogue_address, "generic-linux", ["lab"], hostname="b7", addresses=["127.0.0.2"]),
        DiscoveredAgent("b7", member_address, "generic-linux", ["lab"], hostname="b7", addresses=["127.0.0.1"]),
    ]
    fleet = Fleet(name="lab", tags=["lab"], token_file=tmp_path / "token")
    try:
        members = fleet_members(fleet, lambda timeout_s, tags: announced)
        admission = admit_members(fleet, members, Credentials(token=token))
    finally:
        server.stop(0).wait()
        agent.stop(grace_s=0)

    assert [m.address for m in admission.members] == [member_address]  # was []: the member had been dropped
    assert [m.address for m in admission.left_out] == [rogue_address]
    assert [c.method for c in rogue.calls] == ["Prove"]
