"""A Jetson's state that changes every number: nvpmodel power mode, clocks pinned by jetson_clocks or floating.

Read before and after each job (agent/jobs/execution.py calls begin() and end()), under EDGEPROF_SYSFS_ROOT:
- the power mode from `nvpmodel -q` ("NV Power Mode: MODE_15W" then its id on the next line), else from
  /var/lib/nvpmodel/status ("pmode:0002") named by /etc/nvpmodel.conf ("< POWER_MODEL ID=2 NAME=15W >");
- clocks in Hz: GPU from devfreq (/sys/class/devfreq/*.ga10b|gv11b|gp10b|gpu: cur/min/max_freq), EMC and DLA from
  the BPMP debugfs (/sys/kernel/debug/bpmp/debug/clk/{emc,nafll_dla*}/rate, min_rate, max_rate; root only),
  CPUs from cpufreq (kHz). `jetson_clocks` pins each at its maximum (min = max): that is what "pinned" checks.
With `agent serve --power-mode ID` (agent/device/power_mode.py) the mode is set for each job and restored after it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sensors.base import under_root

NVPMODEL_ENV = "EDGEPROF_NVPMODEL"
STATUS_FILE = "/var/lib/nvpmodel/status"
CONF_FILE = "/etc/nvpmodel.conf"
_QUERY_NAME = re.compile(r"NV Power Mode:\s*(\S.*)$")
_CONF_MODE = re.compile(r"<\s*POWER_MODEL\b([^>]*)>")
_ATTR = re.compile(r"(ID|NAME)=(\S+)")
_STATUS = re.compile(r"pmode:0*(\d+)")
_GPU_DEVFREQ = re.compile(r"\.(gpu|gv11b|ga10b|gp10b|gb10b)$")
BPMP_CLK = "/sys/kernel/debug/bpmp/debug/clk"
DLA_CLOCKS = ("nafll_dla", "nafll_dla0_core", "nafll_dla1_core")


@dataclass(frozen=True)
class PowerMode:
    mode_id: int | None
    name: str
    #: "nvpmodel -q" or the status file it was read from.
    source: str

    def describe(self) -> str:
        return f"{self.name} ({self.mode_id})" if self.mode_id is not None else self.name


def find_nvpmodel() -> str | None:
    """EDGEPROF_NVPMODEL, else `nvpmodel` on PATH (JetPack: /usr/sbin/nvpmodel)."""
    configured = os.environ.get(NVPMODEL_ENV, "")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.environ.get("EDGEPROF_SYSFS_ROOT", "/") != "/":
        return None  # a fake board: never ask the real tool about the machine the tests run on
    return shutil.which("nvpmodel") or ("/usr/sbin/nvpmodel" if os.access("/usr/sbin/nvpmodel", os.X_OK) else None)


def parse_query(text: str) -> tuple[str, int | None] | None:
    """`nvpmodel -q` output -> (name, id); it may add "NV Fan Mode" and "NVPM ERROR" lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        match = _QUERY_NAME.search(line)
        if match:
            following = lines[i + 1] if i + 1 < len(lines) else ""
            return match.group(1).strip(), int(following) if following.isdigit() else None
    return None


