"""NVML backend over a scripted library seam, and on a real NVIDIA GPU when one is present."""

from __future__ import annotations

import os
import time

import pytest
from sensor_fakes import FakeGpu, FakeNvmlError, ScriptedNvml

from agent.device.profiles import load_profile
from agent.errors import SensorError
from agent.sensors.base import ENERGY_UJ, GPU_MEM_BYTES, POWER_MW
from agent.sensors.nvml import NvmlSensor


def test_energy_counter_is_preferred_and_reported_in_microjoules() -> None:
    gpu = FakeGpu(energy_mj=1_000_000, power_instant_mw=250_000.0, memory_used_bytes=3 << 30)
    library = ScriptedNvml([gpu])
    sensor = NvmlSensor.from_profile(load_profile("nvidia-dgpu"), library)

    first = sensor.read()
    gpu.energy_mj = 1_002_500  # 2.5 J later
    second = sensor.read()

    assert [(ch.name, ch.kind, ch.role) for ch in sensor.channels()] == [
        ("gpu0", ENERGY_UJ, "gpu"),
        ("gpu0_power", POWER_MW, "gpu"),
        ("gpu0_mem", GPU_MEM_BYTES, "gpu"),
    ]
    assert second[0] - first[0] == pytest.approx(2_500_000.0)
    assert second[1:] == [250_000.0, float(3 << 30)]


def test_instantaneous_power_when_the_counter_is_not_supported() -> None:
    gpu = FakeGpu(energy_mj=None, power_instant_mw=71_500.0)
    sensor = NvmlSensor(ScriptedNvml([gpu]))

    assert [(ch.name, ch.kind) for ch in sensor.channels()] == [
        ("gpu0", POWER_MW),
        ("gpu0_mem", GPU_MEM_BYTES),
    ]
    assert sensor.read()[0] == 71_500.0


def test_counter_alone_when_the_driver_has_no_instantaneous_field() -> None:
    library = ScriptedNvml([FakeGpu(energy_mj=5_000, power_instant_mw=None)])
    sensor = NvmlSensor(library)
    library.calls.clear()

    assert sensor.read()[0] == 5_000_000.0
    assert [ch.kind for ch in sensor.channels()] == [ENERGY_UJ, GPU_MEM_BYTES]
    assert "power_instant" not in library.calls


def test_a_gpu_with_neither_reading_is_refused_rather_than_averaged() -> None:
    with pytest.raises(SensorError, match="neither an energy counter nor instantaneous power"):
        NvmlSensor(ScriptedNvml([FakeGpu(energy_mj=None, power_instant_mw=None)]))


def test_nvml_errors_become_sensor_errors_with_the_cause_kept() -> None:
    gpu = FakeGpu()
    sensor = NvmlSensor(ScriptedNvml([gpu]))
    gpu.fail_reads = True

    with pytest.raises(SensorError, match="GPU is lost") as caught:
        sensor.read()

    assert isinstance(caught.value.__cause__, FakeNvmlError)


def test_profile_device_list_restricts_the_gpus() -> None:
    library = ScriptedNvml([FakeGpu(), FakeGpu(), FakeGpu()])
    sensor = NvmlSensor(library, devices=[2])

    assert [ch.name for ch in sensor.channels()] == ["gpu2", "gpu2_power", "gpu2_mem"]
    sensor.close()
    assert not library.initialised


def test_without_pynvml_the_driver_being_present_is_a_clear_problem() -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        with pytest.raises(SensorError, match="pip install nvidia-ml-py"):
            NvmlSensor.from_profile(load_profile("nvidia-dgpu"))
    else:
        pytest.skip("pynvml is installed here")


@pytest.mark.hardware
@pytest.mark.skipif(os.environ.get("EDGEPROF_HARDWARE") != "1", reason="needs a real NVIDIA GPU (EDGEPROF_HARDWARE=1)")
def test_real_gpu_energy_counter_advances_at_a_plausible_power() -> None:
    pytest.importorskip("pynvml")
    sensor = NvmlSensor.from_profile(load_profile("nvidia-dgpu"))
    try:
        t0 = time.monotonic()
        first = sensor.read()
        time.sleep(1.0)  # an idle GPU still draws tens of watts: a second is enough to see it
        second = sensor.read()
        elapsed_s = time.monotonic() - t0
    finally:
        sensor.close()

    energy_channels = [i for i, ch in enumerate(sensor.channels()) if ch.kind == ENERGY_UJ]
    assert energy_channels, "this GPU has no NVML energy counter"
    for i in energy_channels:
        power_w = (second[i] - first[i]) / 1e6 / elapsed_s
        assert 5.0 < power_w < 1500.0
