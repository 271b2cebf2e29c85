"""Find agents that announce `_edgeprof._tcp.local.` over zeroconf, on the LAN and on this machine.

The browser joins the mDNS group on every IPv4 interface and always on 127.0.0.1 as well, in one
Zeroconf instance. Agents listening on loopback announce on `lo` only (agent/service/discovery.py); Linux
delivers that multicast to members on the same machine even when `lo` lacks the MULTICAST flag, so
agents next to the host are found with default settings. If joining some interface fails the browser
falls back to loopback alone rather than finding nothing.

Loopback is dialed only for an announcement that names nothing but loopback (an agent on this machine's
`lo`): an announcement that also names a network address came from a machine whose loopback is not ours, and
dialing our own 127.0.0.1 for it would prove whatever a local user listens there (issue 23.5).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

SERVICE_TYPE = "_edgeprof._tcp.local."

log = logging.getLogger("host.fleet.discovery")


class DiscoveryError(Exception):
    """Zeroconf could not be used at all on this machine; the message is one line."""


@dataclass(frozen=True)
class DiscoveredAgent:
    name: str  #: the instance name, e.g. "jetson-01-50051"
    address: str  #: "host:port" the host connects to ("[v6]:port" for IPv6)
    profile: str
    tags: list[str] = field(default_factory=list)
    version: str = ""
    auth_required: bool = False
    hostname: str = ""  #: the machine's host name from TXT `host`, "" when the agent did not send it
    addresses: list[str] = field(default_factory=list)  #: every address it announced

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def browse_interfaces() -> list[str]:
    """Every IPv4 interface address plus 127.0.0.1, so that same-machine agents are always heard."""
    import ifaddr

    found = {str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4}
    found.add("127.0.0.1")
    return sorted(found)


def pick_address(addresses: list[str]) -> str | None:
    """Prefer a routable IPv4 address, then IPv4 loopback, then IPv6 (non-link-local first)."""

    def rank(text: str) -> tuple[int, str]:
        ip = ipaddress.ip_address(text)
        if ip.version == 4:
            return (1 if ip.is_loopback else 0, text)
        if ip.is_link_local:
            return (4, text)
        return (3 if ip.is_loopback else 2, text)

    usable = []
    for text in addresses:
        try:
            usable.append(rank(text))
        except ValueError:
            continue
    return min(usable)[1] if usable else None


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _text(props: dict[bytes, bytes | None], key: str) -> str:
    value = props.get(key.encode())
    return value.decode("utf-8", "replace") if value else ""


def agent_from_info(info: Any) -> DiscoveredAgent | None:
    """A resolved `ServiceInfo` → what the host needs; None when it has no usable address."""
    addresses = list(info.parsed_addresses())
    network = [a for a in addresses if not _is_loopback(a)]
    best = pick_address(network or addresses)
    if best is None or not info.port:
        return None
    props = info.properties or {}
    host_part = f"[{best}]" if ":" in best else best
    instance = info.name[: -len(SERVICE_TYPE) - 1] if info.name.endswith("." + SERVICE_TYPE) else info.name
    return DiscoveredAgent(
        name=instance,
        address=f"{host_part}:{info.port}",
        profile=_text(props, "profile"),
        tags=[t for t in _text(props, "tags").split(",") if t],
        version=_text(props, "version"),
        auth_required=_text(props, "auth") == "1",
        hostname=_text(props, "host"),
        addresses=addresses,
    )


def _names_listener() -> Any:
    from zeroconf import ServiceListener

    class Names(ServiceListener):
        """Collects instance names from the browser thread; a goodbye removes one."""

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.names: dict[str, None] = {}

        def add_service(self, zc: Any, type_: str, name: str) -> None:
            with self.lock:
                self.names[name] = None

        def update_service(self, zc: Any, type_: str, name: str) -> None:
            self.add_service(zc, type_, name)

        def remove_service(self, zc: Any, type_: str, name: str) -> None:
            with self.lock:
                self.names.pop(name, None)

    return Names()


def _open_zeroconf() -> Any:
    from zeroconf import IPVersion, Zeroconf

    try:
        return Zeroconf(interfaces=browse_interfaces(), ip_version=IPVersion.V4Only)
    except Exception as err:  # an interface that refuses multicast: loopback alone still finds local agents
        log.debug("zeroconf on all interfaces failed (%s); browsing on loopback only", err)
    try:
        return Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    except Exception as err:
        raise DiscoveryError(f"zeroconf discovery is not possible on this machine: {err}") from err


def discover(timeout_s: float = 3.0, tags: list[str] | None = None) -> list[DiscoveredAgent]:
    """Agents that answer within `timeout_s` seconds, deduplicated by address, sorted by name.

    With `tags`, only agents carrying at least one of them. Resolving records that did not arrive with
    the answer adds at most one more second.
    """
    from zeroconf import ServiceBrowser

    zc = _open_zeroconf()
    names = _names_listener()
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, names)
        time.sleep(max(0.0, timeout_s))
        browser.cancel()
        with names.lock:
            found = list(names.names)
        resolve_ms = 1000
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(found)))) as pool:
            infos = list(pool.map(lambda n: zc.get_service_info(SERVICE_TYPE, n, timeout=resolve_ms), found))
    finally:
        zc.close()
    wanted = set(tags or [])
    by_address: dict[str, DiscoveredAgent] = {}
    for info in infos:
        agent = agent_from_info(info) if info is not None else None
        if agent is None or (wanted and not wanted.intersection(agent.tags)):
            continue
        by_address.setdefault(agent.address, agent)
    return sorted(by_address.values(), key=lambda a: (a.name, a.address))
