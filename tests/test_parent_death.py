"""host.fleet.parent_death: children that die with their starter, started without Python between fork and exec."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from host.fleet import parent_death
from tests.faultlib import REPO

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")

#: In a fresh interpreter: a fork hook that leaves a mark, then the host's embedded agent and a test's agent
#: started and stopped. The hook stands for gRPC's own fork handlers, which restart its poller in a forked child
#: and can hang it before exec; they run exactly when Python's do (a real fork, as preexec_fn forces).
_START_AGENTS = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from host.fleet.local_agent import LocalAgent
from tests.faultlib import AgentProc
os.register_at_fork(after_in_child=lambda: os.write(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT), b"forked"))
with LocalAgent(Path(sys.argv[3]) / "local") as local:
    print(local.address)
agent = AgentProc(Path(sys.argv[3])).start()
print(agent.address)
agent.stop()
"""


def test_agents_are_started_without_running_fork_handlers_in_the_child(tmp_path: Path) -> None:
    mark = tmp_path / "fork-handler-ran"
    proc = subprocess.run(
        [sys.executable, "-c", _START_AGENTS, str(mark), str(REPO), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert proc.returncode == 0, proc.stderr
    assert [line.startswith("127.0.0.1:") for line in proc.stdout.splitlines()] == [True, True]
    assert not mark.exists()  # with preexec_fn the hook runs in the child and leaves the mark


def test_the_command_runs_with_its_arguments_and_exit_status(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getpid(), sys.argv[1:]); sys.exit(3)"
    proc = subprocess.Popen(
        parent_death.command([sys.executable, "-c", code, "a b", "c"]), stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=60)

    assert proc.returncode == 3
    assert out.split(" ", 1) == [str(proc.pid), "['a b', 'c']\n"]  # exec'd in place: the pid a caller kills


def test_a_child_whose_parent_is_already_gone_terminates_itself_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cmd = parent_death.command([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    cmd[cmd.index("--") - 1] = str(os.getpid() + 1)  # the parent it expects is not the one it has

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    assert proc.returncode == -signal.SIGTERM
    assert not marker.exists()


_PARENT = r"""
import subprocess, sys, time
from host.fleet import parent_death
from tests.faultlib import REPO
child_code = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: (print('sigterm', flush=True), sys.exit(0)))\n"
    "print(os.getpid(), flush=True)\n"
    "time.sleep(600)\n"
)
subprocess.Popen(parent_death.command([sys.executable, "-c", child_code]))
time.sleep(600)
"""


def _line(fd: int, timeout_s: float) -> str:
    """One line from a pipe, or what came before the timeout or end of file."""
    data = b""
    while not data.endswith(b"\n") and select.select([fd], [], [], timeout_s)[0]:
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def test_the_child_gets_sigterm_when_its_parent_is_killed() -> None:
    reader, writer = os.pipe()
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=writer)
    os.close(writer)
    child_pid = 0
    try:
        child_pid = int(_line(reader, 60))
        parent.send_signal(signal.SIGKILL)  # no cleanup of its own: only the kernel can tell the child
        parent.wait(timeout=30)

        assert _line(reader, 30) == "sigterm"
    finally:
        parent.kill()
        parent.wait(timeout=30)
        if child_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
        os.close(reader)


def test_a_malformed_launch_is_refused_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "host.fleet.parent_death", "not-a-pid", "--", "true"], capture_output=True, text=True
    )

    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("usage: python -m host.fleet.parent_death PARENT_PID -- COMMAND")
