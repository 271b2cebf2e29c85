"""Phones over adb when things go wrong: charging, other gauge units, a crashing runner, a pulled cable,
a delegate that rejects the model, and two phones on one bridge computer as a fleet."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from pathlib import Path

import psutil
import pytest

from protos import agent_pb2 as pb
from tests.adb_emulator import PhoneConfig
from tests.faultlib import wait_for
from tests.test_adb_bridge import adb_port, agent_cli, attach, bridge, detach, profile  # noqa: F401 - adb_port: fixture


def _run_one(port: str, tmp: Path, model: Path, config: PhoneConfig, *agent_args: str) -> tuple[dict, str]:
    phone = attach(port, tmp, config=config)
    (tmp / "agent").mkdir()
    agent = bridge(tmp, port, phone, "agent", *agent_args).start(timeout_s=60)
    try:
        run = profile(port, model, tmp / "r.json", agent.address)
    finally:
        agent.stop()
        detach(port, phone)
    (dev,) = run["result"]["devices"]
    return dev, run["proc"].stderr


def test_charging_phone_measures_valid_latency_and_refuses_energy_with_one_warning(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    dev, _ = _run_one(adb_port, tmp_path, tflite_model, PhoneConfig(status="Charging", usb_online=True))
    assert dev["status"] == "ok" and dev["latency_ms"]["p50"] > 0
    refused = dev["energy"]["refused"]
    assert refused.startswith("energy refused: the phone is charging or USB-powered (battery Charging, usb online)")
    assert refused.endswith("use adb over Wi-Fi, or a hub that cuts VBUS")
    assert dev["energy"]["energy_mj_per_inference"] is None and dev["energy"]["problem"] is None
    # Absent by design, not broken: a warning, never a reason the latency is not valid.
    assert f"energy not measured: {refused}" in dev["validity"]["warnings"]
    assert not [r for r in dev["validity"]["reasons"] if "energy" in r]


def test_milliamp_gauge_positive_while_discharging_gives_the_same_power(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    dev, _ = _run_one(adb_port, tmp_path, tflite_model, PhoneConfig(gauge_unit="mA", discharge_negative=False))
    assert dev["status"] == "ok", dev["error"]
    assert dev["notes"]["gauge"] == "current_now in mA, voltage_now in mV, positive while discharging"
    assert dev["energy"]["problem"] is None, dev["energy"]["problem"]
    assert dev["energy"]["idle_power_w"] == pytest.approx(1.17, rel=0.05)


def test_runner_that_crashes_ends_the_job_with_one_line(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    # Invocation 1 loads the model, 2 warms up, 3 is the first measure block.
    dev, stderr = _run_one(adb_port, tmp_path, tflite_model, PhoneConfig(runner={"crash_on_invocation": 3}))
    assert dev["status"] == "error"
    assert dev["error"].startswith("benchmark_model crashed (SIGSEGV) during measure (measure block 1)")
    assert dev["error_kind"] == "crash"
    assert "Traceback" not in stderr


def test_runner_that_prints_no_run_statistics_ends_the_job_saying_what_is_missing(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    dev, stderr = _run_one(adb_port, tmp_path, tflite_model, PhoneConfig(runner={"omit_lines": ["count="]}))
    assert dev["status"] == "error" and dev["error_kind"] == "crash"
    assert dev["error"].startswith(
        "benchmark_model printed no statistics of measured runs during prepare (loading the model): "
    )
    assert "Traceback" not in stderr


def test_delegate_that_rejects_the_model_says_so(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    config = PhoneConfig(runner={"reject_delegates": ["gpu"]})
    dev, _ = _run_one(adb_port, tmp_path, tflite_model, config, "--delegate", "gpu")
    assert dev["status"] == "error"
    assert dev["error"].startswith("the gpu delegate rejected the model on phone 127.0.0.1:")
    assert dev["error"].endswith(": Failed to apply GPU delegate.")
    assert dev["error_kind"] == "invalid_model"


@pytest.mark.parametrize("taken", [0, 31])
def test_delegate_that_takes_no_node_ends_the_job_instead_of_measuring_the_cpu(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
    taken: int,
) -> None:
    phone = attach(adb_port, tmp_path, config=PhoneConfig(runner={"external_delegate_nodes": [taken, 31]}))
    library = tmp_path / "libQnnTFLiteDelegate.so"
    library.write_bytes(b"\x7fELF stand-in")
    agent_cli(adb_port, "adb", "install-runner", str(library), "--serial", phone.serial, check=True)
    (tmp_path / "agent").mkdir()
    agent = bridge(tmp_path, adb_port, phone, "agent", "--delegate", "qnn").start(timeout_s=60)
    try:
        run = profile(adb_port, tflite_model, tmp_path / "r.json", agent.address)
    finally:
        agent.stop()
        detach(adb_port, phone)
    (dev,) = run["result"]["devices"]
    if taken:  # the whole graph on the delegate: measured, and the result says how much it took
        assert dev["status"] == "ok", dev["error"]
        assert dev["notes"]["delegated_nodes"] == "31 of 31"
        return
    assert run["proc"].returncode == 1
    assert dev["status"] == "error" and dev["error_kind"] == "invalid_model"
    assert dev["error"] == (
        f"the qnn delegate was not used on phone {phone.serial}, benchmark_model would measure the CPU instead:"
        " TfLiteQnnDelegate delegate: 0 nodes delegated out of 31 nodes with 0 partitions."
    )


def test_phone_unplugged_mid_run_fails_the_job_and_the_agent_keeps_serving(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    phone = attach(adb_port, tmp_path, config=PhoneConfig(runner={"hang_on_invocation": 3}))
    (tmp_path / "agent").mkdir()
    agent = bridge(tmp_path, adb_port, phone).start(timeout_s=60)
    pulled = threading.Thread(
        target=lambda: (
            wait_for(lambda: (phone.root / "run/hanging").exists(), 120, "the runner to hang"),
            phone.unplug(),
        )
    )
    pulled.start()
    try:
        run = profile(adb_port, tflite_model, tmp_path / "r.json", agent.address)
        pulled.join(timeout=130)
        (dev,) = run["result"]["devices"]
        assert run["proc"].returncode == 1
        assert dev["status"] == "error"
        assert dev["error"].startswith(f"phone {phone.serial} disconnected during measure (measure block 1)")
        assert dev["error_kind"] == "device_lost"
        with agent.client() as client:  # the bridge still answers, from what it knew of the phone
            assert client.describe().metadata["adb_serial"] == phone.serial
        assert agent.proc is not None and agent.proc.poll() is None
    finally:
        agent.stop()
        detach(adb_port, phone)


def test_fleet_of_two_phones_on_one_bridge_computer(adb_port: str, tflite_model: Path, tmp_path: Path) -> None:  # noqa: F811
    phones = [attach(adb_port, tmp_path, name=f"phone{i}") for i in range(2)]
    agents = []
    for i, phone in enumerate(phones):
        (tmp_path / f"agent{i}").mkdir()
        agents.append(bridge(tmp_path, adb_port, phone, f"agent{i}").start(timeout_s=60))
    config = tmp_path / "edgeprof.toml"
    config.write_text(f"[fleets.phones]\nagents = {json.dumps([a.address for a in agents])}\n")
    try:
        run = profile(adb_port, tflite_model, tmp_path / "r.json", extra=("--fleet", "phones"), config=config)
    finally:
        for agent in agents:
            agent.stop()
        for phone in phones:
            detach(adb_port, phone)
    assert run["proc"].returncode == 0, run["proc"].stderr
    devices = run["result"]["devices"]
    assert len(devices) == 2
    for dev in devices:
        assert dev["status"] == "ok", dev["error"]
        assert dev["energy"]["energy_mj_per_inference"] > 0
    serials = {d["board"]["metadata"]["adb_serial"] for d in devices}
    assert serials == {p.serial for p in phones}


def test_serving_a_phone_that_is_not_attached_stops_with_one_line(adb_port: str, tmp_path: Path) -> None:  # noqa: F811
    proc = agent_cli(
        adb_port, "serve", "--adb", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--no-advertise",
        "--data-dir", str(tmp_path / "d"),
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "agent: phone 127.0.0.1:9 is not ready (adb says gone): attach it, accept the USB debugging prompt,"
        " or `adb connect` it"
    )


def test_runner_for_another_abi_is_refused_by_install_runner(adb_port: str, tmp_path: Path) -> None:  # noqa: F811
    phone = attach(adb_port, tmp_path)
    wrong = tmp_path / "x86" / "benchmark_model"
    wrong.parent.mkdir()
    wrong.write_text('#!/bin/sh\necho "$0: cannot execute binary file: Exec format error"\nexit 126\n')
    try:
        proc = agent_cli(adb_port, "adb", "install-runner", str(wrong), "--serial", phone.serial)
    finally:
        detach(adb_port, phone)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"agent: benchmark_model does not run on phone {phone.serial} (exit 126: ")
    assert line.endswith("Exec format error): is it built for this phone's ABI?")


def test_cancel_while_the_phone_runs_ends_the_job_and_its_runner(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    phone = attach(adb_port, tmp_path, config=PhoneConfig(runner={"hang_on_invocation": 3}))
    (tmp_path / "agent").mkdir()
    agent = bridge(tmp_path, adb_port, phone).start(timeout_s=60)
    hanging = phone.root / "run/hanging"
    try:
        with agent.client() as client:
            sha = hashlib.sha256(tflite_model.read_bytes()).hexdigest()
            client.upload(tflite_model, sha, "tflite")
            request = pb.ProfileRequest(
                job_id=uuid.uuid4().hex, model_sha256=sha, model_format="tflite", runs=40, warmup=2
            )
            ends = []

            def read() -> None:
                ends.extend(b.end for b in client.profile(request, timeout_s=180) if b.HasField("end"))

            reader = threading.Thread(target=read)
            reader.start()
            wait_for(hanging.exists, 120, "the phone's runner to reach the first measure block")
            runner_pid = int(hanging.read_text())
            client.cancel(request.job_id)
            reader.join(timeout=60)
        assert [e.status for e in ends] == [pb.JobEnd.CANCELLED], ends
        assert ends[0].error == "cancelled during measure after 0 measured inferences"
        wait_for(lambda: not psutil.pid_exists(runner_pid), 30, "the phone's runner to be ended")
    finally:
        agent.stop()
        detach(adb_port, phone)


def test_op_profile_with_a_benchmark_model_that_prints_no_operator_table_says_so(
    adb_port: str,  # noqa: F811
    tflite_model: Path,
    tmp_path: Path,
) -> None:
    # The emulated benchmark_model has no per-operator timings to print (LiteRT's Python API gives none): the
    # bridge's extra profiled invocation runs, finds no table, and the result says so instead of a made-up one.
    phone = attach(adb_port, tmp_path)
    (tmp_path / "agent").mkdir()
    agent = bridge(tmp_path, adb_port, phone).start(timeout_s=60)
    try:
        run = profile(adb_port, tflite_model, tmp_path / "r.json", agent.address, extra=("--op-profile",))
    finally:
        agent.stop()
        detach(adb_port, phone)
    (dev,) = run["result"]["devices"]
    assert dev["status"] == "ok", dev["error"]
    assert dev["notes"]["op_profile"] == (
        "benchmark_model printed no operator table (a build without profiling support?)"
    )
    assert "op_profile" not in dev
    invocations = int((phone.root / "run/invocations").read_text())
    assert invocations == 2 + int(dev["notes"]["blocks"]) + 1  # load, warmup, the blocks, the profiled run
