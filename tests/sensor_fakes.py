"""Sensor hardware, faked: sysfs trees per board, a RAPL writer, pty meters, vcgencmd, scripted NVML."""

from __future__ import annotations

import itertools
import os
import struct
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.sensors.base import POWER_MW, Channel, Sensor


def write(root: Path, path: str, content: str | int | float | bytes) -> Path:
    """Write one sysfs attribute under ``root`` (parents created), like the kernel presents it."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(f"{content}\n")
    return target


def write_dt_model(root: Path, model: str, compatible: Sequence[str] = ()) -> None:
    # The device tree strings end with NUL, and compatible is a NUL-separated list.
    write(root, "/proc/device-tree/model", model.encode() + b"\0")
    if compatible:
        write(root, "/proc/device-tree/compatible", b"\0".join(c.encode() for c in compatible) + b"\0")


# --- Jetson INA3221 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRail:
    label: str
    voltage_mv: int
    current_ma: int

    @property
    def power_mw(self) -> float:
        return self.voltage_mv * self.current_ma / 1000.0


def write_hwmon_ina3221(root: Path, device: str, hwmon: str, rails: Sequence[FakeRail]) -> Path:
    """JetPack 5+: in{1..3}_label, in{N}_input (mV), curr{N}_input (mA), plus the driver's sum channel."""
    base = f"/sys/bus/i2c/drivers/ina3221/{device}/hwmon/{hwmon}"
    write(root, f"{base}/name", "ina3221")
    for n, rail in enumerate(rails, start=1):
        write(root, f"{base}/in{n}_label", rail.label)
        write(root, f"{base}/in{n}_input", rail.voltage_mv)
        write(root, f"{base}/curr{n}_input", rail.current_ma)
        write(root, f"{base}/curr{n}_max", "32760 ma")
        write(root, f"{base}/in{n + 3}_input", 12)  # shunt voltage, no label
    write(root, f"{base}/in7_label", "sum of shunt voltages")
    write(root, f"{base}/in7_input", 40)
    write(root, f"{base}/curr4_input", 9999)  # the sum channel's current: must never become a rail
    return root / base.lstrip("/")


def write_iio_ina3221(root: Path, device: str, iio: str, rails: Sequence[FakeRail]) -> Path:
    """JetPack 4: rail_name_N, in_powerN_input (mW), in_voltageN_input, in_currentN_input."""
    base = f"/sys/bus/i2c/drivers/ina3221x/{device}/{iio}"
    write(root, f"{base}/name", "ina3221x")
    for n, rail in enumerate(rails):
        write(root, f"{base}/rail_name_{n}", rail.label)
        write(root, f"{base}/in_voltage{n}_input", rail.voltage_mv)
        write(root, f"{base}/in_current{n}_input", rail.current_ma)
        write(root, f"{base}/in_power{n}_input", int(rail.power_mw))
    return root / base.lstrip("/")


NANO_RAILS = [
    FakeRail("POM_5V_IN", 5080, 620),
    FakeRail("POM_5V_GPU", 5000, 40),
    FakeRail("POM_5V_CPU", 5000, 180),
]
XAVIER_NX_RAILS = [
    FakeRail("VDD_IN", 5040, 1210),
    FakeRail("VDD_CPU_GPU_CV", 5020, 310),
    FakeRail("VDD_SOC", 5030, 280),
]
ORIN_NANO_RAILS = [
    FakeRail("VDD_IN", 5072, 1024),
    FakeRail("VDD_CPU_GPU_CV", 5064, 180),
    FakeRail("VDD_SOC", 5064, 260),
]
AGX_ORIN_RAILS_A = [
    FakeRail("VDD_GPU_SOC", 5008, 800),
    FakeRail("VDD_CPU_CV", 5016, 400),
    FakeRail("VIN_SYS_5V0", 4992, 600),
]
AGX_ORIN_RAILS_B = [FakeRail("NC", 0, 0), FakeRail("VDDQ_VDD2_1V8AO", 4984, 120), FakeRail("NC", 0, 0)]


def build_jetson_nano(root: Path) -> None:
    write_dt_model(
        root,
        "NVIDIA Jetson Nano Developer Kit",
        ["nvidia,p3450-0000", "nvidia,jetson-nano", "nvidia,tegra210"],
    )
    write(
        root,
        "/etc/nv_tegra_release",
        "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64",
    )
    write_iio_ina3221(root, "6-0040", "iio:device0", NANO_RAILS)


