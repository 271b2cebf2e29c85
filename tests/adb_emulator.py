"""An Android phone for the tests: speaks the adb transport protocol on loopback, runs shell commands in a sandbox.

The real `adb` server connects to it (`adb connect 127.0.0.1:PORT`) and the bridge reaches it through
that server with adbutils, so the whole stack is the one used with a phone. Implemented: CNXN (no AUTH),
OPEN/OKAY/WRTE/CLSE streams with one WRTE in flight per stream, the `shell:` service (v1: stdout and
stderr merged, as adbd does for a command) and the `sync:` service (STAT, SEND/DATA/DONE, RECV, QUIT).

Shell commands run under /bin/sh with the phone's paths (/sys, /proc, /data, /sdcard) rewritten into the
phone's root directory; `getprop`, `taskset`, `settings`, `input` and `dumpsys` are small scripts in the
phone's bin directory. `/proc/uptime` is this machine's own, so phone-side timestamps advance for real.
A fuel-gauge thread rewrites the battery's current (and power_now, on a phone configured with one) while
the phone's benchmark_model runs, and heats the thermal zones configured to heat, so energy and
temperature measured through the whole path reflect when inference really happened.

The phone's `benchmark_model` is `benchmark_main` below: it runs the model with the LiteRT Python runtime
and prints what TensorFlow Lite's benchmark tool prints (format learnt from its documentation and logs).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_VERSION = 0x01000001
MAX_PAYLOAD = 4096
_HEADER = struct.Struct("<6I")
#: Phone paths that live in the sandbox root.
_PHONE_PATH = re.compile(r"(?<![\w.\-/])/(sys|proc|data|sdcard)(?=/|\b)")


@dataclass
class PhoneConfig:
    """What the emulated phone is and how its battery behaves."""

    props: dict[str, str] = field(
        default_factory=lambda: {
            "ro.product.model": "Pixel Emu",
            "ro.product.manufacturer": "Google",
            "ro.soc.manufacturer": "Qualcomm",
            "ro.soc.model": "SM8550",
            "ro.board.platform": "kalama",
            "ro.build.version.release": "14",
            "ro.build.version.sdk": "34",
            "ro.product.cpu.abi": "arm64-v8a",
        }
    )
    #: Cores: (max kHz) per cpu; the last four are the big cluster.
    cpu_max_khz: tuple[int, ...] = (1800000, 1800000, 1800000, 1800000, 2800000, 2800000, 2800000, 3200000)
    ram_kb: int = 7_800_000
    status: str = "Discharging"
    usb_online: bool = False
    #: What `dumpsys battery` says of USB power (None: what usb/online says). A phone whose supplies the shell
    #: cannot read, or that names them otherwise, still says "USB powered: true" there.
    usb_powered: bool | None = None
    #: "uA" or "mA" for current_now (voltage follows: uV or mV).
    gauge_unit: str = "uA"
    #: True: current_now is negative while discharging.
    discharge_negative: bool = True
    idle_current_ma: float = 300.0
    load_current_ma: float = 900.0
    voltage_mv: float = 3900.0
    gauge_period_s: float = 0.2
    #: "uW" or "mW": the gauge also has power_now (its own reading, in that unit, positive while discharging);
    #: "" = no power_now file, as on most phones.
    power_now_unit: str = ""
    #: What power_now reads relative to current x voltage (a gauge averages its own power reading differently).
    power_now_factor: float = 1.0
    #: Thermal zones: type, temperature now (°C), how fast it heats while the runner runs and cools back
    #: towards where it started otherwise (°C/s), throttling trip points (type, °C), or "raw_mc": a
    #: constant reading (battery current zones read mA as m°C).
    zones: list[dict[str, Any]] = field(default_factory=lambda: [{"type": "cpu-0-0", "temp_c": 36.0}])
    #: The phone's benchmark_model: {"reject_delegates": ["gpu"], "crash_on_invocation": 3, "hang_on_invocation": 3,
    #: "start_delay_s": 0.5, "external_delegate_nodes": [0, 31], "omit_lines": ["count="],
    #: "startup_s": 0.5 (each invocation spends that long starting, busy, before it loads the model)}
    runner: dict[str, Any] = field(default_factory=dict)


class AdbEmulator:
    """One emulated phone listening on 127.0.0.1; `serial` is what `adb connect` names it."""

    def __init__(self, root: Path, config: PhoneConfig | None = None) -> None:
        self.root = root
        self.config = config or PhoneConfig()
        self._build_root()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.serial = f"127.0.0.1:{self.port}"
        self._transports: list[_Transport] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._gauge, daemon=True).start()

    # -- the sandbox ---------------------------------------------------------------------------------

    def _build_root(self) -> None:
        cfg, root = self.config, self.root
        for d in ("bin", "etc", "log", "run", "data/local/tmp", "sdcard", "proc", "sys/class/thermal"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "proc/uptime").unlink(missing_ok=True)
        (root / "proc/uptime").symlink_to("/proc/uptime")
        (root / "proc/meminfo").write_text(f"MemTotal:       {cfg.ram_kb} kB\nMemFree:        1000000 kB\n")
        (root / "etc/props.json").write_text(json.dumps(cfg.props))
        (root / "etc/runner.json").write_text(json.dumps(cfg.runner))
        for i, khz in enumerate(cfg.cpu_max_khz):
            freq = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
            freq.mkdir(parents=True, exist_ok=True)
            (freq / "cpuinfo_max_freq").write_text(f"{khz}\n")
        self._zone_c = [float(z.get("temp_c", 0.0)) for z in cfg.zones]
        for i, spec in enumerate(cfg.zones):
            zone = root / f"sys/class/thermal/thermal_zone{i}"
            zone.mkdir(parents=True, exist_ok=True)
            (zone / "type").write_text(f"{spec['type']}\n")
            for j, (kind, trip_c) in enumerate(spec.get("trips", [])):
                (zone / f"trip_point_{j}_type").write_text(f"{kind}\n")
                (zone / f"trip_point_{j}_temp").write_text(f"{round(trip_c * 1000)}\n")
        self._write_zones(busy=False, dt_s=0.0)
        battery = root / "sys/class/power_supply/battery"
        battery.mkdir(parents=True, exist_ok=True)
        (battery / "status").write_text(cfg.status + "\n")
        (battery / "temp").write_text("301\n")
        (battery / "capacity").write_text("80\n")
        usb = root / "sys/class/power_supply/usb"
        usb.mkdir(parents=True, exist_ok=True)
        (usb / "online").write_text("1\n" if cfg.usb_online else "0\n")
        self._write_gauge(busy=False)
        (root / "etc/settings").mkdir(exist_ok=True)
        (root / "etc/settings/screen_brightness").write_text("128\n")
        (root / "run/screen").write_text("on\n")
        usb_powered = cfg.usb_online if cfg.usb_powered is None else cfg.usb_powered
        status_code = {"Charging": 2, "Discharging": 3, "Not charging": 4, "Full": 5}.get(cfg.status, 1)
        tools = {
            "getprop": f"""#!{sys.executable}
