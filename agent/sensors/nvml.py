"""NVIDIA GPUs through NVML: the total-energy counter, else instantaneous power; GPU memory in use."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent.errors import SensorError
from agent.sensors.base import ENERGY_UJ, GPU_MEM_BYTES, POWER_MW, Channel, Sensor, under_root

if TYPE_CHECKING:
    from device_profiles import DeviceProfile

log = logging.getLogger(__name__)

#: nvml.h: instantaneous power (mW), as opposed to nvmlDeviceGetPowerUsage's 1-s average on Ampere+.
FI_DEV_POWER_INSTANT = 186
NVIDIA_DRIVER_FILE = "/proc/driver/nvidia/version"


class NvmlLibrary:
    """The few NVML calls edgeprof uses, over pynvml. Tests pass an object with the same methods.

    Methods raise ``self.Error`` (pynvml.NVMLError) as the library does; NvmlSensor translates.
    """

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as err:
            raise SensorError(
                "an NVIDIA driver is present but pynvml is not installed: pip install nvidia-ml-py"
            ) from err
        self._nvml: Any = pynvml
        self.Error: type[Exception] = pynvml.NVMLError
        self._instant_field = int(getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", FI_DEV_POWER_INSTANT))

    def init(self) -> None:
        self._nvml.nvmlInit()

    def shutdown(self) -> None:
        self._nvml.nvmlShutdown()

    def device_count(self) -> int:
        return int(self._nvml.nvmlDeviceGetCount())

    def handle(self, index: int) -> Any:
        return self._nvml.nvmlDeviceGetHandleByIndex(index)

    def name(self, handle: Any) -> str:
        name = self._nvml.nvmlDeviceGetName(handle)
        return name.decode() if isinstance(name, bytes) else str(name)

    def total_energy_mj(self, handle: Any) -> int:
        """Energy since the driver loaded, in mJ (Volta and newer)."""
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def power_instant_mw(self, handle: Any) -> float | None:
        """Instantaneous power in mW, None where the driver does not offer the field."""
        (value,) = self._nvml.nvmlDeviceGetFieldValues(handle, [self._instant_field])
        if value.nvmlReturn != self._nvml.NVML_SUCCESS:
            return None
        return float(value.value.uiVal)

    def memory_used_bytes(self, handle: Any) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(handle).used)


class NvmlSensor(Sensor):
    """Per GPU: energy counter in µJ and instantaneous power in mW where each exists, memory in use.

    Never the 1-s averaged nvmlDeviceGetPowerUsage: it lags and undershoots short phases by several %.
    """

    backend = "nvml"
    # The energy counter moves in ~100 ms steps and costs ~2.5 ms a call; instantaneous power
    # refreshes at ~50 Hz. Faster sampling would only repeat values.
    max_rate_hz = 50.0

    def __init__(
        self,
        library: Any,
        devices: Sequence[int] | None = None,
        roles: Mapping[str, str] | None = None,
    ) -> None:
        self._lib = library
        roles = roles or {}
        self._gpus: list[tuple[Any, bool, bool]] = []  # (handle, energy counter, instantaneous power)
        self._channels: list[Channel] = []
        try:
            library.init()
            indices = list(devices) if devices else list(range(library.device_count()))
            if not indices:
                raise SensorError("NVML reports no GPU")
            for index in indices:
                handle = library.handle(index)
                counter = self._has_counter(handle)
                instant = library.power_instant_mw(handle) is not None
                if not counter and not instant:
                    raise SensorError(
                        f"GPU {index} ({library.name(handle)}) has neither an energy counter nor "
                        "instantaneous power in NVML (the 1-s average is not used for energy)"
                    )
                name = f"gpu{index}"
                role = roles.get(name, "gpu")
                if counter:
                    self._channels.append(Channel(name, ENERGY_UJ, role))
                    if instant:
                        # Beside the counter, for power-over-time traces; energy comes from the counter.
                        self._channels.append(Channel(f"{name}_power", POWER_MW, role))
                else:
                    self._channels.append(Channel(name, POWER_MW, role))
                self._channels.append(Channel(f"{name}_mem", GPU_MEM_BYTES, roles.get(f"{name}_mem", "gpu")))
                self._gpus.append((handle, counter, instant))
        except library.Error as err:
            raise SensorError(f"NVML: {err}") from err

    def _has_counter(self, handle: Any) -> bool:
        try:
            self._lib.total_energy_mj(handle)
        except self._lib.Error as err:
            log.info("NVML total energy counter unavailable (%s); using instantaneous power", err)
            return False
        return True

    @classmethod
    def is_available(cls) -> bool:
        return under_root(NVIDIA_DRIVER_FILE).is_file()

    @classmethod
    def from_profile(cls, profile: DeviceProfile, library: Any = None) -> NvmlSensor:
        options = profile.options_for(cls.backend)
        devices = [int(d) for d in options.get("devices", [])]
        return cls(library if library is not None else NvmlLibrary(), devices, profile.rails)

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def read(self) -> Sequence[float]:
        values: list[float] = []
        try:
            for handle, counter, instant in self._gpus:
                if counter:
                    values.append(self._lib.total_energy_mj(handle) * 1000.0)
                if instant:
                    power_mw = self._lib.power_instant_mw(handle)
                    if power_mw is None:
                        raise SensorError("NVML stopped reporting instantaneous power")
                    values.append(power_mw)
                values.append(float(self._lib.memory_used_bytes(handle)))
        except self._lib.Error as err:
            raise SensorError(f"NVML: {err}") from err
        return values

    def close(self) -> None:
        try:
            self._lib.shutdown()
        except self._lib.Error as err:
            log.debug("nvmlShutdown: %s", err)
