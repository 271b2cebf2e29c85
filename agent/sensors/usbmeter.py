"""External USB power meters over serial: RDTech UM24C/UM25C/UM34C (polled) and CSV `t_ms,mV,mA` sketches."""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import SensorError
from agent.sensors.base import CURRENT_MA, POWER_MW, VOLTAGE_MV, Channel, Sensor

log = logging.getLogger(__name__)

FRAME_BYTES = 130
REQUEST = b"\xf0"


@dataclass(frozen=True)
class UmModel:
    """One RDTech model: its id (first two bytes of every reply) and the units of its raw fields."""

    name: str
    model_id: int
    voltage_mv_per_count: float
    current_ma_per_count: float


# UM25C reports 1 mV and 0.1 mA counts; UM24C and UM34C 10 mV and 1 mA.
UM_MODELS = {
    "um24c": UmModel("um24c", 0x0963, 10.0, 1.0),
    "um25c": UmModel("um25c", 0x09C9, 1.0, 0.1),
    "um34c": UmModel("um34c", 0x0D4C, 10.0, 1.0),
}
_MODEL_BY_ID = {m.model_id.to_bytes(2, "big"): m for m in UM_MODELS.values()}
DEFAULT_BAUD = {"csv": 115200, "um24c": 9600, "um25c": 9600, "um34c": 9600}


@dataclass(frozen=True)
class MeterSpec:
    """A parsed ``--power-meter`` value: ``kind:port[@baud]``."""

    kind: str
    port: str
    baudrate: int


def parse_meter_spec(spec: str) -> MeterSpec:
    """``um25c:/dev/rfcomm0`` or ``csv:/dev/ttyACM0@115200``; ValueError saying what is wrong."""
    kinds = ", ".join(sorted(DEFAULT_BAUD))
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if not sep or not rest:
        raise ValueError(f"power meter {spec!r}: expected KIND:PORT[@BAUD] with KIND one of {kinds}")
    if kind not in DEFAULT_BAUD:
        raise ValueError(f"power meter {spec!r}: unknown kind {kind!r}; known: {kinds}")
    port, at, baud_text = rest.rpartition("@") if "@" in rest else (rest, "", "")
    baudrate = DEFAULT_BAUD[kind]
    if at:
        if not baud_text.isdigit() or int(baud_text) <= 0:
            raise ValueError(f"power meter {spec!r}: baud rate {baud_text!r} is not a positive integer")
        baudrate = int(baud_text)
    if not port:
        raise ValueError(f"power meter {spec!r}: no serial port given")
    return MeterSpec(kind, port, baudrate)


def open_serial(port: str, baudrate: int, timeout_s: float) -> Any:
    """A pyserial port, its errors translated."""
    try:
        import serial
    except ImportError as err:
        raise SensorError("pyserial is not installed: pip install pyserial") from err
    try:
        return serial.Serial(port, baudrate=baudrate, timeout=timeout_s)
    except (serial.SerialException, OSError, ValueError) as err:
        raise SensorError(f"cannot open power meter port {port}: {err}") from err


def _meter_channels(name: str, roles: Mapping[str, str]) -> list[Channel]:
    return [
        Channel(name, POWER_MW, roles.get(name, "total")),
        Channel(f"{name}_voltage", VOLTAGE_MV, ""),
        Channel(f"{name}_current", CURRENT_MA, ""),
    ]


def decode_um_frame(frame: bytes) -> tuple[UmModel, float, float]:
    """(model, voltage_mv, current_ma) from one 130-byte reply."""
    model = _MODEL_BY_ID.get(frame[:2])
    if model is None or len(frame) != FRAME_BYTES:
        raise SensorError(f"not an RDTech UM reply (starts {frame[:2].hex()}, {len(frame)} bytes)")
    voltage_raw, current_raw = struct.unpack_from(">HH", frame, 2)
    return model, voltage_raw * model.voltage_mv_per_count, current_raw * model.current_ma_per_count


