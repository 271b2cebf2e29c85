"""Fault-injection helpers: agents as real subprocesses, a TCP proxy that can cut connections, waiting.

Every helper waits on something observable (a line printed, a child process, a phase in the stream)
with a timeout instead of sleeping and hoping; every process started here is killed by its `stop`, and
by its parent-death signal (`spawn`) when the test run itself is killed before it could call `stop`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import psutil

from host.fleet import parent_death
from host.fleet.client import AgentClient, Credentials
from host.fleet.local_agent import read_listen_port
from protos import agent_pb2 as pb

REPO = Path(__file__).resolve().parent.parent
SQUEEZENET = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


#: Children are started from this one thread, which lives as long as the test process: Linux sends the
#: parent-death signal when the *thread* that started a child exits, so a child started from a short-lived
#: thread (a pool's, a test's own) would otherwise be killed when that thread ends.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-spawner")


def spawn(cmd: list[str], **popen: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(cmd, **popen)` for a process that must not outlive the test run.

    It gets SIGTERM when the test process dies, even by SIGKILL (a CI timeout): an agent then stops its jobs
    and workers as on any SIGTERM. The signal is armed after exec (host.fleet.parent_death), never in a preexec_fn,
    which hangs children of a process with gRPC threads now and then.
    """
    return _SPAWNER.submit(lambda: subprocess.Popen(parent_death.command(cmd), **popen)).result()


def isolated_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for host/agent subprocesses: every store, cache and config under `tmp`."""
    env = dict(os.environ)
    for key in ("EDGEPROF_TOKEN", "EDGEPROF_CONFIG"):
        env.pop(key, None)
    env.update(
        EDGEPROF_DB=str(tmp / "host" / "runs.sqlite"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        XDG_DATA_HOME=str(tmp / "data"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        EDGEPROF_AGENT_DATA=str(tmp / "agent-default"),
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AgentProc:
    """`agent serve` in a subprocess, on loopback, with a data dir that survives restarts."""

    def __init__(
        self, tmp: Path, *args: str, data_dir: Path | None = None, port: int = 0, env: dict[str, str] | None = None
    ) -> None:
        self.tmp = tmp
        self.extra_env = env or {}
        self.args = list(args)
        self.data_dir = data_dir or tmp / "agent"
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = tmp / "agent.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> AgentProc:
        cmd = [
            sys.executable,
            "-m",
            "agent",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
            "--no-advertise",
            *self.args,
        ]
        with open(self.log_path, "a") as log:
            self.proc = spawn(
                cmd,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=self.tmp,
                env=isolated_env(self.tmp, **self.extra_env),
            )
        port = read_listen_port(self.proc, timeout_s)
        if port is None:
            self.stop()
            raise AssertionError(f"agent did not start: {self.log_path.read_text()[-2000:]}")
        self.port = port
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        """Terminate the agent and any worker it left (workers run in their own session)."""
        if self.proc is None:
            return
        workers = self.workers()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def workers(self) -> list[psutil.Process]:
        """The agent's worker subprocesses (children running `agent.worker`)."""
        if self.proc is None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if "agent.worker" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    def client(self, credentials: Credentials | None = None, address: str | None = None) -> AgentClient:
        return AgentClient(address or self.address, credentials)


def upload(client: AgentClient, path: Path = SQUEEZENET) -> str:
    data = path.read_bytes()
    sha = sha256_bytes(data)
    if not client.has_model(sha):
        client.upload(path, sha, "onnx")
    return sha


def profile_request(sha: str, **fields: Any) -> pb.ProfileRequest:
    values: dict[str, Any] = {"runs": 5, "warmup": 1, "min_duration_s": 0.0, "idle_s": 0.0}
    values.update(fields)
    return pb.ProfileRequest(job_id=uuid.uuid4().hex, model_sha256=sha, model_format="onnx", **values)


def assert_still_serving(client: AgentClient, sha: str) -> None:
    """A short job must still run to OK on this agent."""
    ends = [b.end for b in client.profile(profile_request(sha, runs=3, warmup=0), timeout_s=60) if b.HasField("end")]
    assert ends and ends[-1].status == pb.JobEnd.OK, ends


