"""The fleet page: every configured fleet's agents (static and discovered), probed like `host fleet ls` does.

Each agent shows health, agent version, profile, board, sensors and queue from Describe, and when this
dashboard last heard from it; the store adds the newest run that measured it. Probes are cached for
`refresh_s` so that reloading the page does not hammer the boards.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import grpc

from host.dashboard.layout import link
from host.fleet.client import AgentClient, Credentials
from host.fleet.config import Config, ConfigError, Fleet, credentials_for, load_config
from host.fleet.members import Member, admit_members, fleet_members
from host.fleet.rpc_errors import describe_rpc_error
from host.fleet.status import PROBE_TIMEOUT_S, left_out, shared_discovery


@dataclass
class AgentStatus:
    fleet: str
    name: str
    address: str
    source: str
    health: str = ""
    agent_version: str = ""
    profile: str = ""
    board: str = ""
    sensors: list[str] = field(default_factory=list)
    queued_jobs: int | None = None
    error: str = ""
    last_seen: dt.datetime | None = None


def probe_agent(fleet: str, member: Member, credentials: Credentials) -> AgentStatus:
    """Health, then Describe (which carries the token: only for members the fleet admitted)."""
    status = AgentStatus(fleet, member.name, member.address, member.source)
    try:
        with AgentClient(member.address, credentials, timeout_s=PROBE_TIMEOUT_S) as client:
            status.health = client.health(timeout_s=PROBE_TIMEOUT_S)
            if status.health == "DEADLINE_EXCEEDED":
                status.error = f"the agent at {member.address} did not answer in time"
                return status
            info = client.describe()
    except grpc.RpcError as err:
        status.error = describe_rpc_error(err, member.address)
        return status
    except Exception as err:  # a malformed address in the config: one line on the page, never a traceback
        status.error = f"{type(err).__name__}: {err}"
        return status
    status.agent_version, status.profile, status.board = info.agent_version, info.profile, info.board
    status.sensors = [f"{s.name} ({s.kind}, {s.sensor})" if s.sensor else f"{s.name} ({s.kind})" for s in info.sensors]
    status.queued_jobs = int(info.queued_jobs)
    status.last_seen = dt.datetime.now(dt.timezone.utc)
    return status


def _not_admitted(fleet: str, member: Member, reason: str) -> AgentStatus:
    shown = left_out(member, reason)
    return AgentStatus(
        fleet, member.name, member.address, member.source, agent_version=shown.agent_version,
        profile=shown.profile, error=shown.error or reason,
    )  # fmt: skip


class FleetWatch:
    """The fleets' state, probed at most every `refresh_s`; remembers when each agent last answered."""

    def __init__(
        self,
        token_file: Path | None = None,
        refresh_s: float = 15.0,
        config_loader: Callable[[], Config] = load_config,
    ) -> None:
        self._token_file = token_file
        self._refresh_s = refresh_s
        self._load_config = config_loader
        self._lock = threading.Lock()
        self._probed_at = -float("inf")
        self._agents: list[AgentStatus] = []
        self._error = ""
        self._last_seen: dict[str, dt.datetime] = {}

    def snapshot(self) -> tuple[list[AgentStatus], str]:
        """(agents, a configuration error or "")."""
        with self._lock:  # one probe round at a time; concurrent page loads wait for it and share it
            if time.monotonic() - self._probed_at >= self._refresh_s:
                self._agents, self._error = self._probe_all()
                self._probed_at = time.monotonic()
            return list(self._agents), self._error

    def _probe_all(self) -> tuple[list[AgentStatus], str]:
        try:
            fleets: list[Fleet] = list(self._load_config().fleets.values())
            discover_fn = shared_discovery(fleets)
            plans = []
            for fleet in fleets:
                members, creds = fleet_members(fleet, discover_fn), credentials_for(fleet, self._token_file)
                plans.append((fleet, members, creds, admit_members(fleet, members, creds).reasons))
        except ConfigError as err:
            return [], str(err)
        n = sum(len(members) for _, members, _, _ in plans)
        with ThreadPoolExecutor(max_workers=max(1, min(32, n))) as pool:
            futures = [
                pool.submit(_not_admitted, fleet.name, m, reasons[m.address])
                if m.address in reasons
                else pool.submit(probe_agent, fleet.name, m, creds)
                for fleet, members, creds, reasons in plans
                for m in members
            ]
            agents = [f.result() for f in futures]
        for agent in agents:
            if agent.last_seen is not None:
                self._last_seen[agent.address] = agent.last_seen
            agent.last_seen = self._last_seen.get(agent.address)
        return agents, ""


_NONE = '<span class="muted">none</span>'


def _ago(stamp: dt.datetime | None) -> str:
    if stamp is None:
        return "never (since this dashboard started)"
    seconds = (dt.datetime.now(dt.timezone.utc) - stamp).total_seconds()
    return f"{stamp:%Y-%m-%d %H:%M:%S} UTC" + (" (now)" if seconds < 60 else "")


def render_fleet(agents: list[AgentStatus], error: str, last_runs: dict[str, dict[str, Any]], config_path: str) -> str:
    """`last_runs`: the newest stored run document per device name, for the "last run" column."""
    if error:
        return f'<h1>Fleet</h1><p class="error">{escape(error)}</p>'
    if not agents:
        return (
            f'<h1>Fleet</h1><p class="muted">no fleets configured (config: {escape(config_path)}): add [fleets.NAME]'
            ' with agents = ["host:port"] and/or tags = ["lab"].</p>'
        )
    rows = []
    for a in agents:
        healthy = a.health == "SERVING" and not a.error
        state = (
            f'<span class="ok">{escape(a.health)}</span>'
            if healthy
            else f'<span class="error">{escape(a.health or "down")}</span>'
        )
        if a.error:
            state += f'<br><span class="error">{escape(a.error)}</span>'
        run = last_runs.get(a.name)
        last_run = (
            f'<a href="{link("/runs/" + str(run.get("run_id", "")))}">{escape(str(run.get("created_at", ""))[:19])}</a>'
            if run
            else '<span class="muted">none stored</span>'
        )
        rows.append(
            f"<tr><td>{escape(a.fleet)}</td><td>{escape(a.name)}<br><code>{escape(a.address)}</code></td>"
            f"<td>{escape(a.source)}</td><td>{state}</td><td>{escape(a.agent_version) or '–'}</td>"
            f'<td>{escape(a.profile) or "–"}<br><span class="muted">{escape(a.board)}</span></td>'
            f"<td>{'<br>'.join(escape(s) for s in a.sensors) or _NONE}</td>"
            f'<td class="num">{"–" if a.queued_jobs is None else a.queued_jobs}</td>'
            f"<td>{escape(_ago(a.last_seen))}</td><td>{last_run}</td></tr>"
        )
    return (
        "<h1>Fleet</h1><table><tr><th>fleet</th><th>agent</th><th>source</th><th>health</th><th>agent version</th>"
        "<th>profile / board</th><th>sensors</th><th>queue</th><th>last seen</th><th>last run</th></tr>"
        + "".join(rows)
        + f'</table><p class="caption">config: <code>{escape(config_path)}</code>; discovered agents that did not'
        " prove they belong to their fleet are listed but get no token.</p>"
    )