def find_um_frame(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """(start, end) of the reply in ``buffer``, resynchronised on the earliest known model id.

    None until the 130 bytes after that id have arrived (a reply often comes in several pieces).
    Noise before the reply is skipped; input is flushed before each request, so a stale reply
    cannot be taken for the new one.
    """
    starts = [i for i in (buffer.find(model_id) for model_id in _MODEL_BY_ID) if i != -1]
    if not starts:
        return None
    start = min(starts)
    return (start, start + FRAME_BYTES) if start + FRAME_BYTES <= len(buffer) else None


class UmMeter(Sensor):
    """An RDTech UM24C/UM25C/UM34C, polled: each read sends 0xF0 and waits for the 130-byte reply."""

    backend = "usbmeter"
    # The meter answers in 20-100 ms (longer over Bluetooth rfcomm).
    max_rate_hz = 10.0

    def __init__(self, port: Any, model: UmModel, roles: Mapping[str, str] | None = None, timeout_s: float = 1.0):
        self._port = port
        self._model = model
        self._timeout_s = timeout_s
        self._channels = _meter_channels(model.name, roles or {})

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def _exchange(self) -> bytes:
        import serial

        buffer = bytearray()
        deadline = time.monotonic() + self._timeout_s
        try:
            # Bytes left from a late earlier reply would be mistaken for this one.
            self._port.reset_input_buffer()
            self._port.write(REQUEST)
            while time.monotonic() < deadline:
                chunk = self._port.read(max(1, self._port.in_waiting))
                buffer.extend(chunk)
                found = find_um_frame(buffer)
                if found:
                    return bytes(buffer[found[0] : found[1]])
        except (serial.SerialException, OSError) as err:
            raise SensorError(f"{self._model.name}: {err}") from err
        raise SensorError(f"{self._model.name}: no complete reply within {self._timeout_s:g} s ({len(buffer)} bytes)")

    def read(self) -> Sequence[float]:
        model, voltage_mv, current_ma = decode_um_frame(self._exchange())
        if model is not self._model:
            log.warning("meter says it is a %s, not a %s: using its units", model.name, self._model.name)
            self._model = model
        return [voltage_mv * current_ma / 1000.0, voltage_mv, current_ma]

    def close(self) -> None:
        self._port.close()


def parse_csv_line(line: str) -> tuple[int, float, float] | None:
    """(t_ms, voltage_mv, current_ma) from ``t_ms,mV,mA``; None for a header, noise or a torn line."""
    fields = line.strip().split(",")
    if len(fields) < 3:
        return None
    try:
        return int(fields[0]), float(fields[1]), float(fields[2])
    except ValueError:
        return None


class CsvMeter(Sensor):
    """An INA219/INA260 sketch printing ``t_ms,mV,mA`` lines; a thread reads them, ``read`` gives the latest.

    Malformed lines are counted and skipped; a t_ms that goes back means the board reset (counted).
    """

    backend = "usbmeter"
    max_rate_hz = 200.0
    # The sketch prints at its own fixed rate: reading its latest line at random times cannot dither it.
    dither = False

    def __init__(
        self,
        port: Any,
        roles: Mapping[str, str] | None = None,
        first_value_timeout_s: float = 2.0,
        stale_after_s: float = 2.0,
    ) -> None:
        self._port = port
        self._channels = _meter_channels("csv", roles or {})
        self._first_value_timeout_s = first_value_timeout_s
        self._stale_after_s = stale_after_s
        self._cond = threading.Condition()
        self._latest: tuple[float, float, float] | None = None
        self._latest_at = 0.0
        self._last_t_ms: int | None = None
        self._error = ""
        self.malformed_lines = 0
        self.resets = 0
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader, name="csv-meter", daemon=True)
        self._thread.start()

    def channels(self) -> Sequence[Channel]:
        return self._channels

    def _reader(self) -> None:
        import serial

        while not self._stop.is_set():
            try:
                raw = self._port.readline()
            except (serial.SerialException, OSError, TypeError) as err:
                if not self._stop.is_set():
                    with self._cond:
                        self._error = f"csv meter: {err}"
                        self._cond.notify_all()
                return
            if not raw:
                continue  # read timeout: check the stop flag
            self._accept(raw.decode("ascii", errors="replace"))

    def _accept(self, line: str) -> None:
        parsed = parse_csv_line(line)
        with self._cond:
            if parsed is None:
                self.malformed_lines += 1
                return
            t_ms, voltage_mv, current_ma = parsed
            if self._last_t_ms is not None and t_ms < self._last_t_ms:
                self.resets += 1
                log.info("csv meter restarted (t_ms %d after %d)", t_ms, self._last_t_ms)
            self._last_t_ms = t_ms
            self.lines += 1
            self._latest = (voltage_mv * current_ma / 1000.0, voltage_mv, current_ma)
            self._latest_at = time.monotonic()
            self._cond.notify_all()

    def wait_for_lines(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` good lines have arrived in all (for start-up and tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.lines >= count or bool(self._error), timeout_s) and (
                self.lines >= count
            )

    def read(self) -> Sequence[float]:
        with self._cond:
            if self._latest is None:
                self._cond.wait_for(lambda: self._latest is not None or bool(self._error), self._first_value_timeout_s)
            if self._error:
                raise SensorError(self._error)
            if self._latest is None:
                raise SensorError(f"csv meter: no t_ms,mV,mA line within {self._first_value_timeout_s:g} s")
            age_s = time.monotonic() - self._latest_at
            if age_s > self._stale_after_s:
                raise SensorError(f"csv meter: last line {age_s:.1f} s ago")
            return list(self._latest)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._port.close()


def open_power_meter(spec: str | MeterSpec, roles: Mapping[str, str] | None = None) -> Sensor:
    """Open the meter a ``--power-meter`` value names (ValueError: bad spec, SensorError: the port)."""
    parsed = parse_meter_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "csv":
        # A short timeout so the reader thread notices close() promptly.
        return CsvMeter(open_serial(parsed.port, parsed.baudrate, 0.2), roles)
    return UmMeter(open_serial(parsed.port, parsed.baudrate, 0.1), UM_MODELS[parsed.kind], roles)
