"""TensorRT's `trtexec` program: found, versioned, run with its output read as it is printed.

Every JetPack ships it (/usr/src/tensorrt/bin/trtexec), whatever Python the agent runs on; agent/runtimes/
trtexec_session.py builds engines and times inferences with it. What it prints and exports is read by
agent/runtimes/trtexec_output.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError, InvalidInput, InvalidModel, RuntimeMissing
from agent.runtimes.tensorrt_engines import TensorRTOptions
from agent.runtimes.trtexec_output import STARTING_INFERENCE, TrtexecLog, parse_log

TRTEXEC_ENV = "EDGEPROF_TRTEXEC"
#: Where every JetPack installs it.
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
#: Log lines kept per invocation (--dumpProfile and the placement report can be long).
MAX_LINES = 50_000


class TrtexecFailed(AgentError):
    """trtexec exited with an error or was killed."""

    kind = "crash"


@dataclass
class Invocation:
    log: TrtexecLog
    text: str
    returncode: int
    #: CLOCK_MONOTONIC when "Starting inference" was read (trtexec's time zero), None when it never came.
    zero_ns: int | None
    start_ns: int
    end_ns: int


class Trtexec:
    """One trtexec binary."""

    _versions: dict[str, str] = {}

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def find(cls) -> Trtexec | None:
        """EDGEPROF_TRTEXEC, else `trtexec` on PATH, else JetPack's /usr/src/tensorrt/bin/trtexec."""
        configured = os.environ.get(TRTEXEC_ENV, "")
        for candidate in (configured,) if configured else (shutil.which("trtexec") or "", JETPACK_TRTEXEC):
            if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return cls(candidate)
        return None

    def version(self) -> str:
        """TensorRT's version from trtexec's banner (`--help` prints it too); RuntimeMissing when it does not run."""
        known = self._versions.get(self.path)
        if known:
            return known
        run = self.invoke(["--help"])
        if not run.log.version:
            raise RuntimeMissing(f"{self.path} does not run here: {run.log.failure_line() or run.text[-200:]}")
        self._versions[self.path] = run.log.version
        return run.log.version

    def invoke(self, args: Sequence[str]) -> Invocation:
        """Run trtexec to its end, reading its output as it comes (for the time-zero line)."""
        start_ns = time.monotonic_ns()
        try:
            proc = subprocess.Popen(
                [self.path, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as err:
            raise RuntimeMissing(f"cannot run {self.path}: {err.strerror or err}") from err
        lines: list[str] = []
        zero_ns: int | None = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if zero_ns is None and STARTING_INFERENCE in line:
                zero_ns = time.monotonic_ns()
            if len(lines) < MAX_LINES:
                lines.append(line.rstrip("\n"))
        returncode = proc.wait()
        text = "\n".join(lines)
        return Invocation(parse_log(text), text, returncode, zero_ns, start_ns, time.monotonic_ns())


def precision_flags(version: str, opts: TensorRTOptions, has_qdq: bool) -> list[str]:
    """trtexec's precision flags; TensorRT 11 builds strongly typed networks only (the model's own types)."""
    major = int(version.split(".")[0]) if version[:1].isdigit() else 0
    if major >= 11:
        if opts.precision == "fp16":
            raise InvalidInput(
                f"TensorRT {version} builds strongly typed networks only: --precision fp16 needs a model converted "
                "to fp16 (e.g. ModelOpt AutoCast); give --precision fp32 to build the model as its types say"
            )
        if opts.precision == "int8" and not has_qdq:
            raise InvalidInput(
                f"TensorRT {version} quantizes only through Q/DQ nodes: give --calibration data.npz (the host "
                "inserts them) or a Q/DQ model"
            )
        return []
    return {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[opts.precision]


def has_qdq(model_path: str) -> bool:
    """Whether the ONNX model carries QuantizeLinear nodes (explicit quantization: TensorRT uses its scales)."""
    with open(model_path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            if b"QuantizeLinear" in chunk:
                return True
    return False


def dims_text(shape: Sequence[Any]) -> str:
    return "x".join(str(int(d)) for d in shape)


def failure(run: Invocation, what: str, binary: str) -> AgentError:
    line = run.log.failure_line()
    if run.returncode < 0:
        try:
            name = signal.Signals(-run.returncode).name
        except ValueError:
            name = f"signal {-run.returncode}"
        return TrtexecFailed(f"trtexec was killed ({name}) while {what}: {line}")
    if what == "building the engine":
        return InvalidModel(f"TensorRT could not build an engine from this model: {line}")
    return TrtexecFailed(f"trtexec failed (exit {run.returncode}) while {what}: {line}")
