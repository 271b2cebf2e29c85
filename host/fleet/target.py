"""One agent to profile on: its display name, address and credentials (what a fleet resolves to)."""

from __future__ import annotations

from dataclasses import dataclass, field

from host.fleet.client import Credentials


@dataclass
class Target:
    """One agent to profile on: a display name, its address, and how to authenticate."""

    name: str
    address: str
    credentials: Credentials = field(default_factory=Credentials)
    #: The embedded local agent: it ends with this host, so its jobs are never left pending for a later fetch.
    ephemeral: bool = False
    #: Found over zeroconf (it proved it belongs to the fleet): whoever answers at its address later must
    #: prove it again before it gets the token (host runs fetch).
    discovered: bool = False
