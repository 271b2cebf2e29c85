"""The agent's content-addressed model cache: files named by sha256, verified on upload, LRU-evicted."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import InvalidInput, ModelNotFound, ModelTooLarge, UploadCorrupt

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_LIMIT_BYTES = 2 * 1024**3
DEFAULT_MAX_MODEL_BYTES = 1024**3
#: Disk left free after an upload, so a full cache never fills the board's disk.
FREE_DISK_RESERVE_BYTES = 256 * 1024**2


def check_sha256(sha256: str) -> str:
    if not _SHA256.match(sha256 or ""):
        raise InvalidInput(f"'{sha256[:80]}' is not a sha256 (64 lower-case hex digits)")
    return sha256


@dataclass
class UploadResult:
    sha256: str
    received_bytes: int
    already_present: bool


class ModelCache:
    """Models stored as <dir>/<sha256>: never under a name or path the client chose."""

    def __init__(
        self,
        directory: Path,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    ) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes
        self.max_model_bytes = max_model_bytes
        self._incoming = directory / ".incoming"
        self._incoming.mkdir(parents=True, exist_ok=True)
        for stale in self._incoming.iterdir():  # uploads cut off by a crash
            stale.unlink(missing_ok=True)
        self._lock = threading.Lock()
        # Models in use by a queued or running job are never evicted.
        self._pinned: dict[str, int] = {}

    def path(self, sha256: str) -> Path:
        return self.directory / check_sha256(sha256)

    def has(self, sha256: str) -> int | None:
        """Size of the cached model, or None when absent."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def use(self, sha256: str) -> Path:
        """The path of a cached model, marked as recently used."""
        path = self.path(sha256)
        try:
            os.utime(path)
        except FileNotFoundError as err:
            raise ModelNotFound(f"model {sha256[:12]} is not in this agent's cache: upload it first") from err
        return path

    def pin(self, sha256: str) -> None:
        with self._lock:
            self._pinned[sha256] = self._pinned.get(sha256, 0) + 1

    def unpin(self, sha256: str) -> None:
        with self._lock:
            left = self._pinned.get(sha256, 0) - 1
            if left > 0:
                self._pinned[sha256] = left
            else:
                self._pinned.pop(sha256, None)

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._models())

    def store(self, sha256: str, size_bytes: int, chunks: Iterable[bytes]) -> UploadResult:
        """Write an upload to a temporary file, hashing as it comes; keep it only if it matches."""
        check_sha256(sha256)
        if size_bytes > self.max_model_bytes:
            raise ModelTooLarge(
                f"model is {size_bytes / 1e6:.1f} MB, this agent accepts at most {self.max_model_bytes / 1e6:.1f} MB "
                "(agent serve --max-model-mb)"
            )
        free = shutil.disk_usage(self.directory).free
        if size_bytes + FREE_DISK_RESERVE_BYTES > free:
            raise ModelTooLarge(
                f"not enough free disk on the agent for a {size_bytes / 1e6:.1f} MB model ({free / 1e6:.0f} MB free)"
            )
        if self.has(sha256) is not None:
            received = sum(len(c) for c in chunks)  # drain the stream; nothing to write
            return UploadResult(sha256, received, already_present=True)
        tmp = self._incoming / uuid.uuid4().hex
        digest = hashlib.sha256()
        received = 0
        try:
            with open(tmp, "wb") as fh:
                for chunk in chunks:
                    received += len(chunk)
                    if received > size_bytes:
                        raise UploadCorrupt(f"upload sent more than the announced {size_bytes} bytes")
                    digest.update(chunk)
                    fh.write(chunk)
            if received != size_bytes:
                raise UploadCorrupt(f"upload ended after {received} of {size_bytes} bytes")
            if digest.hexdigest() != sha256:
                raise UploadCorrupt(
                    f"uploaded bytes hash to {digest.hexdigest()[:12]}, not the announced {sha256[:12]}: discarded"
                )
            with self._lock:
                self._evict(size_bytes)
                os.replace(tmp, self.directory / sha256)
        finally:
            tmp.unlink(missing_ok=True)
        return UploadResult(sha256, received, already_present=False)

    def _models(self) -> list[Path]:
        return [p for p in self.directory.iterdir() if p.is_file() and _SHA256.match(p.name)]

    def _evict(self, incoming_bytes: int) -> None:
        """Remove least-recently-used models until the new one fits under the limit."""
        models = sorted(self._models(), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in models)
        for path in models:
            if total + incoming_bytes <= self.limit_bytes:
                break
            if path.name in self._pinned:
                continue
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
        if total + incoming_bytes > self.limit_bytes and incoming_bytes > self.limit_bytes:
            raise ModelTooLarge(
                f"model of {incoming_bytes / 1e6:.1f} MB exceeds the agent's cache limit"
                f" of {self.limit_bytes / 1e6:.1f} MB"
            )
