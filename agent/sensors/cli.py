"""`agent sensors [--json]`: which sensors this board has and what each reads right now."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from agent.device.profiles import detect_profile_name, load_profile
from agent.sensors.detect import describe_sensors, detect_sensors

#: Exit statuses: everything found worked; some sensor is present but broken; bad arguments.
EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def _format_value(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"error: {row['error']}"
    value = row["value"]
    if value is None:
        return "-"
    if row["unit"] in ("MHz", "MB"):
        return f"{value:.0f} {row['unit']}"
    return f"{value:.3f} {row['unit']}".strip()


def _print_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    headers = ("BACKEND", "CHANNEL", "KIND", "ROLE", "VALUE")
    table = [(r["backend"], r["channel"], r["kind"], r["role"] or "-", _format_value(r)) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(headers)]
    for line in (headers, *table):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n")


def run_sensors_command(
    profile_name: str | None, power_meter: str | None, as_json: bool, out: TextIO = sys.stdout
) -> int:
    """Detect the sensors for ``profile_name`` (auto-detected when None) and print live readings.

    Returns EXIT_OK, EXIT_PROBLEMS when a sensor is present but unusable (each printed as one line),
    or EXIT_USAGE for an unknown profile or a malformed ``--power-meter``.
    """
    auto = profile_name is None
    try:
        profile = load_profile(profile_name if profile_name is not None else detect_profile_name())
        detection = detect_sensors(profile, power_meter)
    except ValueError as err:
        if as_json:
            out.write(json.dumps({"error": str(err)}) + "\n")
        else:
            out.write(f"error: {err}\n")
        return EXIT_USAGE
    try:
        rows = describe_sensors(detection.sensors)
    finally:
        detection.close()
    if as_json:
        doc = {
            "profile": profile.name,
            "profile_detected": auto,
            "sensors": rows,
            "problems": detection.problems,
        }
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(f"profile: {profile.name}{' (detected)' if auto else ''}\n")
        if rows:
            _print_table(rows, out)
        else:
            out.write("no sensors found\n")
        if not any(r["kind"] in ("power_mw", "energy_uj") for r in rows):
            out.write("no power sensor (an external meter: --power-meter um25c:/dev/rfcomm0)\n")
        for problem in detection.problems:
            out.write(f"problem: {problem}\n")
    return EXIT_PROBLEMS if detection.problems else EXIT_OK
