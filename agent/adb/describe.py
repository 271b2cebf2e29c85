"""What a phone is: getprop, CPU clusters and their max clocks, RAM, battery, and the profile that fits it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.adb.phone import Phone

#: One shell call gathers everything (each adb round trip costs milliseconds to seconds over Wi-Fi).
_DESCRIBE = (
    "getprop; echo @@cpus; for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do"
    ' echo "$f $(cat $f)"; done; echo @@mem; cat /proc/meminfo; echo @@battery;'
    " for f in /sys/class/power_supply/*/online /sys/class/power_supply/battery/status"
    ' /sys/class/power_supply/battery/capacity; do [ -r $f ] && echo "$f $(cat $f)"; done'
)
_PROP = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")
_CPU = re.compile(r"/cpu(\d+)/cpufreq/cpuinfo_max_freq (\d+)")

#: SoC vendor (ro.soc.manufacturer, else guessed from ro.board.platform) -> device profile.
SOC_PROFILES = {"qualcomm": "android-qualcomm", "google": "android-tensor", "mediatek": "android-mediatek"}
_PLATFORM_VENDOR = (
    (re.compile(r"^(msm|sdm|sm\d|kona|lahaina|taro|kalama|pineapple|sun|lito|holi|bengal|trinket)"), "qualcomm"),
    (re.compile(r"^(mt|k6)"), "mediatek"),
    (re.compile(r"^(gs\d|zuma|zumapro|laguna)"), "google"),
)


@dataclass
class PhoneInfo:
    serial: str
    props: dict[str, str]
    #: Max clock per core, kHz, by cpu index.
    cpu_max_khz: dict[int, int]
    ram_bytes: int
    #: "/sys/class/power_supply/usb/online" -> "1", ".../battery/status" -> "Discharging", ...
    power: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.props.get("ro.product.model", "")

    @property
    def abi(self) -> str:
        return self.props.get("ro.product.cpu.abi", "")

    @property
    def android(self) -> str:
        release = self.props.get("ro.build.version.release", "?")
        return f"Android {release} (SDK {self.props.get('ro.build.version.sdk', '?')})"

    @property
    def soc(self) -> str:
        """ "Qualcomm SM8550 (kalama)": vendor and model where Android 12+ says them, else the board platform."""
        vendor = self.props.get("ro.soc.manufacturer", "")
        model = self.props.get("ro.soc.model", "")
        platform = self.props.get("ro.board.platform", "") or self.props.get("ro.hardware", "")
        name = " ".join(p for p in (vendor, model) if p)
        return f"{name} ({platform})" if name and platform else name or platform

    @property
    def soc_vendor(self) -> str:
        vendor = self.props.get("ro.soc.manufacturer", "").lower()
        if vendor:
            return vendor
        platform = (self.props.get("ro.board.platform", "") or self.props.get("ro.hardware", "")).lower()
        return next((v for pattern, v in _PLATFORM_VENDOR if pattern.match(platform)), "")

    @property
    def big_cores(self) -> list[int]:
        """The cores of the fastest cluster (highest max clock; the prime core is a cluster of its own)."""
        if not self.cpu_max_khz:
            return []
        clocks = sorted(set(self.cpu_max_khz.values()))
        # A lone prime core is "big" together with the cluster below it, as schedulers treat them.
        top = (
            clocks[-2:]
            if len(clocks) >= 3 and sum(v == clocks[-1] for v in self.cpu_max_khz.values()) == 1
            else clocks[-1:]
        )
        return sorted(cpu for cpu, khz in self.cpu_max_khz.items() if khz in top)

    @property
    def clusters(self) -> str:
        """ "4x1.80GHz + 3x2.80GHz + 1x3.20GHz"."""
        counts: dict[int, int] = {}
        for khz in self.cpu_max_khz.values():
            counts[khz] = counts.get(khz, 0) + 1
        return " + ".join(f"{n}x{khz / 1e6:.2f}GHz" for khz, n in sorted(counts.items()))

    @property
    def battery_status(self) -> str:
        return self.power.get("/sys/class/power_supply/battery/status", "unknown")

    @property
    def powered_by(self) -> list[str]:
        """External supplies that are online ("usb", "ac", "wireless")."""
        return sorted(
            path.split("/")[-2] for path, value in self.power.items() if path.endswith("/online") and value == "1"
        )

    def profile_name(self) -> str:
        return SOC_PROFILES.get(self.soc_vendor, "android-generic")

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "model": self.model,
            "soc": self.soc,
            "android": self.android,
            "abi": self.abi,
            "cpus": self.clusters,
            "big_cores": self.big_cores,
            "ram_bytes": self.ram_bytes,
            "battery": self.battery_status,
            "powered_by": self.powered_by,
            "profile": self.profile_name(),
        }


def taskset_mask(cores: list[int]) -> str:
    """The hex affinity mask for `taskset` (cores 4-7 -> "f0")."""
    return format(sum(1 << c for c in cores), "x") if cores else ""


def describe(phone: Phone) -> PhoneInfo:
    out = phone.shell(_DESCRIBE, doing="while describing it")
    section = "props"
    props: dict[str, str] = {}
    cpus: dict[int, int] = {}
    ram_bytes = 0
    power: dict[str, str] = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("@@"):
            section = line[2:]
            continue
        if section == "props" and (m := _PROP.match(line)):
            props[m.group(1)] = m.group(2)
        elif section == "cpus" and (m := _CPU.search(line)):
            cpus[int(m.group(1))] = int(m.group(2))
        elif section == "mem" and line.startswith("MemTotal:"):
            ram_bytes = int(line.split()[1]) * 1024
        elif section == "battery" and " " in line:
            path, value = line.split(" ", 1)
            power[path[path.find("/sys/") :]] = value.strip()  # from /sys/ on, whatever prefix a sandbox adds
    return PhoneInfo(phone.serial, props, cpus, ram_bytes, power)
