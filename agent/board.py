"""What the board is: OS, CPU, memory, runtimes and their providers, reproducibility metadata.

Runtimes are probed in a subprocess (`python -m agent.board --probe-runtimes`) so that the agent itself
never imports ONNX Runtime or TFLite: an idle agent stays small, and a broken runtime install cannot
take the agent down.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent import __version__
from agent.sensors.base import under_root


def probe_runtimes(missing: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Name, version, module and providers of each runtime importable here (run in the subprocess).

    `missing`, when given, receives each runtime that is not, with the one-line reason.
    """
    from agent.errors import AgentError
    from agent.runtimes import RUNTIMES, backend

    found = []
    for name in RUNTIMES:
        try:
            runtime = backend(name)
            found.append(
                {
                    "name": name,
                    "version": runtime.version(),
                    "providers": runtime.available_providers(),
                    "module": type(runtime).__module__,
                }
            )
        except (AgentError, ImportError) as err:
            if missing is not None:
                missing[name] = " ".join(str(err).split()) or type(err).__name__
    return found


def probe_via_subprocess(timeout_s: float = 60.0) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(runtimes found, {missing runtime: reason}), probed in a subprocess; both empty when the probe fails."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "agent.board", "--probe-runtimes"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
        probe = json.loads(out)
        return list(probe["found"]), dict(probe["missing"])
    except (subprocess.SubprocessError, ValueError, OSError, KeyError, TypeError):
        return [], {}


def runtimes_via_subprocess(llama_bench: str = "", timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The runtimes found, and the board's llama-bench binary where one is configured (agent serve --llama-bench)."""
    found = probe_via_subprocess(timeout_s)[0]
    if llama_bench:
        found.append(llama_bench_runtime(llama_bench))
    return found


def llama_bench_runtime(path: str) -> dict[str, Any]:
    """The user's llama-bench as a runtime entry: its build shows in each result (it prints no version alone)."""
    return {"name": "llama-bench", "version": "", "providers": ["CPU"], "module": path}


def _read(path: str) -> str:
    try:
        return under_root(path).read_text(errors="replace").strip().strip("\x00")
    except OSError:
        return ""


def _read_file(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine()


def ram_bytes() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def board_model() -> str:
    return _read("/proc/device-tree/model") or _read("/sys/devices/virtual/dmi/id/product_name")


def reproducibility_metadata() -> dict[str, str]:
    """Settings that change the numbers: governor, frequencies, Jetson power mode, kernel."""
    meta: dict[str, str] = {"kernel": platform.release(), "python": platform.python_version()}
    cpufreq = under_root("/sys/devices/system/cpu")
    governors: set[str] = set()
    max_khz: set[str] = set()
    for cpu in sorted(cpufreq.glob("cpu[0-9]*/cpufreq")):
        governors.add(_read_file(cpu / "scaling_governor"))
        max_khz.add(_read_file(cpu / "scaling_max_freq"))
    governors.discard("")
    max_khz.discard("")
    if governors:
        meta["cpu_governor"] = ",".join(sorted(governors))
    if max_khz:
        meta["cpu_max_freq_khz"] = ",".join(sorted(max_khz, key=int))
    int8_dot = cpu_int8_dot()
    if int8_dot is not None:
        meta["cpu_int8_dot"] = "yes" if int8_dot else "no"
    tegra = _read("/etc/nv_tegra_release")
    if tegra:
        meta["nv_tegra_release"] = tegra.splitlines()[0]
        mode = _nvpmodel()
        if mode:
            meta["nvpmodel"] = mode
    return meta


#: CPU flags (/proc/cpuinfo) of int8 dot-product instructions, which int8 kernels need to beat float ones:
#: x86 VNNI / AMX, Arm's SDOT/UDOT ("asimddp") and the int8 matrix multiply ("i8mm").
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})


def cpu_int8_dot() -> bool | None:
    """Whether the CPU has int8 dot-product instructions; None when /proc/cpuinfo cannot be read."""
    text = _read("/proc/cpuinfo")
    if not text:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags |= set(value.split())
    return bool(flags & INT8_DOT_FLAGS)


def _nvpmodel() -> str:
    if os.environ.get("EDGEPROF_SYSFS_ROOT", "/") != "/":
        return ""
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(out.split())


def describe(profile: str, runtimes: list[dict[str, Any]]) -> dict[str, Any]:
    """The board as a plain dict (the servicer turns it into DeviceInfo)."""
    return {
        "hostname": socket.gethostname(),
        "os": os_name(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count() or 0,
        "ram_bytes": ram_bytes(),
        "runtimes": runtimes,
        "profile": profile,
        "agent_version": __version__,
        "board": board_model(),
        "metadata": reproducibility_metadata(),
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe-runtimes"]:
        absent: dict[str, str] = {}
        print(json.dumps({"found": probe_runtimes(absent), "missing": absent}))
    else:
        print(json.dumps(describe("?", probe_runtimes()), indent=2))