def build_xavier_nx(root: Path) -> None:
    write_dt_model(root, "NVIDIA Jetson Xavier NX Developer Kit", ["nvidia,p3509-0000+p3668-0001", "nvidia,tegra194"])
    write_hwmon_ina3221(root, "7-0040", "hwmon4", XAVIER_NX_RAILS)


def build_orin_nano(root: Path) -> None:
    write_dt_model(root, "NVIDIA Jetson Orin Nano Developer Kit", ["nvidia,p3768-0000+p3767-0005", "nvidia,tegra234"])
    write(
        root,
        "/etc/nv_tegra_release",
        "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64",
    )
    write_hwmon_ina3221(root, "1-0040", "hwmon3", ORIN_NANO_RAILS)


def build_agx_orin(root: Path) -> None:
    write_dt_model(root, "Jetson AGX Orin Developer Kit", ["nvidia,p3737-0000+p3701-0005", "nvidia,tegra234"])
    write_hwmon_ina3221(root, "1-0040", "hwmon3", AGX_ORIN_RAILS_A)
    write_hwmon_ina3221(root, "1-0041", "hwmon4", AGX_ORIN_RAILS_B)


# --- thermal, cpufreq, battery, RAPL -----------------------------------------------------------


def build_thermal(root: Path, zones: Mapping[str, float], passive_trip_c: float | None = None) -> None:
    for n, (zone_type, temp_c) in enumerate(zones.items()):
        base = f"/sys/class/thermal/thermal_zone{n}"
        write(root, f"{base}/type", zone_type)
        write(root, f"{base}/temp", int(temp_c * 1000))
        if passive_trip_c is not None:
            write(root, f"{base}/trip_point_0_type", "passive")
            write(root, f"{base}/trip_point_0_temp", int(passive_trip_c * 1000))
            write(root, f"{base}/trip_point_1_type", "active")
            write(root, f"{base}/trip_point_1_temp", 20000)  # a fan trip: no throttling


def build_cpufreq(root: Path, freqs_khz: Sequence[int], governor: str = "schedutil") -> None:
    for n, khz in enumerate(freqs_khz):
        write(root, f"/sys/devices/system/cpu/cpu{n}/cpufreq/scaling_cur_freq", khz)
        write(root, f"/sys/devices/system/cpu/cpu{n}/cpufreq/scaling_governor", governor)


def build_android_battery(root: Path, current: int, voltage: int, status: str = "Discharging") -> None:
    write(root, "/system/build.prop", "ro.product.model=Pixel 7\n")
    write(root, "/sys/class/power_supply/battery/current_now", current)
    write(root, "/sys/class/power_supply/battery/voltage_now", voltage)
    write(root, "/sys/class/power_supply/battery/status", status)


def build_rapl_zone(root: Path, zone: str, name: str, energy_uj: int = 0, max_range_uj: int = 262143328850) -> Path:
    base = f"/sys/class/powercap/{zone}"
    write(root, f"{base}/name", name)
    write(root, f"{base}/max_energy_range_uj", max_range_uj)
    return write(root, f"{base}/energy_uj", energy_uj)


class RaplCounterWriter(threading.Thread):
    """Advances an energy_uj file at ``power_w`` from its own monotonic clock, wrapping at the range.

    Each write replaces the file atomically (rename), as a reader of the real attribute never sees
    half a number. ``wrapped`` is set once ``wraps_wanted`` wraps have happened.
    """

    def __init__(self, path: Path, power_w: float, max_range_uj: int, wraps_wanted: int, period_s: float = 0.001):
        super().__init__(name="rapl-writer", daemon=True)
        self.path = path
        self.power_w = power_w
        self.max_range_uj = max_range_uj
        self.wraps_wanted = wraps_wanted
        self.period_s = period_s
        self.wraps = 0
        self.wrapped = threading.Event()
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        #: Held while a value is written: a test holding it sees the file and ``last_total_uj`` agree.
        self.lock = threading.Lock()
        self.last_total_uj = 0
        self.last_t = self.t0

    def energy_uj_at(self, t: float) -> float:
        return self.power_w * 1e6 * (t - self.t0)

    def run(self) -> None:
        tmp = self.path.with_name(".energy_uj.tmp")
        while not self.stop.is_set():
            with self.lock:
                now = time.monotonic()
                total_uj = int(self.energy_uj_at(now))
                self.wraps = total_uj // self.max_range_uj
                tmp.write_text(f"{total_uj % self.max_range_uj}\n")
                os.replace(tmp, self.path)
                self.last_total_uj, self.last_t = total_uj, now
            if self.wraps >= self.wraps_wanted:
                self.wrapped.set()
            self.stop.wait(self.period_s)


