"""The ONNX Runtime sessions the host opens for itself (compile steps, checks): quiet unless something fails."""

from __future__ import annotations

from typing import Any

#: ONNX Runtime's own severity for the sessions the host opens: errors only. Its warnings ("Removing
#: initializer …", coloured, on the terminal) are about the user's graph and need no action from them.
ORT_LOG_SEVERITY_ERROR = 3


def quiet_session_options() -> Any:
    """SessionOptions for a session the host opens for itself (compile, checks): ORT logs errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_SEVERITY_ERROR
    return options