class TcpProxy:
    """Forwards a loopback port to an agent; `cut()` drops every connection, `blocked` refuses new ones.

    `freeze()` stops forwarding while every socket stays open (new connections are accepted and held too):
    a half-open link, as a hung NAT box or a board that lost power leaves it. `thaw()` resumes forwarding.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.blocked = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self.connections = 0
        self.cuts = 0
        #: Bytes forwarded agent -> host so far: shows that a stream is carrying batches.
        self.bytes_to_client = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.blocked.is_set():
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._open.update((conn, upstream))
                self.connections += 1
            threading.Thread(target=self._pipe, args=(conn, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                if not self._flowing.wait(0.1):
                    continue  # frozen: read nothing, forward nothing, close nothing
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
                    if sock is b:  # b is the agent's side
                        self.bytes_to_client += len(data)
        except (OSError, ValueError):
            return
        finally:
            self._close(a, b)

    def _close(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._open.discard(sock)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def cut(self) -> int:
        """Drop every connection now, as a lost Wi-Fi link would. Returns how many were cut."""
        with self._lock:
            socks = list(self._open)
        self._close(*socks)
        self.cuts += 1
        return len(socks) // 2

    def freeze(self) -> None:
        """Stop forwarding bytes in both directions; every connection stays open."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def stop(self) -> None:
        self._stop.set()
        self.cut()
        self._listener.close()
        self._thread.join(timeout=2)


def batches_with_kill(
    stream: Iterator[pb.MeasurementBatch],
    when: Callable[[pb.MeasurementBatch, int], bool],
    act: Callable[[], None],
) -> tuple[list[pb.MeasurementBatch], int]:
    """Read a whole stream, calling `act` once, as soon as `when(batch, measured_so_far)` holds."""
    batches: list[pb.MeasurementBatch] = []
    measured = 0
    acted = False
    for batch in stream:
        batches.append(batch)
        measured += sum(len(b.start_ns) for b in batch.latency if b.phase == pb.MEASURE)
        if not acted and when(batch, measured):
            act()
            acted = True
    return batches, measured


def generate_certs(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a foreign CA's client."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN=edgeprof test {ca}",
        )
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca in (("server", "ca"), ("client", "ca"), ("rogue", "other-ca")):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.pem",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        )
    return {
        p.stem + ("_key" if p.suffix == ".key" else ""): p for p in directory.iterdir() if p.suffix in (".pem", ".key")
    }


@contextlib.contextmanager
def rapl_agent(
    tmp_path: Path, power_w: float, range_uj: int, *args: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """A real `agent serve` whose only power sensor is a fake RAPL counter rising at `power_w`; its address.

    The counter wraps at `range_uj`; `args` and `env` go to `agent serve` as well. The agent uses a user profile
    (EDGEPROF_PROFILES_DIR) like x86-rapl, with a realistic ceiling for this fake package, so the wrap-safe poll
    rate stays modest on a 2-core test machine.
    """
    from tests.sensor_fakes import RaplCounterWriter, build_rapl_zone

    root = tmp_path / "sys"
    counter = build_rapl_zone(root, "intel-rapl:0", "package-0", 0, max_range_uj=range_uj)
    writer = RaplCounterWriter(counter, power_w, range_uj, wraps_wanted=1_000_000)
    writer.start()
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test-rapl.toml").write_text(
        'name = "test-rapl"\nruntime = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\n'
        'power_sensors = ["rapl"]\n[sensor_options.rapl]\nmax_power_w = 20.0\n'
    )
    agent = AgentProc(
        tmp_path,
        "--profile",
        "test-rapl",
        *args,
        env={"EDGEPROF_SYSFS_ROOT": str(root), "EDGEPROF_PROFILES_DIR": str(profiles), **(env or {})},
    )
    try:
        yield agent.start().address
    finally:
        agent.stop()
        writer.stop.set()
        writer.join(timeout=5)
