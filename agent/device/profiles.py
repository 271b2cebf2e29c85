"""Which board this agent runs on: its device profile, recognised from what the board presents.

Profiles themselves (the TOML files and their loader) live in `device_profiles`, shared with the host.
"""

from __future__ import annotations

from agent.sensors.base import under_root
from device_profiles import GENERIC_PROFILE, DeviceProfile, list_profiles, load_profile

__all__ = ["GENERIC_PROFILE", "DeviceProfile", "detect_profile_name", "list_profiles", "load_profile"]

#: Where a board names itself; the first that exists wins.
_DT_MODEL_PATHS = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")
_DT_COMPATIBLE_PATHS = ("/proc/device-tree/compatible", "/sys/firmware/devicetree/base/compatible")


def _read_first(paths: tuple[str, ...]) -> str:
    """The first readable file among ``paths`` (under the sysfs root), NULs turned into spaces."""
    for raw in paths:
        try:
            return under_root(raw).read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return ""


def _best_pattern_match(text: str, key: str, profiles: list[DeviceProfile]) -> str | None:
    """The profile with the longest ``detect.<key>`` substring found in ``text`` (most specific wins)."""
    best: tuple[int, str] | None = None
    lowered = text.lower()
    for profile in profiles:
        for pattern in profile.detect.get(key, ()):
            if pattern.lower() in lowered and (best is None or len(pattern) > best[0]):
                best = (len(pattern), profile.name)
    return best[1] if best else None


def _flagged(key: str, profiles: list[DeviceProfile]) -> str | None:
    return next((p.name for p in profiles if p.detect.get(key) is True), None)


def detect_profile_name() -> str:
    """Guess the board's profile from what it presents, all read under EDGEPROF_SYSFS_ROOT.

    In order: device-tree model, device-tree compatible, /etc/nv_tegra_release (a Jetson whose model
    string we do not know), Android, an NVIDIA dGPU driver, RAPL powercap, else "generic-linux".
    """
    profiles = [load_profile(name) for name in list_profiles()]
    model = _read_first(_DT_MODEL_PATHS)
    if model and (found := _best_pattern_match(model, "model", profiles)):
        return found
    compatible = _read_first(_DT_COMPATIBLE_PATHS)
    if compatible and (found := _best_pattern_match(compatible, "compatible", profiles)):
        return found
    release = _read_first(("/etc/nv_tegra_release",))
    if release and (found := _best_pattern_match(release, "nv_tegra_release", profiles)):
        return found
    android = under_root("/system/build.prop").is_file() or under_root("/system/bin/getprop").exists()
    if android and (found := _flagged("android", profiles)):
        return found
    if under_root("/proc/driver/nvidia/version").is_file() and (found := _flagged("nvidia_driver", profiles)):
        return found
    if under_root("/sys/class/powercap/intel-rapl:0").is_dir() and (found := _flagged("rapl", profiles)):
        return found
    return GENERIC_PROFILE