def parse_conf_modes(text: str) -> dict[int, str]:
    """/etc/nvpmodel.conf's power models by id (attributes in either order; comments skipped)."""
    modes: dict[int, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _CONF_MODE.search(line)
        if match:
            attrs = dict(_ATTR.findall(match.group(1)))
            if "ID" in attrs and attrs["ID"].isdigit():
                modes[int(attrs["ID"])] = str(attrs.get("NAME") or attrs["ID"])
    return modes


def conf_modes() -> dict[int, str]:
    try:
        return parse_conf_modes(under_root(CONF_FILE).read_text(errors="replace"))
    except OSError:
        return {}


def read_power_mode(nvpmodel: str | None = None) -> PowerMode | None:
    """The power mode in force: `nvpmodel -q` where it runs, else the status file; None when neither says."""
    if nvpmodel:
        try:
            out = subprocess.run([nvpmodel, "-q"], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)
            parsed = parse_query(out.stdout + "\n" + out.stderr)
        except (OSError, subprocess.SubprocessError):
            parsed = None
        if parsed is not None:
            return PowerMode(parsed[1], parsed[0], "nvpmodel -q")
    try:
        status = under_root(STATUS_FILE).read_text(errors="replace")
    except OSError:
        return None
    match = _STATUS.search(status)
    if not match:
        return None
    mode_id = int(match.group(1))
    return PowerMode(mode_id, conf_modes().get(mode_id, f"mode {mode_id}"), STATUS_FILE)


@dataclass(frozen=True)
class Clock:
    """One clock domain in Hz (None where its file cannot be read)."""

    name: str
    cur_hz: int | None
    min_hz: int | None
    max_hz: int | None
    problem: str = ""

    @property
    def pinned(self) -> bool | None:
        if self.min_hz is None or self.max_hz is None:
            return None
        return self.min_hz >= self.max_hz


def _read_int(path: Path) -> tuple[int | None, str]:
    try:
        return int(path.read_text().split()[0]), ""
    except PermissionError:
        return None, "needs root (debugfs)" if "debug" in str(path) else "permission denied"
    except (OSError, ValueError, IndexError):
        return None, ""


def _domain(name: str, cur: Path, low: Path, high: Path, scale: int = 1) -> Clock | None:
    values = [_read_int(p) for p in (cur, low, high)]
    if all(v is None and not why for v, why in values):
        return None  # not on this board
    cur_v, low_v, high_v = ((v * scale if v is not None else None) for v, _ in values)
    problem = next((why for _, why in values if why), "")
    return Clock(name, cur_v, low_v, high_v, problem)


def read_clocks() -> list[Clock]:
    """GPU, EMC, DLA and CPU clocks of this board (those it has)."""
    clocks: list[Clock] = []
    devfreq = under_root("/sys/class/devfreq")
    for directory in sorted(devfreq.glob("*")) if devfreq.is_dir() else []:
        if _GPU_DEVFREQ.search(directory.name):
            found = _domain("gpu", directory / "cur_freq", directory / "min_freq", directory / "max_freq")
            if found:
                clocks.append(found)
                break
    bpmp = under_root(BPMP_CLK)
    emc = _domain("emc", bpmp / "emc/rate", bpmp / "emc/min_rate", bpmp / "emc/max_rate")
    if emc is None:  # JetPack 4 (Nano): the common clock framework's debugfs, rate only
        legacy = under_root("/sys/kernel/debug/clk/emc")
        emc = _domain("emc", legacy / "clk_rate", legacy / "min_rate", legacy / "max_rate")
    if emc is not None:
        clocks.append(emc)
    for clk in DLA_CLOCKS:
        dla = _domain(clk.replace("nafll_", "").replace("_core", ""), bpmp / clk / "rate",
                      bpmp / clk / "min_rate", bpmp / clk / "max_rate")  # fmt: skip
        if dla is not None:
            clocks.append(dla)
    cpus = sorted(under_root("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
    cpu_domains = [
        _domain("cpu", c / "scaling_cur_freq", c / "scaling_min_freq", c / "scaling_max_freq", scale=1000) for c in cpus
    ]
    readable = [c for c in cpu_domains if c is not None]
    if readable:  # one entry for all cores: pinned only if every core is
        pins = [c.pinned for c in readable]
        lows = [c.min_hz for c in readable if c.min_hz is not None]
        highs = [c.max_hz for c in readable if c.max_hz is not None]
        curs = [c.cur_hz for c in readable if c.cur_hz is not None]
        clocks.append(
            Clock(
                "cpu",
                max(curs) if curs else None,
                min(lows) if lows and all(p is not None for p in pins) else None,
                max(highs) if highs else None,
            )
        )
    return clocks


def clocks_pinned(clocks: list[Clock]) -> tuple[bool | None, list[str]]:
    """(pinned, floating domains as "gpu 306-1020 MHz"): None when no domain shows its limits."""
    judged = [c for c in clocks if c.pinned is not None]
    floating = [f"{c.name} {_mhz(c.min_hz)}-{_mhz(c.max_hz)} MHz" for c in judged if not c.pinned]
    if not judged:
        return None, []
    return not floating, floating


def _mhz(hz: int | None) -> str:
    return "?" if hz is None else f"{hz / 1e6:.0f}"


def snapshot_notes(prefix: str, clocks: list[Clock]) -> dict[str, str]:
    """Each domain's current clock as `jetson.<domain>_mhz_<prefix>`; unreadable ones say why."""
    notes = {}
    for clock in clocks:
        if clock.cur_hz is not None:
            notes[f"jetson.{clock.name}_mhz_{prefix}"] = f"{clock.cur_hz / 1e6:.1f}"
        elif clock.problem:
            notes[f"jetson.{clock.name}_mhz_{prefix}"] = f"unreadable: {clock.problem}"
    return notes


class JetsonBoardState:
    """The job runner's board_state on a Jetson: reads (and with a PowerModeControl, sets) the state per job."""

    def __init__(self, control: Any = None, nvpmodel: str | None = None) -> None:
        self.control = control
        self.nvpmodel = nvpmodel if nvpmodel is not None else find_nvpmodel()
        self._notes: dict[str, str] = {}
        self._found: PowerMode | None = None

    def begin(self) -> None:
        """Before the job: the mode and clocks as found; then the requested mode (AgentError when it cannot)."""
        self._found = read_power_mode(self.nvpmodel)
        before = read_clocks()
        self._notes = snapshot_notes("before", before)
        if self.control is not None:
            self._notes.update(self.control.apply(self._found))

    def end(self) -> dict[str, str]:
        """After the job: the mode and clocks it ran with, the mode restored; notes for the result."""
        mode = read_power_mode(self.nvpmodel)
        after = read_clocks()
        notes = dict(self._notes)
        notes.update(snapshot_notes("after", after))
        if mode is not None:
            notes["jetson.power_mode"] = mode.name
            notes["jetson.power_mode_id"] = "" if mode.mode_id is None else str(mode.mode_id)
            notes["jetson.power_mode_source"] = mode.source
        else:
            notes["jetson.power_mode"] = "unknown (no nvpmodel, no /var/lib/nvpmodel/status)"
        found = self._found
        if self.control is None and found is not None and mode is not None and found.mode_id != mode.mode_id:
            notes["jetson.power_mode_changed"] = f"during the job: {found.describe()} -> {mode.describe()}"
        pinned, floating = clocks_pinned(after)
        notes["jetson.clocks_pinned"] = {True: "true", False: "false", None: "unknown"}[pinned]
        if floating:
            notes["jetson.clocks_floating"] = ", ".join(floating)
        if self.control is not None:
            notes.update(self.control.restore())
        return notes