import json, sys
props = json.load(open({str(root / "etc/props.json")!r}))
if len(sys.argv) > 1:
    print(props.get(sys.argv[1], ""))
else:
    for k, v in sorted(props.items()):
        print(f"[{{k}}]: [{{v}}]")
""",
            # On a phone the runner is pinned to the big cores and the battery loop runs on a little one; on
            # a two-core test machine the runner is niced instead, so that it cannot starve the loop.
            "taskset": f'#!/bin/sh\necho "$1" >> {root}/log/taskset\nshift\nexec nice -n 10 "$@"\n',
            "settings": f"""#!/bin/sh
# settings get|put system KEY [VALUE]
f={root}/etc/settings/$3
if [ "$1" = get ]; then cat "$f" 2>/dev/null || echo null; else echo "$4" > "$f"; fi
""",
            "input": f"""#!/bin/sh
# input keyevent KEYCODE_SLEEP | KEYCODE_WAKEUP
case "$2" in *SLEEP*|223) echo off > {root}/run/screen;; *WAKEUP*|224) echo on > {root}/run/screen;; esac
""",
            "dumpsys": f"""#!/bin/sh
if [ "$1" = power ]; then
  if [ "$(cat {root}/run/screen)" = on ]; then echo "  mWakefulness=Awake"; else echo "  mWakefulness=Asleep"; fi
