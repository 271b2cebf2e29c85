"""Processes a test run starts die with it, even when the run is SIGKILLed (a CI timeout, a lost runner).

A pytest process runs a tiny test that starts an agent through one of the launchers (tests/faultlib.py,
tests/test_discovery.py, bench/harness.py) and hangs; this test SIGKILLs that pytest and waits for the
agent to go. Without the parent-death signal the agent keeps running, re-parented to init.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.faultlib import REPO, spawn, wait_for

#: Each launcher's way of starting an agent; `tmp` is a fresh directory, the value of `pid` is written out.
LAUNCHERS = {
    "faultlib.AgentProc": "from faultlib import AgentProc\npid = AgentProc(tmp).start().pid\n",
    "test_discovery.spawn_agents": (
        "from tests.test_discovery import spawn_agents\n"
        "(agent,) = spawn_agents([('generic-linux', 'orphan-test')], tmp)\n"
        "pid = agent.proc.pid\n"
    ),
    "bench.harness.start_agent": (
        "from harness import start_agent\npid = start_agent(tmp / 'agent', dict(os.environ)).pid\n"
    ),
}

HANGING_TEST = """
import os, sys, time
from pathlib import Path
sys.path[:0] = [{repo!r}, {tests!r}, {bench!r}]

def test_start_an_agent_and_hang(tmp_path):
    tmp = tmp_path
{launch}
    Path({pid_file!r}).write_text(str(pid))
    time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_an_agent_a_test_started_dies_with_a_killed_test_run(tmp_path: Path, launcher: str) -> None:
    pid_file = tmp_path / "agent.pid"
    launch = "".join(f"    {line}\n" for line in LAUNCHERS[launcher].splitlines())
    (tmp_path / "test_hang.py").write_text(
        HANGING_TEST.format(
            repo=str(REPO),
            tests=str(REPO / "tests"),
            bench=str(REPO / "bench"),
            launch=launch,
            pid_file=str(pid_file),
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = spawn(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hang.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    agent_pid = 0
    try:
        wait_for(lambda: pid_file.exists() or run.poll() is not None, 120, "the inner test to start its agent")
        assert pid_file.exists(), run.communicate(timeout=10)[0][-3000:]
        agent_pid = int(pid_file.read_text())
        assert not _gone(agent_pid)

        run.send_signal(signal.SIGKILL)  # no fixture teardown, no atexit: only the kernel can end the agent
        run.wait(timeout=10)

        wait_for(lambda: _gone(agent_pid), 30, f"agent {agent_pid} to die with the killed test run")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)
        if run.stdout is not None:
            run.stdout.close()
        if agent_pid and not _gone(agent_pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(agent_pid).kill()
