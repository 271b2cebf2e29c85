"""Announce this agent as `_edgeprof._tcp.local.` over zeroconf so hosts find it by tag.

The instance name is `<hostname>-<port>`, and its mDNS host name is the same label: several agents on
one machine must not share an address record, or one agent's goodbye on shutdown would withdraw the
address the others are found by.

Where it is announced follows where the agent listens:
- loopback (127.0.0.1, localhost, ::1): on the loopback interface only, with address 127.0.0.1.
  Linux delivers multicast sent with IP_MULTICAST_IF=127.0.0.1 to local group members even when `lo`
  lacks the MULTICAST flag, so a host on the same machine finds it with default settings.
- a wildcard (0.0.0.0, ::): on every interface, with every interface's addresses, loopback included;
  a host picks a non-loopback address when there is one (see host/fleet/discovery.py).
- one specific address: on that interface, with that address.

Registration (probing and announcing take about 1.5 s) runs in a thread so the agent starts at once;
failures (no multicast, port 5353 taken by a stack that does not share it) are one warning, never fatal.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

from agent import __version__

SERVICE_TYPE = "_edgeprof._tcp.local."
#: DNS labels are at most 63 bytes; the instance name is cut to fit.
_MAX_LABEL = 63

log = logging.getLogger("agent.service.discovery")


def instance_label(hostname: str, port: int) -> str:
    """`jetson-01-50051`: unique per agent on a machine, readable in `host fleet discover`."""
    short = hostname.split(".")[0] or "edgeprof-agent"
    suffix = f"-{port}"
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in short)
    return safe[: _MAX_LABEL - len(suffix)] + suffix


def _interface_addresses() -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) addresses of every interface; IPv6 link-local ones are left out (they need a scope)."""
    import ifaddr

    v4: list[str] = []
    v6: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4:
                v4.append(str(ip.ip))
            elif isinstance(ip.ip, tuple) and not ipaddress.ip_address(ip.ip[0]).is_link_local:
                v6.append(ip.ip[0])
    return sorted(set(v4)), sorted(set(v6))


def advertised_addresses(listen_host: str) -> tuple[list[str], list[str]]:
    """(addresses to announce, IPv4 interfaces to announce them on) for an agent on `listen_host`."""
    host = listen_host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        v4, v6 = _interface_addresses()
        if "127.0.0.1" not in v4:
            v4.append("127.0.0.1")
        # gRPC's 0.0.0.0 is IPv4 only; "::" is dual-stack.
        return (v4 + v6 if host == "::" else v4), v4
    if host == "localhost":
        return ["127.0.0.1"], ["127.0.0.1"]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a host name: announce what it resolves to
        try:
            resolved = sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, socket.AF_INET)})
        except OSError:
            resolved = []
        return (resolved, resolved) if resolved else advertised_addresses("0.0.0.0")
    if ip.is_loopback:
        return ["127.0.0.1"] if ip.version == 4 else ["::1"], ["127.0.0.1"]
    if ip.version == 4:
        return [host], [host]
    v4, _ = _interface_addresses()
    return [host], v4 or ["127.0.0.1"]


def txt_properties(profile: str, tags: list[str], auth_required: bool) -> dict[str, str]:
    return {
        "profile": profile,
        "tags": ",".join(tags),
        "version": __version__,
        "auth": "1" if auth_required else "0",
        # Not part of the contract: lets a host match a static "jetson-01.local:50051" to this agent.
        "host": socket.gethostname(),
    }


class Advertiser:
    """One agent's zeroconf registration: `Advertiser.start(...)` returns at once, `close()` withdraws it."""

    def __init__(self, info: Any, interfaces: list[str]) -> None:
        self.info = info
        self.interfaces = interfaces
        self._zeroconf: Any = None
        self._registered = False
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._register, name="zeroconf-advertise", daemon=True)

    @classmethod
    def start(cls, *, listen_host: str, port: int, profile: str, tags: list[str], auth_required: bool) -> Advertiser:
        try:
            from zeroconf import ServiceInfo

            addresses, interfaces = advertised_addresses(listen_host)
            label = instance_label(socket.gethostname(), port)
            info = ServiceInfo(
                SERVICE_TYPE,
                f"{label}.{SERVICE_TYPE}",
                port=port,
                properties=txt_properties(profile, tags, auth_required),
                server=f"{label}.local.",
                parsed_addresses=addresses,
            )
        except Exception as err:  # zeroconf missing, or a name it rejects: the agent serves regardless
            log.warning("zeroconf: not advertising this agent (%s); hosts can still reach it by address", err)
            return cls(None, [])
        advertiser = cls(info, interfaces)
        advertiser._thread.start()
        return advertiser

    @property
    def name(self) -> str:
        return str(self.info.name) if self.info is not None else ""

    def wait_registered(self, timeout_s: float = 5.0) -> bool:
        """True once the announcement went out (for tests and diagnostics)."""
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return self._registered

    def _register(self) -> None:
        from zeroconf import IPVersion, Zeroconf

        try:
            zc = Zeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        except Exception as err:  # OSError, or zeroconf's own errors when no interface takes multicast
            log.warning("zeroconf: not advertising this agent (%s); hosts can still reach it by address", err)
            return
        with self._lock:
            if self._closed:
                zc.close()
                return
            self._zeroconf = zc
        try:
            zc.register_service(self.info, allow_name_change=True)
        except Exception as err:
            log.warning("zeroconf: could not announce %s (%s); hosts can still reach it by address", self.name, err)
            return
        with self._lock:
            self._registered = True
        log.info("zeroconf: announced %s on %s", self.info.name, ", ".join(self.interfaces))

    def close(self, timeout_s: float = 3.0) -> None:
        """Say goodbye (so hosts drop this agent at once) and release the sockets; bounded by `timeout_s`."""
        with self._lock:
            self._closed = True
        # A registration still probing finishes first, so its goodbye is not overtaken by its announcement.
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with self._lock:
            zc, registered = self._zeroconf, self._registered
            self._zeroconf = None
            self._registered = False
        if zc is None:
            return
        try:
            if registered:
                zc.unregister_service(self.info)
        except Exception as err:  # shutting down must go on whatever zeroconf thinks
            log.warning("zeroconf: goodbye for %s failed (%s)", self.name, err)
        try:
            zc.close()
        except Exception as err:
            log.debug("zeroconf: close failed (%s)", err)
