"""Prometheus exposition for a lab's monitoring (`agent serve --metrics-listen ADDR`): opt-in, read-only.

Board power per rail, temperatures per thermal zone, the job queue, jobs in the journal by outcome, and
agent health, gathered at scrape time. Power sensors are read only while no job is measuring: during a
measurement the sampler owns them (a serial meter cannot answer two readers, and a scrape must never
disturb a measurement), so a scrape then shows the newest idle reading and its timestamp says how old it is.
Temperatures come from sysfs files, which any reader may read at any time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agent.sensors.base import Sensor, SensorError
from agent.sensors.thermal import find_zones
from agent.server import split_address

#: Journal states a job ends in, and the ones before; every state is always exported (0 when none).
JOB_STATES = ("queued", "running", "ok", "error", "cancelled")


class MetricsError(Exception):
    """A --metrics-listen address that cannot be served: one line for the user."""


@dataclass
class AgentState:
    """What the collector reads from the running agent (callables, so every scrape sees the present)."""

    version: str
    profile: str
    board: str
    sensors: Sequence[Sensor]
    queued: Callable[[], int]
    alive: Callable[[], bool]
    job_states: Callable[[], list[str]]


class AgentCollector:
    """A prometheus_client collector: `collect()` yields the metric families of one scrape."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self._lock = threading.Lock()
        #: (channel name, kind, role, backend) -> (value in the channel's unit, Unix time read)
        self._last: dict[tuple[str, str, str, str], tuple[float, float]] = {}

    def _read_power(self) -> None:
        if "running" in self.state.job_states():
            return  # the sampler owns the sensors during a measurement
        for sensor in self.state.sensors:
            channels = [c for c in sensor.channels() if c.kind in ("power_mw", "energy_uj")]
            if not channels:
                continue
            try:
                values = sensor.read()
            except SensorError:
                continue
            now = time.time()
            for channel, value in zip(sensor.channels(), values, strict=False):
                if channel.kind in ("power_mw", "energy_uj"):
                    self._last[(channel.name, channel.kind, channel.role, sensor.backend)] = (float(value), now)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        s = self.state
        up = GaugeMetricFamily("edgeprof_agent_up", "1 while the agent's job runner is alive and serving")
        up.add_metric([], 1.0 if s.alive() else 0.0)
        yield up
        yield InfoMetricFamily(
            "edgeprof_agent", "the agent's version, device profile and board", {
                "version": s.version, "profile": s.profile, "board": s.board,
            },
        )  # fmt: skip
        queue = GaugeMetricFamily("edgeprof_queued_jobs", "jobs waiting for the board behind the running one")
        queue.add_metric([], float(s.queued()))
        yield queue
        states = s.job_states()
        jobs = GaugeMetricFamily(
            "edgeprof_journal_jobs", "jobs in the agent's journal by state (pruned after a day)", labels=["state"]
        )
        for state in sorted(set(JOB_STATES) | set(states)):
            jobs.add_metric([state], float(states.count(state)))
        yield jobs

        with self._lock:
            self._read_power()
            last = dict(self._last)
        labels = ["channel", "role", "sensor"]
        power = GaugeMetricFamily("edgeprof_power_watts", "board power per rail (newest idle reading)", labels=labels)
        energy = CounterMetricFamily("edgeprof_energy_joules", "energy counter per rail", labels=labels)
        stamp = GaugeMetricFamily(
            "edgeprof_power_reading_timestamp_seconds", "Unix time of the power reading shown", labels=labels
        )
        for (name, kind, role, backend), (value, read_at) in sorted(last.items()):
            if kind == "power_mw":
                power.add_metric([name, role, backend], value / 1000.0)
            else:
                energy.add_metric([name, role, backend], value / 1e6)
            stamp.add_metric([name, role, backend], read_at)
        yield power
        yield energy
        yield stamp

        temps = GaugeMetricFamily("edgeprof_temperature_celsius", "thermal zone temperature", labels=["zone"])
        for zone in find_zones():
            try:
                temps.add_metric([zone.type], int(zone.temp_path.read_text().strip()) / 1000.0)
            except (OSError, ValueError):
                continue  # a zone that stopped reading is left out of this scrape
        yield temps


class MetricsServer:
    """The /metrics HTTP endpoint on its own thread; `port` is the one bound (0 in the address picks one)."""

    def __init__(self, listen: str, state: AgentState) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        try:
            host, port = split_address(listen)
        except ValueError as err:
            raise MetricsError(f"--metrics-listen '{listen}' must be HOST:PORT, e.g. 127.0.0.1:9464") from err
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(state))
        try:
            self._server, self._thread = start_http_server(port, addr=host.strip("[]"), registry=registry)
        except OSError as err:
            raise MetricsError(f"--metrics-listen {listen}: {err.strerror or err}") from err
        self.port = int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
