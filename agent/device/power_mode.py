"""`agent serve --power-mode ID`: a Jetson's nvpmodel mode set for each job and restored after it.

nvpmodel changes clocks and online cores only as root, so the agent checks at start that it may: it runs as
root, or `sudo -n nvpmodel` works for its user (a sudoers rule). Otherwise `agent serve` refuses with one line
instead of measuring in a mode nobody asked for. Some mode changes need a reboot (nvpmodel then asks on stdin):
the agent answers no, sees the mode unchanged, and fails the job with one line saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from agent.device.jetson_state import PowerMode, conf_modes, find_nvpmodel, read_power_mode
from agent.errors import AgentError


class PowerModeRefused(AgentError):
    """The agent cannot set the power mode asked for (not a Jetson, no rights, no such mode, reboot needed)."""

    kind = "runtime_missing"


@dataclass
class PowerModeControl:
    mode_id: int
    nvpmodel: str
    #: Command prefix that gives root: [] when the agent is root, ["sudo", "-n"] when sudoers allows it.
    prefix: list[str] = field(default_factory=list)
    _restore_to: PowerMode | None = None

    @classmethod
    def checked(cls, mode_id: int, euid: int | None = None) -> PowerModeControl:
        """A control for `agent serve --power-mode`, or PowerModeRefused with the one line to print."""
        nvpmodel = find_nvpmodel()
        if nvpmodel is None:
            raise PowerModeRefused("--power-mode is for Jetson boards: there is no nvpmodel here")
        modes = conf_modes()
        if modes and mode_id not in modes:
            known = ", ".join(f"{i} ({name})" for i, name in sorted(modes.items()))
            raise PowerModeRefused(f"--power-mode {mode_id}: this board's nvpmodel.conf has modes {known}")
        uid = os.geteuid() if euid is None else euid
        if uid == 0:
            return cls(mode_id, nvpmodel)
        sudo = shutil.which("sudo")
        if sudo is not None:
            try:
                ok = (
                    subprocess.run(
                        [sudo, "-n", nvpmodel, "-q"], capture_output=True, timeout=15, stdin=subprocess.DEVNULL
                    ).returncode
                    == 0
                )
            except (OSError, subprocess.SubprocessError):
                ok = False
            if ok:
                return cls(mode_id, nvpmodel, [sudo, "-n"])
        raise PowerModeRefused(
            f"--power-mode {mode_id} needs root: nvpmodel sets clocks only as root. Run the agent as root, allow its "
            f"user `sudo -n {nvpmodel}` in sudoers, or set the mode yourself (sudo nvpmodel -m {mode_id}) and leave "
            "--power-mode out"
        )

    def _set(self, mode_id: int) -> str:
        """Run `nvpmodel -m ID` (answering no to a reboot prompt); its output."""
        try:
            out = subprocess.run(
                [*self.prefix, self.nvpmodel, "-m", str(mode_id)],
                capture_output=True,
                text=True,
                input="no\n",
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise PowerModeRefused(f"nvpmodel -m {mode_id} did not run: {err}") from err
        return " ".join((out.stdout + " " + out.stderr).split())

    def apply(self, found: PowerMode | None) -> dict[str, str]:
        """Before a job: set the mode (unless already in force); notes; PowerModeRefused when it does not take."""
        self._restore_to = None
        if found is not None and found.mode_id == self.mode_id:
            return {"jetson.power_mode_set": f"{self.mode_id} (already in force)"}
        said = self._set(self.mode_id)
        now = read_power_mode(self.nvpmodel)
        if now is None or now.mode_id != self.mode_id:
            reboot = "reboot" in said.lower()
            why = "it needs a reboot to take effect" if reboot else f"nvpmodel said: {said[:200] or 'nothing'}"
            raise PowerModeRefused(f"power mode {self.mode_id} could not be set for this job: {why}")
        self._restore_to = found
        before = found.describe() if found is not None else "unknown"
        return {"jetson.power_mode_set": f"{now.describe()} for this job (was {before})"}

    def restore(self) -> dict[str, str]:
        """After a job: back to the mode found before it."""
        previous, self._restore_to = self._restore_to, None
        if previous is None or previous.mode_id is None:
            return {}
        self._set(previous.mode_id)
        now = read_power_mode(self.nvpmodel)
        if now is None or now.mode_id != previous.mode_id:
            return {"jetson.power_mode_restore": f"failed: still {now.describe() if now else 'unknown'}"}
        return {"jetson.power_mode_restore": f"restored to {previous.describe()}"}
