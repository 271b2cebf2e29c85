"""`host fleet ls|discover`: configured fleets with each member's health, and what answers on zeroconf."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from host.cli.app import app
from host.cli.common import fail, text_width
from host.fleet.client import Credentials
from host.fleet.config import ConfigError, Fleet, credentials_for, load_config
from host.fleet.discovery import DiscoveryError, discover
from host.fleet.members import Member, admit_members, fleet_members
from host.fleet.status import left_out, probe, shared_discovery

fleet_app = typer.Typer(help="fleets of agents: configured members and zeroconf discovery", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


def _fleet_status(fleets: list[Fleet], token_file: Path | None) -> list[dict[str, Any]]:
    jobs: list[tuple[Fleet, list[Member], Credentials, dict[str, str]]] = []
    discover_fn = shared_discovery(fleets)
    try:
        for fleet in fleets:
            members, creds = fleet_members(fleet, discover_fn), credentials_for(fleet, token_file)
            # Describe carries the token: only to members that proved they belong (host/fleet/membership.py).
            jobs.append((fleet, members, creds, admit_members(fleet, members, creds).reasons))
    except ConfigError as err:
        fail(str(err))
    n_members = sum(len(members) for _, members, _, _ in jobs)
    with ThreadPoolExecutor(max_workers=max(1, min(32, n_members))) as pool:
        futures = [
            [
                pool.submit(left_out, m, reasons[m.address]) if m.address in reasons else pool.submit(probe, m, creds)
                for m in members
            ]
            for _, members, creds, reasons in jobs
        ]
        return [
            {"fleet": fleet.name, "tags": fleet.tags, "members": [asdict(f.result()) for f in member_futures]}
            for (fleet, _, _, _), member_futures in zip(jobs, futures, strict=True)
        ]


def _print_fleets(doc: list[dict[str, Any]]) -> None:
    for fleet in doc:
        tags = f"  (tags: {', '.join(fleet['tags'])})" if fleet["tags"] else ""
        print(f"fleet {fleet['fleet']}{tags}")
        if not fleet["members"]:
            print("  no members: none listed and none discovered")
            continue
        head = ("member", "address", "source", "health", "profile", "agent")
        print(f"  {head[0]:<28} {head[1]:<22} {head[2]:<10} {head[3]:<12} {head[4]:<16} {head[5]:<8} runtimes")
        for m in fleet["members"]:
            runtimes = ", ".join(f"{rt['name']} {rt['version']}" for rt in m["runtimes"]) or "-"
            print(
                f"  {m['name']:<28} {m['address']:<22} {m['source']:<10} {m['health'] or '-':<12} "
                f"{m['profile'] or '-':<16} {m['agent_version'] or '-':<8} {runtimes}"
            )
            if m["error"]:
                print(_folded(f"    error: {m['error']}", text_width()))


def _folded(line: str, width: int | None) -> str:
    """A member's error folded at word boundaries to the terminal's width under a hanging indent (None: one line)."""
    if width is None or len(line) <= width:
        return line
    import textwrap

    return "\n".join(
        textwrap.wrap(
            line.lstrip(" "),
            width=width,
            initial_indent="    ",
            subsequent_indent=" " * 11,
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def _counts_as_down(member: dict[str, Any]) -> bool:
    """A member the fleet counts on that does not serve; agents left out for lack of proof are not members."""
    if str(member.get("error") or "").startswith("left out"):
        return False
    return member.get("health") != "SERVING" or bool(member.get("error"))


@fleet_app.command("ls")
def fleet_ls(
    name: Annotated[str | None, typer.Argument(help="only this fleet (default: every configured fleet)")] = None,
    token_file: Annotated[Path | None, typer.Option(help="bearer token for the agents")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Each configured fleet's members with health, profile and versions; exit 1 when a member is down."""
    try:
        config = load_config()
    except ConfigError as err:
        fail(str(err))
    fleets = list(config.fleets.values())
    if name is not None:
        if name not in config.fleets:
            known = ", ".join(sorted(config.fleets)) or "none"
            fail(f"no fleet named '{name}' (fleets: {known}; config: {config.path or 'no config file found'})")
        fleets = [config.fleets[name]]
    doc = _fleet_status(fleets, token_file)
    if as_json:
        print(json.dumps(doc, indent=2))
    elif not doc:
        print(
            f"no fleets configured (config: {config.path or 'no config file found'}); "
            'add [fleets.NAME] with agents = ["host:port"] and/or tags = ["lab"]'
        )
    else:
        _print_fleets(doc)
    down = [m for fleet in doc for m in fleet["members"] if _counts_as_down(m)]
    if down:  # on stderr, so --json output stays one document
        fail(f"{len(down)} fleet member(s) not serving: {', '.join(m['name'] for m in down)}")


@fleet_app.command("discover")
def fleet_discover(
    timeout: Annotated[float, typer.Option(min=0, help="seconds to listen for answers")] = 3.0,
    tags: Annotated[str | None, typer.Option(help="only agents with one of these tags, comma-separated")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Agents that answer on zeroconf (`_edgeprof._tcp.local.`), on this machine and the LAN."""
    wanted = [t.strip() for t in (tags or "").split(",") if t.strip()] or None
    try:
        agents = discover(timeout_s=timeout, tags=wanted)
    except DiscoveryError as err:
        fail(str(err))
    if as_json:
        print(json.dumps([a.to_json() for a in agents], indent=2))
        return
    if not agents:
        print(
            f"no agents answered within {timeout:g} s"
            + (f" with tags {', '.join(wanted)}" if wanted else "")
            + " (agents advertise unless started with --no-advertise; mDNS needs UDP port 5353)"
        )
        return
    print(f"{'name':<28} {'address':<22} {'profile':<16} {'version':<8} {'auth':<5} tags")
    for a in agents:
        auth = "yes" if a.auth_required else "no"
        profile, version = a.profile or "-", a.version or "-"
        print(f"{a.name:<28} {a.address:<22} {profile:<16} {version:<8} {auth:<5} {','.join(a.tags)}")
