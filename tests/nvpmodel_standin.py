"""A stand-in for a Jetson's `nvpmodel` (tests only), keeping its state under EDGEPROF_SYSFS_ROOT as the real one does.

`-q` prints what JetPack's prints ("NV Fan Mode:quiet", "NV Power Mode: NAME", then the id) from
/var/lib/nvpmodel/status ("pmode:0001 fmode:quiet") and /etc/nvpmodel.conf. `-m ID` writes the status and applies
the mode's `GPU MAX_FREQ` to the fake devfreq, refuses without root as the real tool does (it writes sysfs), and
for modes listed in EDGEPROF_STANDIN_REBOOT_MODES asks on stdin whether to reboot, changing nothing on a no.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(os.environ.get("EDGEPROF_SYSFS_ROOT", "/"))
STATUS = ROOT / "var/lib/nvpmodel/status"
CONF = ROOT / "etc/nvpmodel.conf"


def modes() -> dict[int, tuple[str, list[str]]]:
    found: dict[int, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in CONF.read_text().splitlines():
        match = re.match(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+)\s*>", line.strip())
        if match:
            current = []
            found[int(match.group(1))] = (match.group(2), current)
        elif current is not None and line.strip() and not line.startswith("#"):
            current.append(line.strip())
    return found


def current() -> int:
    match = re.search(r"pmode:0*(\d+)", STATUS.read_text())
    return int(match.group(1)) if match else 0


def main(argv: list[str]) -> int:
    known = modes()
    if argv[:1] == ["-q"]:
        mode = current()
        print("NV Fan Mode:quiet")
        print(f"NV Power Mode: {known.get(mode, (str(mode), []))[0]}")
        print(mode)
        return 0
    if len(argv) == 2 and argv[0] == "-m" and argv[1].isdigit():
        mode = int(argv[1])
        if mode not in known:
            print(f"NVPM ERROR: Invalid power mode ID: {mode}", file=sys.stderr)
            return 1
        if os.geteuid() != 0:
            print("NVPM ERROR: Error opening /sys/devices/system/cpu/cpu1/online: 13", file=sys.stderr)
            return 1
        if str(mode) in os.environ.get("EDGEPROF_STANDIN_REBOOT_MODES", "").split(","):
            print(f"NVPM WARN: Reboot required for changing to this power mode: {mode}")
            print("NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:")
            if sys.stdin.readline().strip().lower() != "yes":
                return 0
        STATUS.write_text(f"pmode:{mode:04d} fmode:quiet\n")
        for line in known[mode][1]:
            parts = line.split()
            if parts[:2] == ["GPU", "MAX_FREQ"]:
                for devfreq in (ROOT / "sys/class/devfreq").glob("*.ga10b"):
                    (devfreq / "max_freq").write_text(parts[2] + "\n")
                    (devfreq / "cur_freq").write_text(parts[2] + "\n")
        return 0
    print("Usage: nvpmodel [-m mode] [-q]", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
