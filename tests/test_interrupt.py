"""Ctrl-C and SIGTERM stop a real `host profile` within seconds, keep what was measured, leave no process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from host.store.open import open_store
from tests.conftest import console_script
from tests.faultlib import AgentProc, TcpProxy, isolated_env, spawn, wait_for

#: Long enough that only the signal can end the measure phase.
LONG = ["--runs", "10", "--min-duration", "120", "--idle", "0", "--warmup", "2", "--threads", "1"]
#: The issue's bound for stopping and for what the host started to be gone.
STOP_BOUND_S = 5.0


class HostRun:
    """`host profile` as a user runs it, its plain progress lines (stderr is not a terminal) read live."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.env = isolated_env(tmp, EDGEPROF_CLIENT_KEY_FILE=str(tmp / "client.key"))
        self.json = tmp / "result.json"
        self.proc = spawn(
            [console_script("host"), "profile", *args, "--json", str(self.json)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def wait_exit(self, timeout_s: float) -> float:
        """Seconds until the host exited; fails the test (and kills the host) when it did not in time."""
        start = time.monotonic()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"host still running {timeout_s:g} s after the signal: {self.lines[-5:]}") from None
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _gone(processes: list[psutil.Process]) -> bool:
    for p in processes:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_on_the_embedded_agent_stops_keeps_the_samples_and_leaves_no_process(
    squeezenet: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    host = HostRun(tmp_path, str(squeezenet), *LONG)
    try:
        wait_for(lambda: host.saw("local: measure"), 120, "the measure phase")
        started = host.descendants()  # the local agent and its worker
        time.sleep(1.0)  # some inferences measured

        host.proc.send_signal(sig)
        elapsed_s = host.wait_exit(60)
    finally:
        host.kill()

    assert host.proc.returncode == 130, host.lines
    assert elapsed_s < STOP_BOUND_S, f"took {elapsed_s:.1f} s"
    assert len(started) >= 2 and wait_for(lambda: _gone(started), STOP_BOUND_S, "the agent and worker to exit")
    (device,) = json.loads(host.json.read_text())["devices"]
    assert device["status"] == "error" and device["error_kind"] == "interrupted"
    assert device["error"].startswith(f"interrupted by {sig.name} during measure")
    assert device["n_inferences"] > 0 and device["latency_ms"]["p50"] > 0
    store = open_store(Path(host.env["EDGEPROF_DB"]))
    stored = store.load_run(store.last_run_id())
    assert stored.raw["local"].end_ns.size == device["n_inferences"]  # the samples are kept, not only counted
    assert store.pending() == []  # nothing left that `host runs fetch` could never collect
    assert any("run " in line and "stored with what was measured" in line for line in host.lines)
    assert host.proc.stdout is not None
    table = host.proc.stdout.read()  # the final table says interrupted, as the README promises, not error
    row = next(line for line in table.splitlines() if line.startswith("│ local"))
    assert row.split("│")[2].strip() == "interrupted", table
    assert f"interrupted local: interrupted by {sig.name} during measure" in table


def test_ctrl_c_cancels_the_job_on_a_remote_agent(squeezenet: Path, tmp_path: Path) -> None:
    agent = AgentProc(tmp_path).start()
    try:
        host = HostRun(tmp_path, str(squeezenet), *LONG, "--device", agent.address)
        try:
            wait_for(lambda: host.saw("measure"), 120, "the measure phase")
            time.sleep(1.0)  # some inferences measured
            host.proc.send_signal(signal.SIGINT)
            elapsed_s = host.wait_exit(60)
        finally:
            host.kill()
        workers_gone = wait_for(lambda: not agent.workers(), STOP_BOUND_S, "the agent's worker to exit")
        with agent.client() as client:
            client.describe()  # still serving
    finally:
        agent.stop()

    assert host.proc.returncode == 130 and elapsed_s < STOP_BOUND_S, (elapsed_s, host.lines)
    assert workers_gone
    (device,) = json.loads(host.json.read_text())["devices"]
    assert device["error_kind"] == "interrupted" and device["n_inferences"] > 0
    # The job ended and its end was collected: nothing is pending, so nothing needs a fetch later.
    assert open_store(Path(host.env["EDGEPROF_DB"])).pending() == []


def test_second_ctrl_c_quits_at_once_when_the_agent_does_not_answer(squeezenet: Path, tmp_path: Path) -> None:
    agent = AgentProc(tmp_path).start()
    proxy = TcpProxy(agent.port)
    try:
        host = HostRun(tmp_path, str(squeezenet), *LONG, "--device", proxy.address)
        try:
            wait_for(lambda: host.saw("measure"), 120, "the measure phase")
            proxy.freeze()  # the agent can no longer answer the cancel: the first Ctrl-C waits for it
            host.proc.send_signal(signal.SIGINT)
            wait_for(lambda: host.saw("SIGINT: stopping"), 10, "the first Ctrl-C to be acknowledged")
            host.proc.send_signal(signal.SIGINT)
            elapsed_s = host.wait_exit(30)
        finally:
            host.kill()
    finally:
        proxy.stop()
        agent.stop()

    assert host.proc.returncode == 130
    assert elapsed_s < 2.0, f"second Ctrl-C took {elapsed_s:.1f} s"
    assert host.saw("SIGINT again: quitting now")


if sys.platform != "linux":  # pragma: no cover - signals and PDEATHSIG as Linux has them
    pytest.skip("Linux only", allow_module_level=True)
