"""TensorRT runtime: an engine built on the board from the ONNX model, measured by trtexec or the Python bindings.

Chosen by the job's options (`host profile --runtime tensorrt --precision fp16 [--dla N]`, or the device profile's
`runtime = "tensorrt"` with a `[tensorrt]` table). Two timers behind one backend:
- `trtexec` (agent/runtimes/trtexec_session.py), a native runner shipped with TensorRT on every JetPack
  (/usr/src/tensorrt/bin/trtexec): it builds the engine and times every inference itself (--exportTimes). It
  serves JetPacks whose TensorRT Python bindings do not match the agent's Python.
- the Python bindings (agent/runtimes/tensorrt_python.py), where `tensorrt` imports (x86 boxes with the
  `tensorrt` wheels, JetPack's system Python): the worker's own timing loop around each execution.
Option `tensorrt.timer` picks one; by default trtexec where it is found, else the bindings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.errors import RuntimeMissing
from agent.runtimes.base import ModelSession, RuntimeBackend
from agent.runtimes.tensorrt_engines import TensorRTOptions


class TensorRTBackend(RuntimeBackend):
    name = "tensorrt"
    formats = ("onnx",)

    def _trtexec(self) -> Any:
        from agent.runtimes.trtexec import Trtexec

        return Trtexec.find()

    def version(self) -> str:
        trtexec = self._trtexec()
        if trtexec is not None:
            return str(trtexec.version())
        from agent.runtimes.tensorrt_python import bindings_version

        found = bindings_version()
        if found is None:
            raise RuntimeMissing(
                "TensorRT is not installed on this board: no trtexec (JetPack: /usr/src/tensorrt/bin/trtexec, or set "
                "EDGEPROF_TRTEXEC) and no `tensorrt` Python module (x86: pip install 'edgeprof[tensorrt]')"
            )
        return found

    def available_providers(self) -> list[str]:
        """The timers found here, preferred first."""
        found = []
        if self._trtexec() is not None:
            found.append("trtexec")
        from agent.runtimes.tensorrt_python import bindings_version

        if bindings_version() is not None:
            found.append("python")
        if not found:
            self.version()  # raises RuntimeMissing with the install hint
        return found

    def load(
        self,
        model_path: str,
        *,
        threads: int,
        providers: Sequence[str],
        options: Mapping[str, str],
        op_profile: bool,
    ) -> ModelSession:
        opts = TensorRTOptions.from_options(options)
        trtexec = self._trtexec() if opts.timer in ("", "trtexec") else None
        if trtexec is not None:
            from agent.runtimes.trtexec_session import load_trtexec_session

            return load_trtexec_session(trtexec, model_path, opts, options)
        if opts.timer == "trtexec":
            raise RuntimeMissing(
                "no trtexec on this board (JetPack: /usr/src/tensorrt/bin/trtexec, or set EDGEPROF_TRTEXEC)"
            )
        from agent.runtimes.tensorrt_python import load_python_session

        return load_python_session(model_path, opts, options, op_profile)
