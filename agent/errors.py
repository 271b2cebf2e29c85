"""Domain errors raised on the agent; the servicer and the job runner translate them at the boundary."""

from __future__ import annotations


class AgentError(Exception):
    """Base for errors the agent reports to a host as one line of text."""

    #: Stable machine-readable kind, carried in JobEnd.error_kind.
    kind = "internal"


class InvalidModel(AgentError):
    """The model bytes are not a model the runtime can load."""

    kind = "invalid_model"


class InvalidInput(AgentError):
    """Input shapes or user-supplied inputs do not fit the model."""

    kind = "invalid_input"


class RuntimeMissing(AgentError):
    """The runtime or execution provider asked for is not installed on this board."""

    kind = "runtime_missing"


class ModelNotFound(AgentError):
    """No model with that sha256 is in the cache."""

    kind = "not_found"


class ModelTooLarge(AgentError):
    """An upload is larger than the agent accepts, or than the free disk allows."""

    kind = "too_large"


class UploadCorrupt(AgentError):
    """The uploaded bytes do not match the announced sha256 or size."""

    kind = "invalid_model"


class Busy(AgentError):
    """The job queue is full."""

    kind = "busy"


class SensorError(AgentError):
    """A sensor could not be read (missing file, permission, protocol error)."""

    kind = "sensor"