fi
if [ "$1" = battery ]; then
  echo "Current Battery Service state:"
  echo "  AC powered: false"
  echo "  USB powered: {"true" if usb_powered else "false"}"
  echo "  Wireless powered: false"
  echo "  status: {status_code}"
  echo "  level: 80"
  echo "  voltage: {int(cfg.voltage_mv)}"
fi
""",
        }
        for name, text in tools.items():
            path = root / "bin" / name
            path.write_text(text)
            path.chmod(0o755)

    def _write_gauge(self, busy: bool) -> None:
        cfg = self.config
        # A real gauge's reading moves a little at every refresh: that is how its refresh period shows.
        self._refreshes = getattr(self, "_refreshes", 0) + 1
        current_ma = (cfg.load_current_ma if busy else cfg.idle_current_ma) + 0.5 * (self._refreshes % 3)
        if cfg.status == "Charging":
            current_ma = -1500.0  # charging current flows into the battery
        elif cfg.status in ("Not charging", "Full"):
            current_ma = 1.0  # on external power, charging paused: the battery gives or takes next to nothing
        sign = -1.0 if cfg.discharge_negative else 1.0
        scale = 1000.0 if cfg.gauge_unit == "uA" else 1.0
        battery = self.root / "sys/class/power_supply/battery"
        values = [("current_now", sign * current_ma * scale), ("voltage_now", cfg.voltage_mv * scale)]
        if cfg.power_now_unit:
            power_mw = abs(current_ma) * cfg.voltage_mv / 1000.0 * cfg.power_now_factor
            values.append(("power_now", power_mw * (1000.0 if cfg.power_now_unit == "uW" else 1.0)))
        for name, value in values:
            tmp = battery / f".{name}"
            tmp.write_text(f"{int(value)}\n")
            os.replace(tmp, battery / name)  # readers never see a half-written value

    def _write_zones(self, busy: bool, dt_s: float) -> None:
        for i, spec in enumerate(self.config.zones):
            start_c = float(spec.get("temp_c", 0.0))
            if busy:
                self._zone_c[i] += float(spec.get("heat_c_per_s", 0.0)) * dt_s
            else:
                self._zone_c[i] = max(start_c, self._zone_c[i] - float(spec.get("cool_c_per_s", 0.0)) * dt_s)
            raw = spec.get("raw_mc", round(self._zone_c[i] * 1000))
            path = self.root / f"sys/class/thermal/thermal_zone{i}/temp"
            tmp = path.with_name(".temp")
            tmp.write_text(f"{raw}\n")
            os.replace(tmp, path)

    def _gauge(self) -> None:
        while not self._stop.wait(self.config.gauge_period_s):
            busy = (self.root / "run/busy").exists()
            self._write_gauge(busy=busy)
            self._write_zones(busy=busy, dt_s=self.config.gauge_period_s)

    def shell_env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "EDGEPROF_PHONE_ROOT": str(self.root),
            "HOME": str(self.root / "data/local/tmp"),
            "PYTHONPATH": str(Path(__file__).parent),
        }

    def rewrite(self, command: str) -> str:
        """A phone command with its phone paths moved into the sandbox root."""
        return _PHONE_PATH.sub(lambda m: f"{self.root}/{m.group(1)}", command)

    def phone_path(self, path: str) -> Path:
        return Path(self.rewrite(path))

    # -- the transport -------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            transport = _Transport(conn, self)
            with self._lock:
                self._transports.append(transport)
            threading.Thread(target=transport.run, daemon=True).start()

    def unplug(self) -> None:
        """The cable is pulled: every connection drops and no new one is accepted."""
        self._listener.close()
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.close()

    def stop(self) -> None:
        self._stop.set()
        self.unplug()


class _Stream:
    def __init__(self, local_id: int, remote_id: int) -> None:
        self.local_id = local_id
        self.remote_id = remote_id
        self.incoming: queue.Queue[bytes | None] = queue.Queue()
        self.acked = threading.Semaphore(0)
        self.closed = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None


class _Transport:
    def __init__(self, conn: socket.socket, phone: AdbEmulator) -> None:
        self.conn = conn
        self.phone = phone
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.send_lock = threading.Lock()
        self.max_payload = MAX_PAYLOAD
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        for stream in list(self.streams.values()):
            self._end(stream)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        header = _HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self.send_lock:
            self.conn.sendall(header + data)

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def run(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, _crc, _magic = _HEADER.unpack(self._recv_exact(_HEADER.size))
                data = self._recv_exact(length) if length else b""
                self._handle(command, arg0, arg1, data)
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    def _handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.max_payload = min(MAX_PAYLOAD, arg1)
            props = self.phone.config.props
            banner = (
                f"device::ro.product.name=edgeprof_emu;ro.product.model={props['ro.product.model']};"
                "ro.product.device=emu;features=cmd\0"
            )
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, banner.encode())
        elif command == A_OPEN:
            service = data.rstrip(b"\0").decode()
            stream = _Stream(self.next_id, arg0)
            self.next_id += 1
            self.streams[stream.local_id] = stream
            self.send(A_OKAY, stream.local_id, stream.remote_id)
            threading.Thread(target=self._serve, args=(stream, service), daemon=True).start()
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is not None:
                self.send(A_OKAY, stream.local_id, stream.remote_id)
                stream.incoming.put(data)
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.acked.release()
        elif command == A_CLSE:
            stream = self.streams.get(arg1)
            if stream is not None:
                self._end(stream)

    def _end(self, stream: _Stream) -> None:
        if stream.closed.is_set():
            return
        stream.closed.set()
        stream.incoming.put(None)
        stream.acked.release()
        if stream.process is not None and stream.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(stream.process.pid, signal.SIGKILL)
        self.streams.pop(stream.local_id, None)

    def write(self, stream: _Stream, data: bytes) -> bool:
        for i in range(0, len(data), self.max_payload):
            if stream.closed.is_set() or self.closed.is_set():
                return False
            self.send(A_WRTE, stream.local_id, stream.remote_id, data[i : i + self.max_payload])
            stream.acked.acquire()  # one WRTE in flight: wait for the server's OKAY
        return not stream.closed.is_set()

    def _serve(self, stream: _Stream, service: str) -> None:
        try:
            if service.startswith("shell:"):
                self._shell(stream, service[len("shell:") :])
            elif service.startswith("sync:"):
                _SyncService(self, stream).run()
        except (OSError, ConnectionError):
            pass
        finally:
            if not stream.closed.is_set() and not self.closed.is_set():
                with contextlib.suppress(OSError):
                    self.send(A_CLSE, stream.local_id, stream.remote_id)
            self._end(stream)

    def _shell(self, stream: _Stream, command: str) -> None:
        phone = self.phone
        stream.process = subprocess.Popen(
            ["/bin/sh", "-c", phone.rewrite(command)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=phone.root,
            env=phone.shell_env(),
            start_new_session=True,
        )
        assert stream.process.stdout is not None
        fd = stream.process.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk or not self.write(stream, chunk):
                break
        stream.process.stdout.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            stream.process.wait(timeout=5)


class _SyncService:
    """`sync:`: files in and out of the phone, 8-byte requests (id, little-endian length)."""

    def __init__(self, transport: _Transport, stream: _Stream) -> None:
        self.transport = transport
        self.stream = stream
        self.buffer = b""

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.stream.incoming.get()
            if chunk is None:
                raise ConnectionError("sync stream closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _request(self) -> tuple[bytes, bytes | int]:
        ident, length = struct.unpack("<4sI", self._read(8))
        if ident in (b"DATA", b"DONE"):
            return ident, (self._read(length) if ident == b"DATA" else length)
        return ident, self._read(length)

    def _reply(self, data: bytes) -> None:
        self.transport.write(self.stream, data)

    def run(self) -> None:
        phone = self.transport.phone
        while True:
            ident, arg = self._request()
            if ident == b"QUIT":
                return
            assert isinstance(arg, bytes)
            path = phone.phone_path(arg.decode())
            if ident == b"STAT":
                try:
                    st = path.stat()
                    self._reply(struct.pack("<4sIII", b"STAT", st.st_mode, st.st_size, int(st.st_mtime)))
                except OSError:
                    self._reply(struct.pack("<4sIII", b"STAT", 0, 0, 0))
            elif ident == b"SEND":
                target, _, mode = arg.decode().rpartition(",")
                self._receive_file(phone.phone_path(target), int(mode))
            elif ident == b"RECV":
                self._send_file(path)
            else:
                message = f"unsupported sync request {ident!r}".encode()
                self._reply(b"FAIL" + struct.pack("<I", len(message)) + message)
                return

    def _receive_file(self, path: Path, mode: int) -> None:
        data = bytearray()
        while True:
            ident, arg = self._request()
            if ident == b"DATA":
                assert isinstance(arg, bytes)
                data += arg
            elif ident == b"DONE":
                break
            else:
                raise ConnectionError(f"unexpected {ident!r} in SEND")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(data))
            path.chmod(mode & 0o777 or 0o644)
        except OSError as err:
            message = str(err).encode()
            self._reply(b"FAIL" + struct.pack("<I", len(message)) + message)
            return
        self._reply(b"OKAY" + struct.pack("<I", 0))

    def _send_file(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as err:
            message = str(err).encode()
            self._reply(b"FAIL" + struct.pack("<I", len(message)) + message)
            return
        for i in range(0, len(data), 64 * 1024):
            chunk = data[i : i + 64 * 1024]
            self._reply(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        self._reply(b"DONE" + struct.pack("<I", 0))


# -- the phone's benchmark_model ---------------------------------------------------------------------

LIMIT = " but terminate if exceeding 150 seconds."
HELP = """usage: benchmark_model
Flags:
\t--graph=\tstring\toptional\tpath to the .tflite model
\t--num_runs=50\tint32\toptional\texpected number of runs
\t--warmup_runs=1\tint32\toptional\tminimum number of warmup runs
\t--num_threads=-1\tint32\toptional\tnumber of threads
\t--use_gpu=false\tbool\toptional\tuse gpu
\t--use_nnapi=false\tbool\toptional\tuse nnapi delegate api
\t--use_xnnpack=false\tbool\toptional\tuse xnnpack delegate
\t--report_peak_memory_footprint=false\tbool\toptional\treport peak memory
"""


def write_runner(path: Path) -> Path:
    """The file a user would `agent adb install-runner`: a launcher for benchmark_main with this Python."""
    # The real tool is a C++ binary that exits as soon as it has printed: no interpreter teardown after the runs.
    path.write_text(
        f"#!{sys.executable}\nimport os, sys\nfrom adb_emulator import benchmark_main\ncode = benchmark_main()\n"
        "sys.stdout.flush()\nos._exit(code)\n"
    )
    path.chmod(0o755)
    return path


def _flags(argv: list[str]) -> dict[str, str]:
    flags = {}
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        flags[key] = value
    return flags


class _Omitting:
    """stdout without the lines that contain any of ``omitted``."""

    def __init__(self, out: Any, omitted: tuple[str, ...]) -> None:
        self.out = out
        self.omitted = omitted
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not any(o in line for o in self.omitted):
                self.out.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def benchmark_main(argv: list[str] | None = None) -> int:
    """Run a .tflite model with LiteRT and print as TensorFlow Lite's benchmark_model does."""
    flags = _flags(sys.argv[1:] if argv is None else argv)
    if "help" in flags:
        print(HELP)
        return 0
    root = Path(os.environ["EDGEPROF_PHONE_ROOT"])
    config = json.loads((root / "etc/runner.json").read_text())
    counter = root / "run/invocations"
    invocation = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(invocation))
    if config.get("startup_s"):  # a slow start: loading libraries and the model keeps the CPU (and battery) busy
        (root / "run/busy").write_text("1")
        time.sleep(float(config["startup_s"]))
    # A phone's runner can take long to start (loading, page cache, a busy little core): it lies between blocks.
    time.sleep(float(config.get("start_delay_s", 0.0)))
    if config.get("omit_lines"):  # a build that prints less than the upstream tool
        sys.stdout = _Omitting(sys.stdout, tuple(config["omit_lines"]))
    print("INFO: STARTING!")
    print(f"INFO: Graph: [{flags.get('graph', '')}]")
    delegate = next((d for d in ("gpu", "nnapi", "xnnpack") if flags.get(f"use_{d}") == "true"), "")
    if delegate and delegate in config.get("reject_delegates", []):
        print(f"INFO: Loaded model {flags['graph']}")
        print(f"ERROR: Failed to apply {delegate.upper()} delegate.")
        print("ERROR: Benchmarking failed.")
        return 1
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    t0 = time.perf_counter_ns()
    try:
        interpreter = Interpreter(model_path=flags["graph"], num_threads=max(1, int(flags.get("num_threads", "1"))))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        print(f"ERROR: Could not build the interpreter: {err}")
        print("ERROR: Benchmarking failed.")
        return 1
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    init_us = (time.perf_counter_ns() - t0) / 1000
    print(f"INFO: Loaded model {flags['graph']}")
    if delegate:
        print(f"INFO: Created TensorFlow Lite delegate for {delegate.upper()}.")
    if flags.get("external_delegate_path"):
        # As Qualcomm's QNN delegate logged it on a phone whose backend took nothing (tensorflow#83344).
        print("INFO: EXTERNAL delegate created.")
    if flags.get("external_delegate_path") and "external_delegate_nodes" in config:
        taken, total = config["external_delegate_nodes"]
        print(
            f"INFO: TfLiteQnnDelegate delegate: {taken} nodes delegated out of {total} nodes"
            f" with {int(taken > 0)} partitions."
        )
    print(f"INFO: Initialized session in {init_us / 1000:.3f}ms.")
    if config.get("crash_on_invocation") == invocation:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    if config.get("hang_on_invocation") == invocation:
        (root / "run/hanging").write_text(str(os.getpid()))
        time.sleep(600)

    def timed(n: int) -> list[float]:
        out = []
        for _ in range(n):
            a = time.perf_counter_ns()
            interpreter.invoke()
            out.append((time.perf_counter_ns() - a) / 1000)
        return out

    (root / "run/busy").write_text("1")
    try:
        warm_n, runs_n = int(flags.get("warmup_runs", "1")), int(flags.get("num_runs", "50"))
        first = timed(1)
        warm = first + timed(max(0, warm_n - 1))
        print(f"INFO: Running benchmark for at least {warm_n} iterations and at least 0.5 seconds{LIMIT}")
        print(f"INFO: count={len(warm)} curr={warm[-1]:g}")
        runs = timed(runs_n)
    finally:
        (root / "run/busy").unlink(missing_ok=True)
    arr = np.array(runs)
    print(f"INFO: Running benchmark for at least {runs_n} iterations and at least 1 seconds{LIMIT}")
    print(
        f"INFO: count={len(runs)} first={runs[0]:g} curr={runs[-1]:g} min={arr.min():g} max={arr.max():g}"
        f" avg={arr.mean():g} std={arr.std():g}"
    )
    print()
    print(
        f"INFO: Inference timings in us: Init: {init_us:g}, First inference: {first[0]:g},"
        f" Warmup (avg): {np.mean(warm):g}, Inference (avg): {arr.mean():g}"
    )
    if flags.get("report_peak_memory_footprint") == "true":
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            "INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE"
            " to the actual memory footprint of the model at runtime. Take the information at your discretion."
        )
        print(f"INFO: Memory footprint delta from the start of the tool (MB): init={peak_mb / 2:g} overall={peak_mb:g}")
        print(f"INFO: Overall peak memory footprint (MB) via periodic monitoring: {peak_mb:g}")
    return 0


