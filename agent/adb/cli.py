"""`agent adb devices|install-runner`: the phones adb sees, and the runners edgeprof uses on them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    adb = sub.add_parser("adb", help="Android phones over adb: list them, install runners")
    commands = adb.add_subparsers(dest="adb_command", required=True)
    devices = commands.add_parser(
        "devices", help="attached phones: model, SoC, Android, ABI, battery, installed runners, profile"
    )
    devices.add_argument("--json", action="store_true", help="machine-readable output")
    install = commands.add_parser(
        "install-runner",
        help="push benchmark_model (onnxruntime_perf_test, llama-bench, a delegate .so) to the phone, check it runs",
    )
    install.add_argument("path", type=Path, help="the runner built for the phone's ABI")
    install.add_argument("--serial", help="the phone (default: the only one attached)")


def _serial(given: str | None) -> str:
    from agent.adb.phone import PhoneUnavailable, list_serials

    if given:
        return given
    ready = [serial for serial, state in list_serials() if state == "device"]
    if len(ready) != 1:
        raise PhoneUnavailable(
            "no phone is attached" if not ready else f"{len(ready)} phones attached ({', '.join(ready)}): give --serial"
        )
    return ready[0]


def _devices(as_json: bool) -> int:
    from agent.adb import runners
    from agent.adb.describe import describe
    from agent.adb.phone import Phone, PhoneUnavailable, list_serials

    rows: list[dict[str, Any]] = []
    for serial, state in list_serials():
        row: dict[str, Any] = {"serial": serial, "state": state}
        if state == "device":
            try:
                phone = Phone(serial)
                row.update(describe(phone).to_dict())
                row["runners"] = {r.name: r.version for r in runners.installed(phone).values()}
            except PhoneUnavailable as err:
                row["error"] = str(err)
        rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no phones attached (adb devices lists none)")
    for row in rows:
        if row["state"] != "device" or "error" in row:
            print(f"{row['serial']}  {row.get('error') or row['state']}")
            continue
        found = (
            ", ".join(f"{k} {v}".strip() for k, v in row["runners"].items()) or "none (agent adb install-runner PATH)"
        )
        power = ", ".join(row["powered_by"]) or "battery only"
        print(f"{row['serial']}  {row['model']}  {row['soc']}  {row['android']}  {row['abi']}")
        print(f"    cpus {row['cpus']} (big: {row['big_cores']}), {row['ram_bytes'] / 1024**3:.1f} GiB RAM")
        print(f"    battery {row['battery']}, powered by {power}; profile {row['profile']}; runners: {found}")
    return 0


def run(args: argparse.Namespace) -> int:
    from agent.errors import AgentError

    try:
        if args.adb_command == "devices":
            return _devices(args.json)
        from agent.adb import runners
        from agent.adb.phone import Phone

        serial = _serial(args.serial)
        phone = Phone(serial)
        phone.check()
        runner = runners.install(phone, args.path)
        print(f"installed {runner.name} {runner.version} on {serial} at {runner.path}")
        return 0
    except AgentError as err:
        print(f"agent: {err}", file=sys.stderr)
        return 2
