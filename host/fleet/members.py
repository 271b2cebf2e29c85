"""Resolve a configured fleet into targets: its static agents plus the agents discovered with its tags.

Discovered agents are strangers until they prove they belong to the fleet (host/fleet/membership.py): only
the ones that do are given the fleet's credentials. So an announcement is never allowed to push another out
before the proof: two announcements that look like one agent (a shared address or `host` TXT) both go to
the proof, and only among the proven is the later one dropped as the same agent announced twice. Before,
a rogue that reused a member's `host` TXT and sorted first made the real member vanish, then failed the
proof itself, and neither was profiled (issue 23.6).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from host.fleet.client import Credentials
from host.fleet.config import Fleet, credentials_for
from host.fleet.discovery import DiscoveredAgent, DiscoveryError, discover
from host.fleet.membership import can_prove, prove_all
from host.fleet.target import Target

log = logging.getLogger("host.fleet.members")

#: How long resolving static host names may take in all, so one dead DNS name cannot stall a run.
RESOLVE_BUDGET_S = 1.0


@dataclass(frozen=True)
class Member:
    """One fleet member before credentials: where it is, what to call it, and how it got in."""

    name: str
    address: str
    source: str  # "static" | "discovered"
    discovered: DiscoveredAgent | None = None


def split_host_port(address: str) -> tuple[str, int | None]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address.strip("[]").lower(), None
    return host.strip("[]").lower(), int(port)


def _resolve(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()


def _static_keys(addresses: list[str]) -> dict[str, set[tuple[str, int]]]:
    """Every (host or IP, port) a static entry may be known by; names resolved within a bounded time."""
    keys: dict[str, set[tuple[str, int]]] = {}
    to_resolve: dict[str, str] = {}
    for address in addresses:
        host, port = split_host_port(address)
        if port is None:
            keys[address] = set()
            continue
        keys[address] = {(host, port), (host.removesuffix(".").removesuffix(".local"), port)}
        try:
            ipaddress.ip_address(host)
        except ValueError:
            to_resolve[address] = host
    if to_resolve:
        pool = ThreadPoolExecutor(max_workers=min(8, len(to_resolve)))
        futures = {pool.submit(_resolve, host): address for address, host in to_resolve.items()}
        done, _ = wait(futures, timeout=RESOLVE_BUDGET_S)
        pool.shutdown(wait=False, cancel_futures=True)
        for future in done:
            address = futures[future]
            port = split_host_port(address)[1]
            keys[address] |= {(ip, port) for ip in future.result() if port is not None}
    return keys


def _discovered_keys(agent: DiscoveredAgent) -> set[tuple[str, int]]:
    host, port = split_host_port(agent.address)
    if port is None:
        return set()
    keys = {(ip.lower(), port) for ip in agent.addresses} | {(host, port)}
    if agent.hostname:
        name = agent.hostname.lower()
        keys |= {(name, port), (name.split(".")[0], port)}
    return keys


def fleet_members(fleet: Fleet, discover_fn: Callable[..., list[DiscoveredAgent]] = discover) -> list[Member]:
    """Static agents first (in config order), then discovered ones with a matching tag.

    A discovered agent that matches a static one is left out (the configured member stays); discovered ones
    are kept once per address they are dialed at, even when they look alike: admit_members() decides which
    of those are the same agent, once they have proved membership.
    """
    members: list[Member] = []
    seen: set[tuple[str, int]] = set()
    static = list(dict.fromkeys(fleet.agents))
    static_keys = _static_keys(static) if fleet.tags else {}
    for address in static:
        members.append(Member(name=address, address=address, source="static"))
        seen |= static_keys.get(address, set())
    dialed: set[str] = set()
    if not fleet.tags:
        return members
    try:
        discovered = discover_fn(timeout_s=fleet.discover_timeout_s, tags=fleet.tags)
    except DiscoveryError as err:  # the static agents can still be profiled
        log.warning("fleet %s: %s; using its static agents only", fleet.name, err)
        return members
    names = {m.name for m in members}
    for agent in discovered:
        if _discovered_keys(agent) & seen or agent.address in dialed:
            continue  # a configured member (never displaced by an announcement), or an address already listed
        dialed.add(agent.address)
        # Display names are unique: run_profile keys results by them.
        name = agent.name if agent.name not in names else f"{agent.name} ({agent.address})"
        names.add(name)
        members.append(Member(name=name, address=agent.address, source="discovered", discovered=agent))
    return members


@dataclass(frozen=True)
class Admission:
    """Members allowed the fleet's credentials, and one line per discovered agent left out."""

    members: list[Member]
    left_out: list[Member]
    warnings: list[str]
    #: Why each left-out member (by address) was not admitted, one line each.
    reasons: dict[str, str]


def admit_members(
    fleet: Fleet,
    members: list[Member],
    credentials: Credentials,
    prove_fn: Callable[[list[str], Credentials], dict[str, str]] = prove_all,
) -> Admission:
    """Static members as configured; discovered ones only once they proved they hold the fleet's secret."""
    static = [m for m in members if m.source != "discovered"]
    discovered = [m for m in members if m.source == "discovered"]
    if not discovered:
        return Admission(members, [], [], {})
    if not can_prove(credentials):
        names = ", ".join(f"{m.name} ({m.address})" for m in discovered)
        warning = (
            f"fleet {fleet.name}: ignoring {len(discovered)} discovered agent(s) [{names}]: the fleet has neither a "
            "token nor a TLS CA, so a stranger announcing its tag cannot be told from a member; give the fleet a "
            "token_file (or tls_ca), or list its agents"
        )
        reason = "not admitted: the fleet has neither a token nor a TLS CA to check discovered agents against"
        return Admission(static, discovered, [warning], {m.address: reason for m in discovered})
    failed = prove_fn([m.address for m in discovered], credentials)
    left_out = [m for m in discovered if m.address in failed]
    warnings = [
        f"fleet {fleet.name}: leaving out {m.name} ({m.address}): {failed[m.address]}; it gets no token and no model"
        for m in left_out
    ]
    admitted: list[Member] = []
    proven_keys: set[tuple[str, int]] = set()
    for m in members:
        if m in left_out:
            continue
        if m.discovered is not None:
            keys = _discovered_keys(m.discovered)
            if keys & proven_keys:  # both hold the token: one agent announced twice, profiled once
                log.debug("fleet %s: %s (%s) is a member already listed", fleet.name, m.name, m.address)
                continue
            proven_keys |= keys
        admitted.append(m)
    return Admission(admitted, left_out, warnings, failed)


def fleet_targets(fleet: Fleet, token_file: Path | None, tls_ca: Path | None = None) -> list[Target]:
    """What `host profile --fleet NAME` runs on; raises ConfigError for unreadable credentials.

    ``token_file`` and ``tls_ca`` (the command line's) override the fleet's own. Discovered agents that
    do not prove their membership are left out with a warning each.
    """
    credentials = credentials_for(fleet, token_file, tls_ca)
    admission = admit_members(fleet, fleet_members(fleet), credentials)
    for warning in admission.warnings:
        log.warning("%s", warning)
    return [
        Target(name=m.name, address=m.address, credentials=credentials, discovered=m.source == "discovered")
        for m in admission.members
    ]