# -- the phone's onnxruntime_perf_test ---------------------------------------------------------------

ORT_HELP = """onnxruntime_perf_test [options...] model_path [result_file]
Options:
\t-m [test_mode]: Specifies the test mode. Value could be 'duration' or 'times'.
\t-e [provider]: Specifies the provider 'cpu', 'nnapi', 'qnn' or 'xnnpack'.
\t-r [repeated_times]: Specifies the repeated times if running in 'times' test mode.
\t-x [intra_op_num_threads]: Sets the number of threads used to parallelize the execution within nodes.
\t-p [profile_file]: Specifies the profile name to enable profiling and dump the profile data to the file.
\t-I: Generate tensor input binding. Free dimensions are treated as 1.
\t-s: Show statistics result, like P75, P90.
"""
_ORT_VALUED = set("mertxpiyoTfFCSdu")


def write_ort_runner(path: Path) -> Path:
    """The onnxruntime_perf_test a user would `agent adb install-runner`: a launcher for ort_perf_main."""
    path.write_text(
        f"#!{sys.executable}\nimport sys\nfrom adb_emulator import ort_perf_main\nsys.exit(ort_perf_main())\n"
    )
    path.chmod(0o755)
    return path


def _ort_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and len(arg) >= 2:
            key = arg.lstrip("-")
            if key in _ORT_VALUED and i + 1 < len(argv):
                flags[key] = argv[i + 1]
                i += 1
            else:
                flags[key] = "true"
        else:
            positional.append(arg)
        i += 1
    return flags, positional


