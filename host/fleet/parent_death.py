"""Start a command that dies with the thread that started it, without running Python between fork and exec.

Linux's parent-death signal (prctl PR_SET_PDEATHSIG) reaches a child even when its parent is SIGKILLed: the
host's embedded agent, and every agent a test or benchmark starts, must not outlive their starter. Arming it
in `subprocess.Popen(preexec_fn=...)` is unsafe in a process with gRPC threads: preexec_fn forces a real
fork(), gRPC's fork handlers then restart a poller in the child, and the child can log "epoll_wait error: Bad
file descriptor" and hang before exec (grpc/grpc#43055; seen as agents that "did not start" in 30 s).

So the child arms the signal itself: `command(cmd)` prefixes `cmd` with `python -m host.fleet.parent_death PID --`,
which arms SIGTERM-on-parent-death, checks that its parent is still PID (it may have died before the signal
was armed), and execs `cmd`; the signal survives exec. Popen can then use vfork, which runs no fork handlers.
"""

from __future__ import annotations

import os
import signal
import sys

#: Linux prctl option: the signal a process gets when the thread that started it exits.
PR_SET_PDEATHSIG = 1


def command(cmd: list[str]) -> list[str]:
    """`cmd` run so that it gets SIGTERM when the calling thread (not merely process) of this process exits."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-m", "host.fleet.parent_death", str(os.getpid()), "--", *cmd]


def arm(parent_pid: int) -> None:
    """In the child: SIGTERM this process when its parent dies; if it already has, SIGTERM it now."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # orphaned before the signal was armed: nobody would ever send it
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        sys.exit("usage: python -m host.fleet.parent_death PARENT_PID -- COMMAND [ARG ...]")
    arm(int(argv[0]))
    cmd = argv[2:]
    try:
        os.execvp(cmd[0], cmd)
    except OSError as err:
        sys.exit(f"cannot run {cmd[0]}: {err.strerror}")


if __name__ == "__main__":
    main(sys.argv[1:])
