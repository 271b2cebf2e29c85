"""The agent's content-addressed model cache: files named by sha256, verified on upload, LRU-evicted.

Space is reserved when an upload starts, under one lock, against both the cache limit and the disk:
concurrent uploads cannot together overshoot either, and a refusal comes before any byte is stored.
A model just uploaded (or confirmed by HasModel) is leased for LEASE_S, so a concurrent upload's
eviction cannot remove it before the host's Profile, which then pins it for the job.

A GenAI model directory arrives as a tar (host/prepare/genai_pack.py) and is cached like any model; a job unpacks it
once into .unpacked/<sha256>/ (agent/storage/genai_unpack.py: no member may escape it, no links, no sparse files, bytes
written counted), and evicting the tar removes its unpacked directory. The unpacked bytes count as the tar's:
an unpack reserves its size against the cache limit and the disk reserve as an upload does, is checked against
the free disk as it writes, and its size (kept in the directory's .complete marker) counts in the cache's total.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import threading
import time
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
#: How long a model just uploaded or confirmed by HasModel is kept from eviction, waiting for its Profile.
LEASE_S = 120.0
#: The marker of a finished unpack; it holds the unpacked size in bytes (counted in the cache's total).
_COMPLETE = ".complete"


def check_sha256(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256 or ""):  # `$` alone would let a trailing newline through
        raise InvalidInput(f"'{sha256[:80]}' is not a sha256 (64 lower-case hex digits)")
    return sha256


@dataclass
class UploadResult:
    sha256: str
    received_bytes: int
    already_present: bool


@dataclass(eq=False)  # compared by identity: two uploads of one size are still two reservations
class _Reservation:
    """Space held for one upload in flight: its announced size, and how much of it is on disk yet."""

    size_bytes: int
    written_bytes: int = 0

    @property
    def unwritten_bytes(self) -> int:
        return self.size_bytes - self.written_bytes


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB"


class ModelCache:
    """Models stored as <dir>/<sha256>: never under a name or path the client chose."""

    def __init__(
        self,
        directory: Path,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
        disk_reserve_bytes: int = FREE_DISK_RESERVE_BYTES,
        lease_s: float = LEASE_S,
    ) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes
        self.max_model_bytes = max_model_bytes
        self.disk_reserve_bytes = disk_reserve_bytes
        self.lease_s = lease_s
        self._incoming = directory / ".incoming"
        self._incoming.mkdir(parents=True, exist_ok=True)
        for stale in self._incoming.iterdir():  # uploads cut off by a crash
            stale.unlink(missing_ok=True)
        self._lock = threading.Lock()
        # Models in use by a queued or running job are never evicted.
        self._pinned: dict[str, int] = {}
        # sha256 -> time.monotonic() until which the model is kept for the Profile that should follow.
        self._leases: dict[str, float] = {}
        self._reservations: list[_Reservation] = []
        self._unpacked = directory / ".unpacked"
        self._unpacked.mkdir(exist_ok=True)
        for stale in self._unpacked.glob(".tmp-*"):  # unpacks cut off by a crash
            shutil.rmtree(stale, ignore_errors=True)

    def path(self, sha256: str) -> Path:
        return self.directory / check_sha256(sha256)

    def has(self, sha256: str, *, lease: bool = False) -> int | None:
        """Size of the cached model, or None when absent; `lease` keeps it from eviction for lease_s."""
        try:
            size = self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None
        if lease:
            self._lease(sha256)
        return size

    def use(self, sha256: str) -> Path:
        """The path of a cached model, marked as recently used."""
        path = self.path(sha256)
        try:
            os.utime(path)
        except FileNotFoundError as err:
            raise ModelNotFound(f"model {sha256[:12]} is not in this agent's cache: upload it first") from err
        return path

    def unpacked(self, sha256: str) -> Path:
        """The directory a cached GenAI tar unpacks to, unpacked on first use; InvalidModel for a bad tar,
        ModelTooLarge when its unpacked size does not fit the cache limit or the free disk."""
        from agent.storage.genai_unpack import unpack, unpacked_size

        tar_path = self.use(sha256)
        target = self._unpacked / sha256
        if (target / _COMPLETE).is_file():
            return target
        shutil.rmtree(target, ignore_errors=True)
        size_bytes = unpacked_size(tar_path, max_bytes=self.max_model_bytes)
        reservation = self._reserve(size_bytes, what="unpacked GenAI model")
        self._unpacked.mkdir(parents=True, exist_ok=True)
        scratch = self._unpacked / f".tmp-{uuid.uuid4().hex}"

        def written(n_bytes: int) -> None:
            reservation.written_bytes += n_bytes
            self._check_disk_while_receiving(reservation.written_bytes, size_bytes, doing="unpacking")

        try:
            try:
                total = unpack(tar_path, scratch, max_bytes=min(size_bytes, self.max_model_bytes), on_write=written)
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise ModelTooLarge(
                        f"the agent's disk filled up while unpacking a {_mb(size_bytes)} GenAI model "
                        f"({os.strerror(err.errno)})"
                    ) from err
                raise
            (scratch / _COMPLETE).write_text(str(total))
            with self._lock:
                self._reservations.remove(reservation)
                self._evict(total, keep=sha256)
                os.replace(scratch, target)
        finally:
            with self._lock:
                if reservation in self._reservations:
                    self._reservations.remove(reservation)
            shutil.rmtree(scratch, ignore_errors=True)
        return target

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
        """Cached models and what they unpacked to."""
        return sum(self._footprint(p) for p in self._models())

    def _footprint(self, path: Path) -> int:
        """A cached model's bytes plus its unpacked directory's (recorded in its .complete marker)."""
        try:
            unpacked = int((self._unpacked / path.name / _COMPLETE).read_text() or 0)
        except (OSError, ValueError):
            unpacked = 0
        return _size(path) + unpacked

    def reserved_bytes(self) -> int:
        """Space held for uploads in flight."""
        with self._lock:
            return sum(r.size_bytes for r in self._reservations)

    def store(self, sha256: str, size_bytes: int, chunks: Iterable[bytes]) -> UploadResult:
        """Write an upload to a temporary file, hashing as it comes; keep it only if it matches.

        A model already cached ends the upload at once, without reading the stream.
        """
        check_sha256(sha256)
        if size_bytes > self.max_model_bytes:
            raise ModelTooLarge(
                f"model is {_mb(size_bytes)}, this agent accepts at most {_mb(self.max_model_bytes)} "
                "(agent serve --max-model-mb)"
            )
        if self.has(sha256, lease=True) is not None:
            return UploadResult(sha256, 0, already_present=True)
        reservation = self._reserve(size_bytes)
        tmp = self._incoming / uuid.uuid4().hex
        try:
            received = self._receive(tmp, sha256, reservation, chunks)
            with self._lock:
                self._reservations.remove(reservation)
                self._evict(size_bytes)
                os.replace(tmp, self.directory / sha256)
                self._leases[sha256] = time.monotonic() + self.lease_s
        finally:
            with self._lock:
                if reservation in self._reservations:
                    self._reservations.remove(reservation)
            tmp.unlink(missing_ok=True)
        return UploadResult(sha256, received, already_present=False)

    def _receive(self, tmp: Path, sha256: str, reservation: _Reservation, chunks: Iterable[bytes]) -> int:
        size_bytes = reservation.size_bytes
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
                    reservation.written_bytes = received
                    self._check_disk_while_receiving(received, size_bytes)
                fh.flush()
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise ModelTooLarge(
                    f"the agent's disk filled up after {_mb(received)} of a {_mb(size_bytes)} model "
                    f"({os.strerror(err.errno)}): upload discarded"
                ) from err
            raise
        if received != size_bytes:
            raise UploadCorrupt(f"upload ended after {received} of {size_bytes} bytes")
        if digest.hexdigest() != sha256:
            raise UploadCorrupt(
                f"uploaded bytes hash to {digest.hexdigest()[:12]}, not the announced {sha256[:12]}: discarded"
            )
        return received

    def _reserve(self, size_bytes: int, what: str = "model") -> _Reservation:
        """Hold space for an upload (or an unpack) against the cache limit and the free disk, or refuse it now."""
        with self._lock:
            in_flight = sum(r.size_bytes for r in self._reservations)
            kept = self._kept_bytes()
            if kept + in_flight + size_bytes > self.limit_bytes:
                raise ModelTooLarge(
                    f"no room in the agent's model cache for a {_mb(size_bytes)} {what}: limit "
                    f"{_mb(self.limit_bytes)}, {_mb(kept)} held by models in use or just uploaded, "
                    f"{_mb(in_flight)} by uploads in progress (agent serve --cache-limit-mb)"
                )
            unwritten = sum(r.unwritten_bytes for r in self._reservations)
            free = shutil.disk_usage(self.directory).free
            if free - unwritten - size_bytes < self.disk_reserve_bytes:
                raise ModelTooLarge(
                    f"not enough free disk on the agent for a {_mb(size_bytes)} {what}: {_mb(free)} free, "
                    f"{_mb(unwritten)} promised to uploads in progress, {_mb(self.disk_reserve_bytes)} kept free"
                )
            reservation = _Reservation(size_bytes)
            self._reservations.append(reservation)
            return reservation

    def _check_disk_while_receiving(self, received: int, size_bytes: int, doing: str = "upload") -> None:
        """Refuse the upload (or unpack) when something else has taken the disk space it was promised."""
        with self._lock:
            unwritten = sum(r.unwritten_bytes for r in self._reservations)
        free = shutil.disk_usage(self.directory).free
        if free - unwritten < self.disk_reserve_bytes:
            raise ModelTooLarge(
                f"the agent's disk filled up after {_mb(received)} of a {_mb(size_bytes)} model "
                f"({_mb(free)} free, {_mb(self.disk_reserve_bytes)} kept free): {doing} discarded"
            )

    def _models(self) -> list[Path]:
        return [p for p in self.directory.iterdir() if p.is_file() and _SHA256.match(p.name)]

    def _held(self, sha256: str, now: float) -> bool:
        """Pinned by a job, or leased for the Profile that should follow an upload or HasModel."""
        if sha256 in self._pinned:
            return True
        until = self._leases.get(sha256)
        if until is not None and until <= now:
            del self._leases[sha256]
            return False
        return until is not None

    def _lease(self, sha256: str) -> None:
        with self._lock:
            self._leases[sha256] = time.monotonic() + self.lease_s

    def _kept_bytes(self) -> int:
        """Bytes of cached models that eviction may not remove now (caller holds the lock)."""
        now = time.monotonic()
        kept = 0
        for path in self._models():
            if self._held(path.name, now):
                kept += self._footprint(path)
        return kept

    def _evict(self, incoming_bytes: int, keep: str = "") -> None:
        """Remove least-recently-used models (with what they unpacked to) until the new bytes and the uploads
        in flight fit under the limit; `keep` is a model that must stay (the one being unpacked)."""
        now = time.monotonic()
        models = sorted(self._models(), key=lambda p: p.stat().st_mtime)
        in_flight = sum(r.size_bytes for r in self._reservations)
        total = sum(self._footprint(p) for p in models) + in_flight
        for path in models:
            if total + incoming_bytes <= self.limit_bytes:
                break
            if self._held(path.name, now) or path.name == keep:
                continue
            total -= self._footprint(path)
            path.unlink(missing_ok=True)
            shutil.rmtree(self._unpacked / path.name, ignore_errors=True)
        if total + incoming_bytes > self.limit_bytes:
            raise ModelTooLarge(
                f"no room in the agent's model cache for a {_mb(incoming_bytes)} model: limit "
                f"{_mb(self.limit_bytes)}, the rest held by models in use, just uploaded or in flight: upload discarded"
            )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
