"""`agent serve`: assemble profile, sensors, cache, journal, job runner and gRPC server; run until signalled."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.device import board
from agent.jobs import parts
from agent.jobs.job import JobSettings
from agent.jobs.runner import JobRunner
from agent.service.membership import MembershipProver
from agent.service.server import TlsFiles, create_server, is_loopback, split_address
from agent.service.servicer import AgentServicer
from agent.service.token_file import TokenFileError, read_token
from agent.storage.instance_lock import DataDirInUse, lock_data_dir
from agent.storage.journal import Journal
from agent.storage.model_cache import ModelCache
from device_profiles import DeviceProfile
from protos import agent_pb2 as pb

log = logging.getLogger("agent")


class ServeError(Exception):
    """A configuration mistake `agent serve` reports as one line before exiting 2."""


def default_data_dir() -> Path:
    env = os.environ.get("EDGEPROF_AGENT_DATA")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "edgeprof" / "agent"


@dataclass
class ServeOptions:
    listen: str = "127.0.0.1:50051"
    profile: str | None = None
    power_meter: str | None = None
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure: bool = False
    advertise: bool = True
    tags: list[str] = field(default_factory=list)
    data_dir: Path = field(default_factory=default_data_dir)
    cache_limit_mb: float = 2048
    max_model_mb: float = 1024
    #: Disk kept free by the model cache: uploads that would eat into it are refused.
    disk_reserve_mb: float = 256
    #: Per-job worker memory limit in MB; None = the device profile's [limits] worker_memory_mb, 0 = none.
    worker_memory_mb: int | None = None
    sample_rate_hz: float = 100.0
    max_queued: int = 8
    job_timeout_s: float = 3600.0
    warm_worker: bool = False
    #: Serve the phone with this adb serial (agent/adb): one agent endpoint per phone.
    adb: str | None = None
    #: The phone's default delegate (xnnpack, gpu, nnapi, qnn, cpu, external:PATH); "" = the profile's.
    delegate: str = ""
    #: HOST:PORT of the Prometheus /metrics endpoint (agent/service/metrics.py); None = no endpoint.
    metrics_listen: str | None = None
    #: A Jetson's nvpmodel mode set for each job and restored after it (agent/device/power_mode.py); None = leave it.
    power_mode: int | None = None
    #: The board's llama-bench binary for GGUF models; None = the profile's [runners] llama_bench, if any.
    llama_bench: str | None = None


def _llama_bench(flag: str | None, profile: DeviceProfile) -> str:
    """--llama-bench, else the profile's [runners] llama_bench: checked now, so a wrong path fails at start."""
    path = flag if flag is not None else profile.runners.get("llama_bench", "")
    if not path:
        return ""
    resolved = Path(path).expanduser()
    if not resolved.is_file() or not os.access(resolved, os.X_OK):
        where = "--llama-bench" if flag is not None else f"profile {profile.name} [runners] llama_bench"
        raise ServeError(f"{where}: {path} is not an executable file")
    return str(resolved.resolve())


def _read_token(path: Path) -> str:
    try:
        token, warning = read_token(path)
    except TokenFileError as err:
        raise ServeError(str(err)) from err
    if warning:  # other users of the board could read it and control every agent sharing the token
        log.warning("%s", warning)
    return token


def _read_tls(opts: ServeOptions) -> TlsFiles | None:
    if opts.tls_cert is None and opts.tls_key is None:
        return None
    if opts.tls_cert is None or opts.tls_key is None:
        raise ServeError("give both --tls-cert and --tls-key")
    try:
        return TlsFiles(
            cert_pem=opts.tls_cert.read_bytes(),
            key_pem=opts.tls_key.read_bytes(),
            client_ca_pem=opts.tls_client_ca.read_bytes() if opts.tls_client_ca else None,
        )
    except OSError as err:
        raise ServeError(f"cannot read a TLS file: {err.filename}: {err.strerror}") from err


