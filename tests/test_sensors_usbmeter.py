"""USB power meters on a pty: a simulated UM25C answering 0xF0, and a CSV sketch pushing lines."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sensor_fakes import PtyDevice, open_pty, start_um_simulator, um_frame

from agent.errors import SensorError
from agent.sensors.base import CURRENT_MA, POWER_MW, VOLTAGE_MV
from agent.sensors.usbmeter import (
    UM_MODELS,
    CsvMeter,
    MeterSpec,
    UmMeter,
    decode_um_frame,
    open_power_meter,
    parse_meter_spec,
)

UM25C_5V1_0A8 = um_frame(0x09C9, voltage_raw=5100, current_raw=8000, power_raw_mw=4080)


@pytest.fixture
def um25c() -> Iterator[PtyDevice]:
    # Noise before the reply, and the reply in four pieces as a Bluetooth link delivers it.
    device = start_um_simulator(UM25C_5V1_0A8, garbage=b"\x00\x13\xfe\x55", split_at=(3, 40, 77, 120))
    yield device
    device.close()


def test_um25c_on_a_pty_reads_4_08_w_for_5_1_v_and_0_8_a(um25c: PtyDevice) -> None:
    meter = open_power_meter(f"um25c:{um25c.port}", {"um25c": "total"})
    try:
        power_mw, voltage_mv, current_ma = meter.read()
        again = meter.read()
    finally:
        meter.close()

    assert power_mw / 1000 == pytest.approx(4.08, abs=1e-9)
    assert voltage_mv == pytest.approx(5100.0)
    assert current_ma == pytest.approx(800.0)
    assert again[0] == pytest.approx(4080.0)
    assert um25c.requests == 2
    assert [(ch.name, ch.kind, ch.role) for ch in meter.channels()] == [
        ("um25c", POWER_MW, "total"),
        ("um25c_voltage", VOLTAGE_MV, ""),
        ("um25c_current", CURRENT_MA, ""),
    ]


def test_um24c_and_um34c_use_10_mv_and_1_ma_counts() -> None:
    for model_id in (0x0963, 0x0D4C):
        _, voltage_mv, current_ma = decode_um_frame(um_frame(model_id, 510, 800, 4080))
        assert (voltage_mv, current_ma) == (pytest.approx(5100.0), pytest.approx(800.0))


def test_a_meter_that_never_answers_raises_sensor_error() -> None:
    device = start_um_simulator(UM25C_5V1_0A8, answer=False)
    try:
        import serial

        port = serial.Serial(device.port, timeout=0.05)
        meter = UmMeter(port, UM_MODELS["um25c"], timeout_s=0.3)
        with pytest.raises(SensorError, match="no complete reply"):
            meter.read()
        meter.close()
    finally:
        device.close()


def _push(device: PtyDevice, text: str) -> None:
    os.write(device.master_fd, text.encode())


def test_csv_meter_skips_malformed_lines_and_survives_a_reset() -> None:
    device = open_pty()
    meter = open_power_meter(f"csv:{device.port}@115200")
    assert isinstance(meter, CsvMeter)
    try:
        _push(device, "t_ms,mV,mA\n1000,5000,400\ngarbage\x00\x17\n1010,5010,")  # header, noise, torn
        _push(device, "\n1020,5020,500\n")
        assert meter.wait_for_lines(2, timeout_s=5.0)
        assert meter.read() == [pytest.approx(2510.0), 5020.0, 500.0]
        assert meter.malformed_lines == 3

        _push(device, "5,4900,1000\n")  # the sketch restarted: t_ms went back
        assert meter.wait_for_lines(3, timeout_s=5.0)
        power_mw, voltage_mv, current_ma = meter.read()
    finally:
        meter.close()
        device.close()

    assert (power_mw, voltage_mv, current_ma) == (pytest.approx(4900.0), 4900.0, 1000.0)
    assert meter.resets == 1


def test_csv_meter_without_any_line_raises_instead_of_inventing_a_value() -> None:
    device = open_pty()
    import serial

    meter = CsvMeter(serial.Serial(device.port, timeout=0.05), first_value_timeout_s=0.2)
    try:
        with pytest.raises(SensorError, match="no t_ms,mV,mA line"):
            meter.read()
    finally:
        meter.close()
        device.close()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("um25c:/dev/rfcomm0", MeterSpec("um25c", "/dev/rfcomm0", 9600)),
        ("csv:/dev/ttyACM0@115200", MeterSpec("csv", "/dev/ttyACM0", 115200)),
        ("CSV:/dev/ttyUSB1", MeterSpec("csv", "/dev/ttyUSB1", 115200)),
        ("um34c:/dev/ttyUSB0@9600", MeterSpec("um34c", "/dev/ttyUSB0", 9600)),
    ],
)
def test_meter_spec_parses(spec: str, expected: MeterSpec) -> None:
    assert parse_meter_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/dev/rfcomm0", "expected KIND:PORT"),
        ("um99:/dev/ttyUSB0", "unknown kind 'um99'"),
        ("csv:/dev/ttyACM0@fast", "baud rate 'fast'"),
        ("csv:@115200", "no serial port"),
    ],
)
def test_bad_meter_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_meter_spec(spec)


def test_missing_port_is_a_sensor_error() -> None:
    with pytest.raises(SensorError, match="cannot open power meter port"):
        open_power_meter("um25c:/dev/edgeprof-no-such-port")
