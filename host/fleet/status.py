"""A fleet member's state as `host fleet ls` and the dashboard show it: health, then Describe, or why not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from host.fleet.client import AgentClient, Credentials
from host.fleet.config import Fleet
from host.fleet.discovery import DiscoveredAgent, discover
from host.fleet.members import Member
from host.fleet.rpc_errors import describe_rpc_error

#: Seconds for the health check and for Describe, each: `fleet ls` must stay quick with a member down.
PROBE_TIMEOUT_S = 3.0


@dataclass
class MemberStatus:
    name: str
    address: str
    source: str
    health: str = ""
    profile: str = ""
    agent_version: str = ""
    runtimes: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    auth_required: bool | None = None
    error: str | None = None


def probe(member: Member, credentials: Credentials) -> MemberStatus:
    """Health (grpc.health, needs no token) then Describe; a failure becomes the member's one-line error."""
    status = status_from_announcement(member)
    try:
        with AgentClient(member.address, credentials, timeout_s=PROBE_TIMEOUT_S) as client:
            status.health = client.health(timeout_s=PROBE_TIMEOUT_S)
            if status.health == "DEADLINE_EXCEEDED":  # Describe would only wait as long again
                status.error = f"the agent at {member.address} did not answer in time"
                return status
            info = client.describe()
    except grpc.RpcError as err:
        status.error = describe_rpc_error(err, member.address)
        return status
    except Exception as err:  # e.g. a malformed address in the config: one line, never a traceback
        status.health = status.health or "ERROR"
        status.error = f"{type(err).__name__}: {err}"
        return status
    status.profile = info.profile
    status.agent_version = info.agent_version
    status.runtimes = [{"name": rt.name, "version": rt.version} for rt in info.runtimes]
    status.tags = list(info.tags)
    status.auth_required = info.auth_required
    return status


def shared_discovery(fleets: list[Fleet]) -> Callable[..., list[DiscoveredAgent]]:
    """One zeroconf browse for every fleet with tags (each would otherwise wait its own timeout)."""
    answers: list[DiscoveredAgent] | None = None

    def discover_once(timeout_s: float, tags: list[str] | None = None) -> list[DiscoveredAgent]:
        nonlocal answers
        if answers is None:
            answers = discover(timeout_s=max(f.discover_timeout_s for f in fleets if f.tags))
        return [a for a in answers if not tags or set(tags) & set(a.tags)]

    return discover_once


def left_out(member: Member, reason: str) -> MemberStatus:
    """A discovered agent that did not prove it belongs to the fleet: shown, but never sent the token."""
    status = status_from_announcement(member)
    status.error = f"left out, it gets no token: {reason}"
    return status


def status_from_announcement(member: Member) -> MemberStatus:
    status = MemberStatus(name=member.name, address=member.address, source=member.source)
    if member.discovered is not None:
        status.profile = member.discovered.profile
        status.tags = list(member.discovered.tags)
        status.agent_version = member.discovered.version
        status.auth_required = member.discovered.auth_required
    return status