class AgentProcess:
    """Everything `agent serve` runs; `start()` then `wait()`, or `stop()` from a test."""

    def __init__(self, opts: ServeOptions) -> None:
        from agent.device.profiles import detect_profile_name, load_profile
        from agent.sensors.contention import CpuContentionSensor
        from agent.sensors.detect import detect_sensors
        from agent.sensors.memory import ProcessMemorySensor

        self.opts = opts
        try:
            host, _port = split_address(opts.listen)
        except ValueError as err:
            raise ServeError(str(err)) from err
        self.token = _read_token(opts.token_file) if opts.token_file else None
        self.tls = _read_tls(opts)
        #: Whether callers must prove who they are: a token or mutual TLS. Server-only TLS encrypts the
        #: connection but lets any client in, so it is not authentication.
        self.authenticated = self.token is not None or (self.tls is not None and self.tls.client_ca_pem is not None)
        if not is_loopback(host) and not self.authenticated and not opts.insecure:
            encryption_only = " (server-only TLS encrypts but lets any client in)" if self.tls is not None else ""
            raise ServeError(
                f"refusing to listen on {opts.listen} without authentication{encryption_only}: anyone who reaches it "
                "could run code on this board. Give --token-file or --tls-client-ca (mutual TLS), or --insecure on a "
                "trusted network"
            )
        if opts.metrics_listen:
            self._check_metrics_listen(opts.metrics_listen)
        self.phone: Any = _connect_phone(opts) if opts.adb else None
        try:
            name = opts.profile or (self.phone.profile_name if self.phone else detect_profile_name())
            self.profile = load_profile(name)
        except ValueError as err:
            raise ServeError(str(err)) from err
        # Before anything is started or written: a --power-mode the agent may not set refuses the start.
        board_state = _board_state(opts, self.profile.name, phone=self.phone is not None)
        try:
            detection = detect_sensors(self.profile, opts.power_meter)
        except ValueError as err:  # a malformed --power-meter spec
            raise ServeError(str(err)) from err
        self.sensors = [] if self.phone else list(detection.sensors)  # a phone's power: its own gauge (agent/adb)
        for problem in detection.problems:
            log.warning("sensor: %s", problem)
        self.llama_bench = "" if self.phone else _llama_bench(opts.llama_bench, self.profile)
        self._board = (
            self.phone.board(self.profile)
            if self.phone
            else board.describe(self.profile.name, board.runtimes_via_subprocess(self.llama_bench))
        )
        opts.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._data_dir_lock = lock_data_dir(opts.data_dir)
        except DataDirInUse as err:
            raise ServeError(str(err)) from err
        self.cache = ModelCache(
            opts.data_dir / "models",
            limit_bytes=int(opts.cache_limit_mb * 1024**2),
            max_model_bytes=int(opts.max_model_mb * 1024**2),
            disk_reserve_bytes=int(opts.disk_reserve_mb * 1024**2),
        )
        self.journal = Journal(opts.data_dir / "journal.sqlite")
        self.journal.prune()
        settings = JobSettings(
            profile=self.profile.name,
            providers=self.profile.providers,
            settle_temp_c=self.profile.settle_temp_c,
            settle_timeout_s=self.profile.settle_timeout_s,
            default_timeout_s=opts.job_timeout_s,
            max_queued=opts.max_queued,
            sample_rate_hz=opts.sample_rate_hz,
            sensors=self.sensors,
            memory_sensor=ProcessMemorySensor,
            contention_sensor=CpuContentionSensor.for_worker,
            describe=self.describe,
            backend=self.phone.backend(self.profile) if self.phone else None,
            warm_worker=opts.warm_worker,
            worker_memory_mb=self._worker_memory_mb(),
            runtime_options=self.profile.runtime_options(),
            board_state=board_state,
            llama_bench=self.llama_bench,
        )
        self.runner = JobRunner(self.journal, self.cache, settings, opts.data_dir / "jobs")
        prover = MembershipProver(self.token, host, lambda: self.port)
        self.servicer = AgentServicer(self.describe, self.cache, self.journal, self.runner, prover=prover)
        self.port = 0
        self._server: Any = None
        self._advertiser: Any = None
        self.metrics: Any = None
        self._stopped = threading.Event()
        #: Set when stop() has finished: serve() returns (and the process exits) only then.
        self._stop_done = threading.Event()

    def _check_metrics_listen(self, listen: str) -> None:
        """Metrics beyond loopback, like gRPC, only with the token or mutual TLS, or --insecure."""
        try:
            host, _port = split_address(listen)
        except ValueError as err:
            raise ServeError(f"--metrics-listen '{listen}' must be HOST:PORT, e.g. 127.0.0.1:9464") from err
        if not is_loopback(host) and not self.authenticated and not self.opts.insecure:
            raise ServeError(
                f"refusing to serve metrics on {listen}, beyond loopback, without authentication: they show board "
                "power, temperatures and job activity to anyone who reaches it. Give --token-file (scrapers send "
                "Authorization: Bearer) or --tls-client-ca (mutual TLS), or --insecure on a trusted network"
            )

    def _worker_memory_mb(self) -> int:
        from agent.jobs.memory_limit import check_limit_mb

        limit_mb = self.profile.worker_memory_mb if self.opts.worker_memory_mb is None else self.opts.worker_memory_mb
        try:
            return check_limit_mb(limit_mb)
        except ValueError as err:
            raise ServeError(f"--worker-memory-mb: {err}") from err

    def describe(self) -> pb.DeviceInfo:
        if self.phone:  # the phone's own state, read again when old (battery, runners)
            self.phone.refresh()
            self._board = self.phone.board(self.profile)
        b = self._board
        info = pb.DeviceInfo(
            hostname=b["hostname"],
            os=b["os"],
            kernel=b["kernel"],
            machine=b["machine"],
            cpu_model=b["cpu_model"],
            cpu_cores=b["cpu_cores"],
            ram_bytes=b["ram_bytes"],
            profile=b["profile"],
            agent_version=b["agent_version"],
            board=b["board"],
            tags=self.opts.tags,
            auth_required=self.authenticated,
            capabilities=[parts.CAPABILITY],
        )
        if self.phone:
            info.metadata.update(self.phone.metadata())
            for channel in self.phone.sensor_channels():
                info.sensors.add(**channel)
        else:
            info.metadata.update(board.reproducibility_metadata())
        for rt in b["runtimes"]:
            info.runtimes.add(
                name=rt["name"], version=rt["version"], execution_providers=rt["providers"], module=rt["module"]
            )
        for sensor in self.sensors:
            for ch in sensor.channels():
                info.sensors.add(
                    name=ch.name, kind=ch.kind, role=ch.role, sensor=sensor.backend, max_rate_hz=sensor.max_rate_hz
                )
        return info

    def start(self) -> int:
        self._server, self.port, _health = create_server(
            self.opts.listen, self.servicer, token=self.token, tls=self.tls
        )
        if self.opts.metrics_listen:
            self.metrics = _start_metrics(self)
        if self.opts.advertise:
            self._advertiser = _start_advertiser(self)
        return self.port

    def stop(self, grace_s: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            if self._advertiser is not None:
                self._advertiser.close()
            if self.metrics is not None:
                self.metrics.close()
            self.runner.shutdown()
            if self._server is not None:
                self._server.stop(grace_s).wait()
            for sensor in self.sensors:
                sensor.close()
            self.journal.close()
        finally:
            self._stop_done.set()

    def wait(self) -> None:
        """Until stop() has completed (not merely begun): jobs cancelled, streams ended, journal closed."""
        self._stop_done.wait()


def _board_state(opts: ServeOptions, profile: str, phone: bool) -> Any:
    """On a Jetson, what records its power mode and clocks per job (and sets --power-mode); None elsewhere."""
    from agent.device.jetson_state import JetsonBoardState
    from agent.device.power_mode import PowerModeControl, PowerModeRefused
    from agent.sensors.base import under_root

    jetson = not phone and (profile.startswith("jetson") or under_root("/etc/nv_tegra_release").is_file())
    if not jetson:
        if opts.power_mode is not None:
            raise ServeError("--power-mode is for Jetson boards (nvpmodel): this agent does not serve one")
        return None
    control = None
    if opts.power_mode is not None:
        try:
            control = PowerModeControl.checked(opts.power_mode)
        except PowerModeRefused as err:
            raise ServeError(str(err)) from err
    return JetsonBoardState(control)


def _connect_phone(opts: ServeOptions) -> Any:
    from agent.adb.bridge import PhoneBridge
    from agent.errors import AgentError

    assert opts.adb is not None
    try:
        return PhoneBridge.connect(opts.adb, opts.delegate)
    except AgentError as err:
        raise ServeError(str(err)) from err


def _start_metrics(agent: AgentProcess) -> Any:
    from agent.service.metrics import AgentState, MetricsAccess, MetricsError, MetricsServer

    listen = agent.opts.metrics_listen
    assert listen is not None
    b = agent._board
    state = AgentState(
        version=b["agent_version"],
        profile=agent.profile.name,
        board=b["board"],
        sensors=agent.sensors,
        queued=lambda: agent.runner.queued,
        alive=lambda: agent.runner.alive,
        job_states=lambda: [job.state for job in agent.journal.jobs(include_acknowledged=True)],
    )
    opts = agent.opts
    access = MetricsAccess(
        token=agent.token,
        cert_file=str(opts.tls_cert) if agent.tls is not None and opts.tls_cert else None,
        key_file=str(opts.tls_key) if agent.tls is not None and opts.tls_key else None,
        client_ca_file=str(opts.tls_client_ca) if agent.tls is not None and opts.tls_client_ca else None,
    )
    try:
        server = MetricsServer(listen, state, access)
    except MetricsError as err:
        agent.stop()
        raise ServeError(str(err)) from err
    needs = "the token (Authorization: Bearer)" if agent.token else ""
    needs = needs or ("a client certificate" if access.client_ca_file else "")
    log.info(
        "Prometheus metrics on %s port %d, path /metrics (%s%s)",
        listen.rpartition(":")[0],
        server.port,
        server.scheme,
        f", needs {needs}" if needs else "",
    )
    return server


def _start_advertiser(agent: AgentProcess) -> Any:
    from agent.service.discovery import Advertiser

    host, _ = split_address(agent.opts.listen)
    return Advertiser.start(
        listen_host=host,
        port=agent.port,
        profile=agent.profile.name,
        tags=agent.opts.tags,
        auth_required=agent.authenticated,
    )


def startup_line(agent: AgentProcess, host: str, port: int) -> str:
    """The first line `agent serve` prints; the host's embedded default reads the port from it: keep its shape."""
    if agent.token:
        auth = "token"
    elif agent.authenticated:
        auth = "mtls"
    else:
        auth = "tls, no client authentication" if agent.tls else "none"
    line = f"edgeprof agent listening on {host}:{port} (profile {agent.profile.name}, auth {auth})"
    if not agent.authenticated and is_loopback(host):
        line += ": any local user can run jobs here; give --token-file to allow only token holders"
    elif not agent.authenticated:
        line += ": anyone who reaches this port can run jobs here (--insecure)"
    return line


def serve(opts: ServeOptions, announce: Callable[[str], None] = print) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        agent = AgentProcess(opts)
        port = agent.start()
    except ServeError as err:
        print(f"agent: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"agent: cannot start: {err}", file=sys.stderr)
        return 2
    host, _ = split_address(opts.listen)
    announce(startup_line(agent, host, port))
    sys.stdout.flush()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        threading.Thread(target=agent.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.wait()
    return 0
