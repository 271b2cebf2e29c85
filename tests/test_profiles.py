"""Device profiles: every shipped profile loads, user profiles take precedence, each board is detected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sensor_fakes import (
    build_agx_orin,
    build_android_battery,
    build_jetson_nano,
    build_orin_nano,
    build_rapl_zone,
    build_xavier_nx,
    write,
    write_dt_model,
)

from agent.device.profiles import detect_profile_name, list_profiles, load_profile

SHIPPED = [
    "android-generic",
    "android-mediatek",
    "android-qualcomm",
    "android-tensor",
    "generic-linux",
    "jetson-agx-orin",
    "jetson-nano",
    "jetson-orin-nano",
    "jetson-xavier-nx",
    "nvidia-dgpu",
    "rpi4",
    "rpi5",
    "x86-rapl",
]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(root))
    monkeypatch.delenv("EDGEPROF_PROFILES_DIR", raising=False)
    return root


def test_every_shipped_profile_is_listed(root: Path) -> None:
    assert list_profiles() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_is_complete(root: Path, name: str) -> None:
    profile = load_profile(name)

    assert profile.name == name and profile.description
    assert profile.runtime in ("onnxruntime", "tflite")
    assert profile.providers[-1] == "CPUExecutionProvider"
    assert profile.compile["format"] in ("onnx", "tflite")
    assert set(profile.power_sensors) <= {"usbmeter", "ina3221", "rpi_pmic", "android", "rapl", "nvml"}


def test_jetson_rail_tables_use_the_boards_real_labels(root: Path) -> None:
    assert dict(load_profile("jetson-nano").rails) == {
        "POM_5V_IN": "total",
        "POM_5V_GPU": "gpu",
        "POM_5V_CPU": "cpu",
    }
    assert load_profile("jetson-orin-nano").rails["VDD_IN"] == "total"
    assert load_profile("jetson-xavier-nx").rails["VDD_SOC"] == "soc"
    agx = load_profile("jetson-agx-orin")
    assert set(agx.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert agx.options_for("ina3221")["total_from_sum"] is True


def test_a_loaded_profile_cannot_be_changed_in_place(root: Path) -> None:
    profile = load_profile("rpi5")

    with pytest.raises(TypeError):
        profile.rails["pmic"] = "gpu"  # type: ignore[index]
    assert isinstance(profile.detect["model"], tuple)


def test_unknown_profile_names_the_known_ones(root: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown device profile 'jetson-tx9'; known: android-generic, .*x86-rapl"):
        load_profile("jetson-tx9")


def test_user_profiles_dir_adds_and_overrides(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "profiles"
    user.mkdir()
    (user / "rpi5.toml").write_text('name = "rpi5"\ndescription = "lab Pi 5"\nthreads = 2\n')
    (user / "my-board.toml").write_text('description = "custom"\nruntime = "tflite"\n')
    monkeypatch.setenv("EDGEPROF_PROFILES_DIR", str(user))

    assert load_profile("rpi5").threads == 2 and load_profile("rpi5").description == "lab Pi 5"
    assert load_profile("my-board").runtime == "tflite"
    assert "my-board" in list_profiles()


def test_a_broken_profile_file_says_which_file(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "profiles"
    user.mkdir()
    (user / "bad.toml").write_text("runtime = [\n")
    (user / "worse.toml").write_text('runtime = "tensorflow"\n')
    monkeypatch.setenv("EDGEPROF_PROFILES_DIR", str(user))

    with pytest.raises(ValueError, match=r"bad\.toml"):
        load_profile("bad")
    with pytest.raises(ValueError, match="runtime must be"):
        load_profile("worse")


def _dt(model: str, compatible: tuple[str, ...] = ()) -> Callable[[Path], object]:
    return lambda root: write_dt_model(root, model, compatible)


BOARDS: dict[str, Callable[[Path], object]] = {
    "jetson-nano": build_jetson_nano,
    "jetson-xavier-nx": build_xavier_nx,
    "jetson-orin-nano": build_orin_nano,
    "jetson-agx-orin": build_agx_orin,
    "rpi4": _dt("Raspberry Pi 4 Model B Rev 1.4", ("raspberrypi,4-model-b", "brcm,bcm2711")),
    "rpi5": _dt("Raspberry Pi 5 Model B Rev 1.0", ("raspberrypi,5-model-b", "brcm,bcm2712")),
    "android-generic": lambda root: build_android_battery(root, -400_000, 3_850_000),
    "x86-rapl": lambda root: build_rapl_zone(root, "intel-rapl:0", "package-0"),
    "nvidia-dgpu": lambda root: (
        build_rapl_zone(root, "intel-rapl:0", "package-0"),
        write(root, "/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15"),
    ),
    "generic-linux": lambda root: None,
}


@pytest.mark.parametrize("expected", list(BOARDS))
def test_each_boards_tree_detects_its_profile(root: Path, expected: str) -> None:
    BOARDS[expected](root)

    assert detect_profile_name() == expected


def test_orin_nano_is_not_mistaken_for_the_original_nano(root: Path) -> None:
    # "Orin Nano" contains "Nano": the longest matching pattern decides.
    write_dt_model(root, "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super")

    assert detect_profile_name() == "jetson-orin-nano"


def test_a_jetson_without_a_known_model_string_falls_back_to_its_release_file(root: Path) -> None:
    write_dt_model(root, "Some Custom Carrier")
    write(root, "/etc/nv_tegra_release", "# R32 (release), REVISION: 7.4, BOARD: t210ref, EABI: aarch64")

    assert detect_profile_name() == "jetson-nano"


def test_devicetree_under_sys_firmware_is_read_too(root: Path) -> None:
    write(root, "/sys/firmware/devicetree/base/model", b"Raspberry Pi 5 Model B Rev 1.0\0")

    assert detect_profile_name() == "rpi5"