def _ort_feeds(session: Any) -> dict[str, Any]:
    """Random inputs from the declared shapes, free dims as 1 (what -I does)."""
    import numpy as np

    rng = np.random.default_rng(0)
    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        dtype = dtypes.get(spec.type, np.float32)
        feeds[spec.name] = rng.random(shape).astype(dtype) if dtype == np.float32 else np.zeros(shape, dtype)
    return feeds


def ort_perf_main(argv: list[str] | None = None) -> int:
    """Run an ONNX model with the onnxruntime Python package and print as onnxruntime_perf_test does.

    The timings are real (this machine's CPU, CPUExecutionProvider whatever -e names: the emulated phone's
    NNAPI/QNN/XNNPACK are its CPU); with -p the profile is ONNX Runtime's own profiler output.
    """
    flags, positional = _ort_args(sys.argv[1:] if argv is None else argv)
    if "h" in flags or "help" in flags or not positional:
        print(ORT_HELP)
        return 0 if positional or "h" in flags or "help" in flags else 1
    root = Path(os.environ["EDGEPROF_PHONE_ROOT"])
    config = json.loads((root / "etc/runner.json").read_text())
    counter = root / "run/invocations"
    invocation = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(invocation))
    provider = flags.get("e", "cpu")
    print(f"Setting intra_op_num_threads to {flags.get('x', '0')}")
    if provider in config.get("reject_providers", []):
        print(f"{provider.upper()} execution provider failed to compile the model: unsupported operator")
        return 1
    import resource

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(flags.get("x", "0"))
    if flags.get("p"):
        options.enable_profiling = True
        options.profile_file_prefix = flags["p"]
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(positional[0], options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own exception types for a bad model
        print(f"Error: {' '.join(str(err).split())[:300]}")
        return 1
    created_s = time.perf_counter() - t0
    if config.get("crash_on_invocation") == invocation:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    feeds = _ort_feeds(session)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    (root / "run/busy").write_text("1")
    try:
        a = time.perf_counter()
        session.run(None, feeds)  # the tool's own warm-up run
        first_ms = int((time.perf_counter() - a) * 1000)
        costs = []
        began = time.perf_counter()
        for _ in range(int(flags.get("r", "1000"))):
            a = time.perf_counter()
            session.run(None, feeds)
            costs.append(time.perf_counter() - a)
        run_s = time.perf_counter() - began
    finally:
        (root / "run/busy").unlink(missing_ok=True)
    if flags.get("p"):
        session.end_profiling()  # writes PREFIX_<date>.json, as the tool's session does at its end
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_pct = int(100 * (usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime) / max(run_s, 1e-9))
    peak_bytes = usage.ru_maxrss * 1024
    total = sum(costs)
    print(f"Session creation time cost: {created_s:g} s")
    print(f"First inference time cost: {first_ms} ms")
    print(f"Total inference time cost: {total:g} s")
    print(f"Total inference requests: {len(costs)}")
    print(f"Average inference time cost total: {total / len(costs) * 1000:f} ms")
    print(f"Total inference run time: {run_s:g} s")
    print(f"Number of inferences per second: {len(costs) / run_s:g}")
    print(f"Avg CPU usage: {cpu_pct} %")
    print(f"Peak working set size: {peak_bytes} bytes")
    if flags.get("s") == "true":
        print(f"Avg CPU usage:{cpu_pct}\nPeak working set size:{peak_bytes}\nRuns:{len(costs)}")
        ordered = np.sort(np.array(costs))
        print(f"Min Latency: {ordered[0]:g} s")
        print(f"Max Latency: {ordered[-1]:g} s")
        for name, q in (("P50", 0.5), ("P90", 0.9), ("P95", 0.95), ("P99", 0.99), ("P999", 0.999)):
            print(f"{name} Latency: {ordered[min(len(ordered) - 1, int(q * len(ordered)))]:g} s")
    return 0
