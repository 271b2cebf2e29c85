"""The interface every runtime backend implements, so the worker's timing loop is runtime-agnostic."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protos.inputs import TensorSpec

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ModelSession", "OpTiming", "RuntimeBackend", "TensorSpec"]


@dataclass(frozen=True)
class OpTiming:
    """One row of a per-operator profile (totals over all measured inferences)."""

    op_type: str
    node: str
    total_us: float
    calls: int
    provider: str = ""


class ModelSession(abc.ABC):
    """A loaded model, ready to run. One per worker process."""

    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    #: Providers / delegates the session really uses, preferred first.
    providers: Sequence[str]
    #: Why this runtime gives no per-operator profile ("" where it gives one): said instead of nothing.
    op_profile_unavailable: str = ""
    #: The runtime's own profiler trace (Chrome trace JSON, as Perfetto and chrome://tracing open it), once
    #: op_profile() has run; empty where the runtime has none.
    op_trace_json: bytes = b""

    @abc.abstractmethod
    def prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Bind the inputs once, before the timed loop; raise InvalidInput when they do not fit."""

    @abc.abstractmethod
    def run(self) -> None:
        """Run one inference on the bound inputs. This is what the timing loop measures."""

    def start_op_profile(self) -> None:  # noqa: B027 - optional hook
        """Start collecting per-operator timings (runtimes that cannot do it ignore this)."""

    def op_profile(self) -> tuple[list[OpTiming], list[OpTiming]]:
        """Return (by op type, top nodes) for the inferences since start_op_profile."""
        return [], []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""


class RuntimeBackend(abc.ABC):
    """A runtime that can load models of one format."""

    name: str
    formats: tuple[str, ...]

    @abc.abstractmethod
    def version(self) -> str:
        """The runtime's version string; raises RuntimeMissing when it is not installed."""

    @abc.abstractmethod
    def available_providers(self) -> list[str]:
        """Execution providers / delegates available on this board, preferred first."""

    @abc.abstractmethod
    def load(
        self,
        model_path: str,
        *,
        threads: int,
        providers: Sequence[str],
        options: Mapping[str, str],
        op_profile: bool,
    ) -> ModelSession:
        """Load a model; raise InvalidModel for bad bytes, RuntimeMissing for a missing provider."""
