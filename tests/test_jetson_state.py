"""A Jetson's power mode and clocks around each job, and `agent serve --power-mode`: faked sysfs, the nvpmodel
stand-in (its state under EDGEPROF_SYSFS_ROOT as the real tool keeps it), real agents and `host profile`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.jetson_state import (
    JetsonBoardState,
    clocks_pinned,
    parse_conf_modes,
    parse_query,
    read_clocks,
    read_power_mode,
)
from agent.power_mode import PowerModeControl, PowerModeRefused
from tests.conftest import console_script
from tests.faultlib import REPO, AgentProc, isolated_env
from tests.jetson_fakes import GPU_DEVFREQ, build_orin_board, standin


def test_nvpmodel_query_and_conf_are_read_as_jetpack_prints_them() -> None:
    query = "NV Fan Mode:quiet\nNV Power Mode: MODE_15W_DESKTOP\n7\nNVPM ERROR: Error opening /sys/kernel/x: 13\n"
    assert parse_query(query) == ("MODE_15W_DESKTOP", 7)
    assert parse_query("NVPM VERB: Current mode: NV Power Mode: MAXN\n0\n") == ("MAXN", 0)
    conf = "# MAXN is the NONE power model\n< POWER_MODEL ID=0 NAME=MAXN >\n#< POWER_MODEL ID=9 NAME=X >\n"
    assert parse_conf_modes(conf + "< POWER_MODEL NAME=MODE_15W ID=3 >\n") == {0: "MAXN", 3: "MODE_15W"}


def test_power_mode_from_the_status_file_where_nvpmodel_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_orin_board(tmp_path, pinned=True, mode=1)
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tmp_path))
    mode = read_power_mode(None)
    assert mode is not None and (mode.name, mode.mode_id) == ("7W", 1)
    assert mode.source == "/var/lib/nvpmodel/status"


@pytest.mark.parametrize("pinned", [True, False])
def test_clocks_count_as_pinned_only_when_every_domain_sits_at_its_maximum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned: bool
) -> None:
    build_orin_board(tmp_path, pinned=pinned)
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tmp_path))
    clocks = {c.name: c for c in read_clocks()}
    assert set(clocks) == {"gpu", "emc", "dla0", "dla1", "cpu"}
    verdict, floating = clocks_pinned(list(clocks.values()))
    assert verdict is pinned
    if not pinned:
        assert floating == [
            "gpu 306-625 MHz", "emc 204-2133 MHz", "dla0 204-614 MHz", "dla1 204-614 MHz", "cpu 115-1510 MHz"
        ]  # fmt: skip


def test_board_state_notes_the_clocks_before_and_after_and_a_mode_changed_under_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_orin_board(tmp_path, pinned=False)
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tmp_path))
    state = JetsonBoardState(nvpmodel=str(standin(tmp_path / "bin", "nvpmodel", "nvpmodel_standin.py")))
    state.begin()
    (tmp_path / GPU_DEVFREQ.lstrip("/") / "cur_freq").write_text("624750000\n")  # DVFS raised the clock meanwhile
    (tmp_path / "var/lib/nvpmodel/status").write_text("pmode:0001 fmode:quiet\n")  # someone ran nvpmodel -m 1
    notes = state.end()
    assert notes["jetson.gpu_mhz_before"] == "306.0" and notes["jetson.gpu_mhz_after"] == "624.8"
    assert notes["jetson.power_mode"] == "7W" and notes["jetson.power_mode_source"] == "nvpmodel -q"
    assert notes["jetson.power_mode_changed"] == "during the job: 15W (0) -> 7W (1)"
    assert notes["jetson.clocks_pinned"] == "false"


@pytest.fixture
def board(tmp_path: Path) -> Iterator[dict[str, object]]:
    root = tmp_path / "sys"
    build_orin_board(root, pinned=True)
    env = {
        "EDGEPROF_SYSFS_ROOT": str(root),
        "EDGEPROF_NVPMODEL": str(standin(tmp_path / "bin", "nvpmodel", "nvpmodel_standin.py")),
        "EDGEPROF_STANDIN_REBOOT_MODES": "2",
    }
    yield {"root": root, "env": env, "tmp": tmp_path}


def _profile(address: str, model: Path, out: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("host"), "profile", str(model), "--device", address, "--runs", "10", "--min-duration", "0.2",
         "--idle", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=180, env=isolated_env(tmp / "host-env"),
    )  # fmt: skip


def test_power_mode_is_set_for_the_job_recorded_and_restored_after(
    board: dict[str, object], squeezenet: Path, tmp_path: Path
) -> None:
    agent = AgentProc(tmp_path, "--profile", "jetson-orin-nano", "--power-mode", "1", env=board["env"])  # type: ignore[arg-type]
    agent.start()
    try:
        done = _profile(agent.address, squeezenet, tmp_path / "r.json", tmp_path)
    finally:
        agent.stop()
    assert done.returncode == 0, done.stderr
    (dev,) = json.loads((tmp_path / "r.json").read_text())["devices"]
    jetson = dev["jetson"]
    assert (jetson["power_mode"], jetson["power_mode_id"]) == ("7W", 1)
    assert jetson["power_mode_set"] == "7W (1) for this job (was 15W (0))"
    assert jetson["power_mode_restore"] == "restored to 15W (0)"
    assert jetson["clocks_mhz"]["after"]["gpu"] == pytest.approx(408.0)  # mode 1 caps the GPU at 408 MHz
    assert (Path(str(board["root"])) / "var/lib/nvpmodel/status").read_text().startswith("pmode:0000")


def test_a_mode_that_needs_a_reboot_fails_the_job_in_one_line_and_changes_nothing(
    board: dict[str, object], squeezenet: Path, tmp_path: Path
) -> None:
    agent = AgentProc(tmp_path, "--profile", "jetson-orin-nano", "--power-mode", "2", env=board["env"])  # type: ignore[arg-type]
    agent.start()
    try:
        done = _profile(agent.address, squeezenet, tmp_path / "r.json", tmp_path)
    finally:
        agent.stop()
    assert done.returncode == 1
    (dev,) = json.loads((tmp_path / "r.json").read_text())["devices"]
    assert dev["error"] == "power mode 2 could not be set for this job: it needs a reboot to take effect"
    assert (Path(str(board["root"])) / "var/lib/nvpmodel/status").read_text().startswith("pmode:0000")


def _serve(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "serve", "--listen", "127.0.0.1:0", "--no-advertise", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


@pytest.mark.parametrize("sudo", ["none", "password required", "allowed"])
def test_power_mode_without_root_needs_passwordless_sudo_or_refuses_in_one_line(
    board: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sudo: str
) -> None:
    for key, value in board["env"].items():  # type: ignore[attr-defined]
        monkeypatch.setenv(key, value)
    path = tmp_path / "path"
    path.mkdir()
    if sudo != "none":  # a sudo that, like the real one with -n, fails at once when it would ask for a password
        script = 'echo "sudo: a password is required" >&2; exit 1' if sudo == "password required" else 'exec "$@"'
        (path / "sudo").write_text(f'#!/bin/sh\n[ "$1" = -n ] && shift\n{script}\n')
        (path / "sudo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{path}:/usr/bin:/bin")
    if sudo == "allowed":
        control = PowerModeControl.checked(1, euid=1000)
        assert control.prefix == [str(path / "sudo"), "-n"]
        return
    with pytest.raises(PowerModeRefused) as err:
        PowerModeControl.checked(1, euid=1000)
    assert str(err.value).startswith("--power-mode 1 needs root: nvpmodel sets clocks only as root")
    assert "\n" not in str(err.value)


def test_power_mode_refused_on_a_board_that_is_not_a_jetson_or_for_an_unknown_mode(
    board: dict[str, object], tmp_path: Path
) -> None:
    env = isolated_env(tmp_path, **board["env"])  # type: ignore[arg-type]
    unknown = _serve(["--profile", "jetson-orin-nano", "--power-mode", "5", "--data-dir", str(tmp_path / "d")], env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "agent: --power-mode 5: this board's nvpmodel.conf has modes 0 (15W), 1 (7W), 2 (MAXN_SUPER)"
    )
    env.pop("EDGEPROF_SYSFS_ROOT")
    not_jetson = _serve(["--profile", "generic-linux", "--power-mode", "0", "--data-dir", str(tmp_path / "d")], env)
    assert not_jetson.returncode == 2 and "--power-mode is for Jetson boards" in not_jetson.stderr
