"""`agent serve --adb SERIAL`: what the agent needs from one phone (profile, description, job backend)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.adb import ort_perf, runners
from agent.adb.backend import SENSOR, PhoneBackend
from agent.adb.describe import PhoneInfo, describe
from agent.adb.phone import Phone, PhoneUnavailable

if TYPE_CHECKING:
    from agent.profiles import DeviceProfile

#: How long a phone description is reused by Describe before it is read again (battery state changes).
REFRESH_S = 30.0


class PhoneBridge:
    """One attached phone; `connect` checks that adb sees it and reads what it is."""

    def __init__(self, phone: Phone, info: PhoneInfo, delegate: str) -> None:
        self.phone = phone
        self.info = info
        self.delegate = delegate
        self._runners: dict[str, runners.Runner] = {}
        self._read_at = 0.0

    @classmethod
    def connect(cls, serial: str, delegate: str = "") -> PhoneBridge:
        phone = Phone(serial)
        phone.check()
        bridge = cls(phone, describe(phone), delegate)
        bridge._runners = runners.installed(phone)
        bridge._read_at = time.monotonic()
        return bridge

    @property
    def profile_name(self) -> str:
        return self.info.profile_name()

    def backend(self, profile: DeviceProfile) -> PhoneBackend:
        delegate = self.delegate or next(iter(profile.providers), "")
        if delegate == "CPUExecutionProvider":
            delegate = "xnnpack"
        return PhoneBackend(
            self.phone,
            self.info,
            delegate,
            profile.options_for("android"),
            thermal_zones=profile.thermal_zones,
            max_temp_c=profile.max_temp_c,
        )

    def refresh(self) -> None:
        """Read the phone again if the last description is old; keep the old one if the phone is away."""
        if time.monotonic() - self._read_at < REFRESH_S:
            return
        self._read_at = time.monotonic()
        try:
            self.info = describe(self.phone)
            self._runners = runners.installed(self.phone)
        except PhoneUnavailable:
            pass

    def board(self, profile: DeviceProfile) -> dict[str, Any]:
        """The phone in the shape of agent/board.py's describe(), for DeviceInfo."""
        info = self.info
        bench = self._runners.get(runners.BENCHMARK_MODEL)
        runtimes = []
        if bench is not None:
            runtimes.append(
                {"name": "tflite", "version": bench.version, "providers": list(profile.providers), "module": bench.path}
            )
        ort = self._runners.get(runners.ORT_PERF_TEST)
        if ort is not None:  # the host sends ONNX models as they are (the profile's compile.onnx_runtime)
            runtimes.append(
                {
                    # Its own name, not "onnxruntime": a Termux agent with ONNX Runtime's Python package
                    # reports that, and its TFLite profile still wants ONNX models converted.
                    "name": runners.ORT_PERF_TEST,
                    "version": ort.version,
                    "providers": list(ort_perf.PROVIDERS),
                    "module": ort.path,
                }
            )
        llama = self._runners.get(runners.LLAMA_BENCH)
        if llama is not None:  # GGUF models (agent/adb/llama_phone.py)
            runtimes.append(
                {"name": runners.LLAMA_BENCH, "version": llama.version, "providers": ["CPU"], "module": llama.path}
            )
        return {
            "hostname": f"{info.model or 'android'} ({info.serial})",
            "os": info.android,
            "kernel": info.props.get("ro.build.fingerprint", ""),
            "machine": info.abi,
            "cpu_model": info.soc,
            "cpu_cores": len(info.cpu_max_khz),
            "ram_bytes": info.ram_bytes,
            "profile": profile.name,
            "agent_version": __version__,
            "board": info.model,
            "runtimes": runtimes,
        }

    def metadata(self) -> dict[str, str]:
        info = self.info
        return {
            "adb_serial": info.serial,
            "soc": info.soc,
            "cpu_clusters": info.clusters,
            "big_cores": ",".join(map(str, info.big_cores)),
            "battery": info.battery_status,
            "powered_by": ",".join(info.powered_by) or "battery",
            "runners": ",".join(sorted(f"{r.name} {r.version}".strip() for r in self._runners.values())),
        }

    @staticmethod
    def sensor_channels() -> list[dict[str, Any]]:
        return [{"name": "battery", "kind": "power_mw", "role": "total", "sensor": SENSOR, "max_rate_hz": 10.0}]
