"""How an agent proves to a host that it belongs to the fleet, without ever sending the fleet's token.

Why: hosts find agents over zeroconf, and anyone on the LAN can announce `_edgeprof._tcp` with the
fleet's tag. Before this existed the host sent `Bearer <token>` (and, if asked, the model) to whatever
answered; one rogue announcer then held the token of every board. Now a discovered agent is a stranger
until it proves membership:

- With a fleet CA (TLS), the TLS handshake against that CA is the proof: gRPC sends no metadata before
  the handshake has verified the agent's certificate.
- Otherwise the host sends a challenge on the unauthenticated `Prove` RPC: a fresh random nonce and
  the address it dialed. The agent answers HMAC-SHA256(token, "edgeprof-prove-v1|nonce|address"),
  which only a holder of the token can compute and which reveals nothing about the token. The host
  compares it with `hmac.compare_digest` and only then attaches the token.

A rogue that holds no token could still try to *relay* the challenge to a real agent and pass its
answer back. The dialed address defeats that: the host puts the rogue's own IP:port in the challenge,
and a real agent refuses to answer a challenge for an address it does not listen on (its port, and
one of its interface addresses, or the address it is bound to). Hosts dial discovered agents by
IP:port, so the address is always literal. A loopback address is answered only to a caller on loopback:
an agent bound to 0.0.0.0 has 127.0.0.1 among its addresses, and a local user on the host who listened on
127.0.0.1:PORT (the agent's port) could otherwise relay a host's challenge to it and get the token. The
nonce makes every answer single-use: a recorded answer is worthless for the next challenge. The domain
string ("edgeprof-prove-v1") keeps these MACs apart from any other use of the token and versions the scheme.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

from protos.auth import prove_mac

#: Prefix of every MAC input: binds the answer to this protocol and version.
#: Nonces are hex, long enough that the host never repeats one, short enough to bound the work.
_NONCE_RE = re.compile(r"[0-9a-f]{32,128}")


class ProveRefused(Exception):
    """The agent will not answer this challenge; the message says why, in one line."""


def parse_ip_port(address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """ "192.168.1.7:50051" or "[fe80::1]:50051" → (IP, port); ValueError for host names and junk."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"'{address[:80]}' is not IP:port")
    return ipaddress.ip_address(host.strip("[]").split("%")[0]), int(port)


def interface_ips() -> set[str]:
    """Every address of every interface of this machine, IPv4 and IPv6, as ip_address strings."""
    import ifaddr

    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if ip.is_IPv4 else ip.ip[0]
            try:
                found.add(str(ipaddress.ip_address(str(text).split("%")[0])))
            except ValueError:
                continue
    return found


def peer_is_loopback(peer: str) -> bool:
    """Whether a gRPC peer string ("ipv4:127.0.0.1:41234", "ipv6:[::1]:5000", "unix:…") is on this machine's
    loopback; a Unix socket counts as loopback."""
    kind, _, rest = peer.partition(":")
    if kind == "unix":
        return True
    if kind not in ("ipv4", "ipv6"):
        return False
    host = rest.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class MembershipProver:
    """Answers `Prove` for an agent that holds `token` and listens on `bound_host`:`port`."""

    def __init__(
        self,
        token: str | None,
        bound_host: str,
        port: Callable[[], int],
        own_ips: Callable[[], Iterable[str]] = interface_ips,
    ) -> None:
        self._token = token
        self._bound_host = bound_host.strip("[]")
        self._port = port
        self._own_ips = own_ips

    def _listens_on(self, dialed_address: str, caller_on_loopback: bool) -> bool:
        try:
            ip, port = parse_ip_port(dialed_address)
        except ValueError:
            return False
        if port != self._port():
            return False
        if ip.is_loopback and not caller_on_loopback:
            return False  # a host that dialed our loopback is on this machine, so its call comes over loopback
        if self._bound_host in ("", "0.0.0.0", "::"):
            return str(ip) in set(self._own_ips())
        if self._bound_host == "localhost":
            return ip.is_loopback
        try:
            return ip == ipaddress.ip_address(self._bound_host)
        except ValueError:  # bound to a host name: any address of this machine it could resolve to
            return str(ip) in set(self._own_ips())

    def answer(self, nonce: str, dialed_address: str, caller: str = "") -> str:
        """The MAC for this challenge; ProveRefused when there is no token or the address is not ours.

        `caller` is the gRPC peer of the Prove call ("ipv4:127.0.0.1:41234"); "" counts as not on loopback.
        """
        if self._token is None:
            raise ProveRefused("this agent has no token (--token-file), so it cannot prove fleet membership")
        if not _NONCE_RE.fullmatch(nonce):  # `$` alone would let a trailing newline through
            raise ProveRefused("the nonce must be 32 to 128 lowercase hex characters")
        if not self._listens_on(dialed_address, peer_is_loopback(caller)):
            # A relayed challenge: someone else was dialed and is asking us to answer for them.
            raise ProveRefused(f"this agent does not listen on {dialed_address[:80]!r}: refusing to answer for it")
        return prove_mac(self._token, nonce, dialed_address)