# --- serial meters on a pty --------------------------------------------------------------------


def um_frame(model_id: int, voltage_raw: int, current_raw: int, power_raw_mw: int, temp_c: int = 27) -> bytes:
    """One 130-byte RDTech UM reply, big-endian, with the fields edgeprof reads and plausible others."""
    frame = bytearray(130)
    struct.pack_into(
        ">HHHIHH", frame, 0, model_id, voltage_raw, current_raw, power_raw_mw, temp_c, temp_c * 9 // 5 + 32
    )
    struct.pack_into(">H", frame, 128, 0xFFF1)
    return bytes(frame)


@dataclass
class PtyDevice:
    """A pseudo-terminal: ``port`` is what the backend opens, ``master_fd`` is the simulated device."""

    master_fd: int
    slave_fd: int
    port: str
    requests: int = 0
    threads: list[threading.Thread] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=2.0)
        os.close(self.slave_fd)
        os.close(self.master_fd)


def open_pty() -> PtyDevice:
    master_fd, slave_fd = os.openpty()
    # The backend opens the port by name; holding our own slave handle keeps the master from
    # reporting EIO (no slave open) before it does.
    return PtyDevice(master_fd, slave_fd, os.ttyname(slave_fd))


def start_um_simulator(
    frame: bytes, garbage: bytes = b"", split_at: Iterable[int] = (), answer: bool = True
) -> PtyDevice:
    """A UM meter: for every 0xF0 it writes ``garbage`` then ``frame`` in pieces cut at ``split_at``."""
    import select

    device = open_pty()
    reply = garbage + frame
    cuts = [0, *sorted(split_at), len(reply)]
    pieces = [reply[a:b] for a, b in itertools.pairwise(cuts) if b > a]

    def serve() -> None:
        while not device.stop.is_set():
            ready, _, _ = select.select([device.master_fd], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(device.master_fd, 64)
            except OSError:
                return
            for _ in range(data.count(0xF0)):
                device.requests += 1
                if not answer:
                    continue
                for piece in pieces:
                    os.write(device.master_fd, piece)
                    time.sleep(0.002)  # let the reader see a partial reply

    thread = threading.Thread(target=serve, name="um-sim", daemon=True)
    device.threads.append(thread)
    thread.start()
    return device


# --- vcgencmd ------------------------------------------------------------------------------------

PI5_PMIC_OUTPUT = """\
     3V7_WL_SW_A current(0)=0.10000000A
       3V3_SYS_A current(1)=0.20000000A
     VDD_CORE_A current(7)=2.00000000A
     3V7_WL_SW_V volt(8)=3.70000000V
       3V3_SYS_V volt(9)=3.30000000V
     VDD_CORE_V volt(15)=0.80000000V
       EXT5V_V volt(24)=5.15000000V
        BATT_V volt(25)=0.00000000V
"""
# 0.1 x 3.7 + 0.2 x 3.3 + 2.0 x 0.8 = 2.63 W; EXT5V and BATT have no current and do not count.
PI5_PMIC_RAW_W = 0.37 + 0.66 + 1.6


def write_fake_vcgencmd(directory: Path, output: str, exit_code: int = 0) -> Path:
    """An executable `vcgencmd` that prints ``output`` for `pmic_read_adc` and fails otherwise."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "vcgencmd.out"
    data.write_text(output)
    script = directory / "vcgencmd"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = pmic_read_adc ]; then cat "{data}"; exit {exit_code}; fi\n'
        'echo "error=1 error_msg=\\"Command not registered\\"" >&2; exit 1\n'
    )
    script.chmod(0o755)
    return script


# --- NVML ----------------------------------------------------------------------------------------


class FakeNvmlError(Exception):
    """Stands for pynvml.NVMLError."""


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int | None = 1_000_000  # None: counter not supported
    power_instant_mw: float | None = 250_000.0  # None: field not supported
    memory_used_bytes: int = 1 << 30
    fail_reads: bool = False  # every call raises, as after a GPU fell off the bus


class ScriptedNvml:
    """The NvmlLibrary interface over scripted GPUs; records calls so tests see which reading was used."""

    Error = FakeNvmlError

    def __init__(self, gpus: Sequence[FakeGpu]) -> None:
        self.gpus = list(gpus)
        self.calls: list[str] = []
        self.initialised = False

    def _gpu(self, handle: Any) -> FakeGpu:
        gpu = self.gpus[handle]
        if gpu.fail_reads:
            raise FakeNvmlError("GPU is lost")
        return gpu

    def init(self) -> None:
        self.initialised = True

    def shutdown(self) -> None:
        self.initialised = False

    def device_count(self) -> int:
        return len(self.gpus)

    def handle(self, index: int) -> Any:
        return index

    def name(self, handle: Any) -> str:
        return self.gpus[handle].name

    def total_energy_mj(self, handle: Any) -> int:
        self.calls.append("total_energy")
        gpu = self._gpu(handle)
        if gpu.energy_mj is None:
            raise FakeNvmlError("Not Supported")
        return gpu.energy_mj

    def power_instant_mw(self, handle: Any) -> float | None:
        self.calls.append("power_instant")
        return self._gpu(handle).power_instant_mw

    def memory_used_bytes(self, handle: Any) -> int:
        return self._gpu(handle).memory_used_bytes


# --- simulated time: the real sampler thread driven by a clock that jumps -----------------------


class SimulatedClock:
    """CLOCK_MONOTONIC for a Sampler (``clock``/``wait``): a wait jumps ahead instead of sleeping.

    The sampler thread then runs its real loop (dither, skipped ticks, read midpoints) as fast as the
    CPU allows, and the samples it takes are the ones it would take in real time. ``wait`` reports
    the sampler stopped once ``end_ns`` is passed.
    """

    def __init__(self, start_ns: int, end_ns: int) -> None:
        self.now_ns = start_ns
        self.end_ns = end_ns
        #: Set when the simulated time has run out (the sampler thread then ends by itself).
        self.finished = threading.Event()

    def clock(self) -> int:
        return self.now_ns

    def wait(self, seconds: float) -> bool:
        self.now_ns += max(0, int(seconds * 1e9))
        if self.now_ns >= self.end_ns:
            self.finished.set()
            return True
        return False

    def run(self, sampler: Any, timeout_s: float = 60.0) -> list[Any]:
        """Start ``sampler``, let it sample until the end of simulated time, return its chunks."""
        sampler.start()
        if not self.finished.wait(timeout_s):
            raise TimeoutError(f"the sampler did not reach the end of simulated time in {timeout_s} s")
        return list(sampler.stop())


class PeriodicLoadSensor(Sensor):
    """A power rail under a periodic load: ``high_w`` for ``duty`` of every ``period_ns``, else ``low_w``.

    Reading takes ``read_ns`` of simulated time and returns the power at its midpoint, as an INA3221
    conversion would. ``dither`` False stands for a sensor that cannot be dithered (a streaming meter).
    """

    backend = "sim"
    max_rate_hz = 1000.0

    def __init__(
        self,
        clock: SimulatedClock,
        period_ns: int,
        duty: float,
        high_w: float,
        low_w: float,
        phase_ns: int = 0,
        read_ns: int = 20_000,
        dither: bool = True,
    ) -> None:
        self.sim = clock
        self.period_ns, self.duty, self.high_w, self.low_w = period_ns, duty, high_w, low_w
        self.phase_ns, self.read_ns, self.dither = phase_ns, read_ns, dither

    def power_w(self, t_ns: int) -> float:
        into = (t_ns - self.phase_ns) % self.period_ns
        return self.high_w if into < self.duty * self.period_ns else self.low_w

    def channels(self) -> Sequence[Channel]:
        return [Channel("VDD_IN", POWER_MW, "total")]

    def read(self) -> Sequence[float]:
        mid = self.sim.now_ns + self.read_ns // 2
        self.sim.now_ns += self.read_ns
        return [self.power_w(mid) * 1e3]


def periodic_inferences(start_ns: int, end_ns: int, period_ns: int, duty: float, phase_ns: int = 0) -> tuple[Any, Any]:
    """Inference windows of a load that starts one every ``period_ns`` (at phase_ns) and runs ``duty`` of it."""
    import numpy as np

    first = phase_ns + -(-(start_ns - phase_ns) // period_ns) * period_ns
    starts = np.arange(first, end_ns - int(duty * period_ns), period_ns, dtype=np.int64)
    return starts, starts + int(duty * period_ns)
