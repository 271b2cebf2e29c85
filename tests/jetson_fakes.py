"""A Jetson Orin Nano as the agent sees it, faked: sysfs (rails, clocks, nvpmodel files) and stand-in programs."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.sensor_fakes import build_orin_nano, build_thermal, write

HERE = Path(__file__).parent
ORIN_NANO_CONF = """# /etc/nvpmodel.conf of an Orin Nano (trimmed)
< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ 624750000
< POWER_MODEL ID=1 NAME=7W >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ 408000000
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
GPU MAX_FREQ 1020000000
"""
GPU_DEVFREQ = "/sys/class/devfreq/17000000.ga10b"
#: The rail that feeds the GPU on an Orin Nano (with the CPU and the CV engines) and its hwmon current file.
GPU_RAIL_CURRENT = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/curr2_input"
TOTAL_RAIL_CURRENT = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/curr1_input"


def build_orin_board(root: Path, *, pinned: bool, mode: int = 0) -> None:
    """Orin Nano: INA3221 rails, thermal zones, GPU devfreq, BPMP EMC/DLA clocks, cpufreq, nvpmodel state."""
    build_orin_nano(root)
    build_thermal(root, {"cpu-thermal": 41.0, "gpu-thermal": 40.5, "tj-thermal": 42.0})
    gpu_max = 624_750_000
    write(root, f"{GPU_DEVFREQ}/max_freq", gpu_max)
    write(root, f"{GPU_DEVFREQ}/min_freq", gpu_max if pinned else 306_000_000)
    write(root, f"{GPU_DEVFREQ}/cur_freq", gpu_max if pinned else 306_000_000)
    write(root, f"{GPU_DEVFREQ}/available_frequencies", "306000000 408000000 624750000")
    for clk, rate in (("emc", 2_133_000_000), ("nafll_dla0_core", 614_400_000), ("nafll_dla1_core", 614_400_000)):
        base = f"/sys/kernel/debug/bpmp/debug/clk/{clk}"
        write(root, f"{base}/rate", rate if pinned or clk != "emc" else 665_600_000)
        write(root, f"{base}/max_rate", rate)
        write(root, f"{base}/min_rate", rate if pinned else 204_000_000)
    for cpu in range(6):
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        write(root, f"{base}/scaling_max_freq", 1510400)
        write(root, f"{base}/scaling_min_freq", 1510400 if pinned else 115200)
        write(root, f"{base}/scaling_cur_freq", 1510400 if pinned else 729600)
        write(root, f"{base}/scaling_governor", "schedutil")
    write(root, "/etc/nvpmodel.conf", ORIN_NANO_CONF)
    write(root, "/var/lib/nvpmodel/status", f"pmode:{mode:04d} fmode:quiet")


def standin(directory: Path, name: str, script: str) -> Path:
    """An executable `name` in `directory` that runs tests/<script> with this interpreter (as trtexec would run)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / script}" "$@"\n')
    path.chmod(0o755)
    return path
