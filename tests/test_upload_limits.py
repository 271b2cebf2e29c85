"""Uploads against a real agent: space reserved per upload in flight, disk full, cached sha, leases."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from faultlib import SQUEEZENET, assert_still_serving, sha256_bytes, upload, wait_for

from agent.service.serve import AgentProcess, ServeOptions
from host.fleet.client import AgentClient
from protos import agent_pb2 as pb

MIB = 1024**2


class HeldUpload:
    """An UploadModel call that sends its first chunk, then waits for `release()` before the rest."""

    def __init__(self, client: AgentClient, data: bytes, chunk_bytes: int = MIB) -> None:
        self.data = data
        self.sha = sha256_bytes(data)
        self.sent_chunks = 0
        self._release = threading.Event()
        self._chunk_bytes = chunk_bytes
        self.future = client._stub.UploadModel.future(self._chunks(), timeout=120)

    def _chunks(self) -> Iterator[pb.ModelChunk]:
        pieces = [self.data[i : i + self._chunk_bytes] for i in range(0, len(self.data), self._chunk_bytes)]
        self.sent_chunks = 1
        yield pb.ModelChunk(sha256=self.sha, size_bytes=len(self.data), format="onnx", data=pieces[0])
        self._release.wait(120)
        for piece in pieces[1:]:
            self.sent_chunks += 1
            yield pb.ModelChunk(data=piece)

    def release(self) -> None:
        self._release.set()

    def error(self) -> grpc.RpcError:
        err = self.future.exception(timeout=60)
        assert isinstance(err, grpc.RpcError), f"upload did not fail: {self.future.result()}"
        return err


def _agent(data_dir: Path, **opts: float) -> AgentProcess:
    agent = AgentProcess(ServeOptions(listen="127.0.0.1:0", advertise=False, data_dir=data_dir, **opts))  # type: ignore[arg-type]
    agent.start()
    return agent


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs where the agent keeps its models (the journal stays on the big disk)."""
    models = tmp_path / "agent" / "models"
    models.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(models)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield tmp_path / "agent"
    finally:
        subprocess.run(["umount", "-l", str(models)], check=False)


def test_concurrent_uploads_are_refused_once_their_sizes_fill_the_cache_limit(tmp_path: Path) -> None:
    agent = _agent(tmp_path / "agent", cache_limit_mb=10, max_model_mb=8)
    try:
        with AgentClient(f"127.0.0.1:{agent.port}") as client:
            first = HeldUpload(client, os.urandom(4 * MIB))
            wait_for(lambda: agent.cache.reserved_bytes() == 4 * MIB, 30, "the first upload's reservation")
            second = HeldUpload(client, os.urandom(4 * MIB))
            wait_for(lambda: agent.cache.reserved_bytes() == 8 * MIB, 30, "the second upload's reservation")

            third = HeldUpload(client, os.urandom(4 * MIB))
            err = third.error()  # refused while the other two are still in flight

            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "uploads in progress" in err.details() and "\n" not in err.details()
            first.release()
            second.release()
            assert first.future.result(timeout=60).received_bytes == 4 * MIB
            assert second.future.result(timeout=60).received_bytes == 4 * MIB
            assert agent.cache.total_bytes() <= 10 * MIB and agent.cache.reserved_bytes() == 0
            third.release()
    finally:
        agent.stop(grace_s=0)


def test_concurrent_uploads_cannot_together_eat_the_disk_reserve(small_disk: Path) -> None:
    agent = _agent(small_disk, cache_limit_mb=1000, max_model_mb=100, disk_reserve_mb=4)
    try:
        with AgentClient(f"127.0.0.1:{agent.port}") as client:
            first = HeldUpload(client, os.urandom(8 * MIB))
            wait_for(lambda: agent.cache.reserved_bytes() == 8 * MIB, 30, "the first upload's reservation")
            second = HeldUpload(client, os.urandom(8 * MIB))
            wait_for(lambda: agent.cache.reserved_bytes() == 16 * MIB, 30, "the second upload's reservation")

            third = HeldUpload(client, os.urandom(8 * MIB))
            err = third.error()  # 24 MiB disk: 16 promised, 4 kept free, 8 more do not fit

            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "not enough free disk" in err.details() and "\n" not in err.details()
            first.release()
            second.release()
            assert first.future.result(timeout=60).received_bytes == 8 * MIB
            assert second.future.result(timeout=60).received_bytes == 8 * MIB
            third.release()
    finally:
        agent.stop(grace_s=0)


def test_disk_filling_up_mid_upload_is_resource_exhausted_and_the_partial_file_removed(small_disk: Path) -> None:
    agent = _agent(small_disk, cache_limit_mb=1000, max_model_mb=100, disk_reserve_mb=0)
    models = small_disk / "models"
    try:
        with AgentClient(f"127.0.0.1:{agent.port}") as client:
            held = HeldUpload(client, os.urandom(8 * MIB))
            wait_for(lambda: any((models / ".incoming").iterdir()), 30, "the upload's partial file")
            with open(models / "filler", "wb") as filler, pytest.raises(OSError):  # another writer takes the rest
                while True:
                    filler.write(b"\0" * MIB)
                    filler.flush()

            held.release()
            err = held.error()

            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "disk filled up" in err.details() and "\n" not in err.details()
            assert not any((models / ".incoming").iterdir()) and not client.has_model(held.sha)
            (models / "filler").unlink()
            assert_still_serving(client, upload(client))
    finally:
        agent.stop(grace_s=0)


def test_upload_of_a_cached_model_ends_without_waiting_for_its_bytes(agent_process: AgentProcess) -> None:
    with AgentClient(f"127.0.0.1:{agent_process.port}") as client:
        upload(client)
        again = HeldUpload(client, SQUEEZENET.read_bytes(), chunk_bytes=1000)

        reply = again.future.result(timeout=60)  # the rest of the stream is still held back

        assert reply.already_present and again.sent_chunks == 1
        again.release()


def test_model_uploaded_for_a_profile_is_not_evicted_by_a_concurrent_upload(tmp_path: Path) -> None:
    agent = _agent(tmp_path / "agent", cache_limit_mb=30_000 / MIB)  # squeezenet (15.6 kB) and one 10 kB blob
    try:
        with AgentClient(f"127.0.0.1:{agent.port}") as client:
            sha = upload(client)
            refused = []
            for name in ("first", "second"):
                blob = os.urandom(10_000)
                path = tmp_path / f"{name}.onnx"
                path.write_bytes(blob)
                try:
                    client.upload(path, sha256_bytes(blob), "onnx")
                except grpc.RpcError as err:
                    refused.append((name, err.code(), err.details()))

            assert [r[:2] for r in refused] == [("second", grpc.StatusCode.RESOURCE_EXHAUSTED)], refused
            assert "just uploaded" in refused[0][2]
            assert_still_serving(client, sha)  # the Profile that follows the upload still finds its model
    finally:
        agent.stop(grace_s=0)


def test_space_another_writer_takes_mid_upload_is_refused_before_the_disk_is_full(small_disk: Path) -> None:
    agent = _agent(small_disk, cache_limit_mb=1000, max_model_mb=100, disk_reserve_mb=4)
    models = small_disk / "models"
    try:
        with AgentClient(f"127.0.0.1:{agent.port}") as client:
            held = HeldUpload(client, os.urandom(8 * MIB))
            wait_for(
                lambda: [p.stat().st_size for p in (models / ".incoming").iterdir()] == [MIB],
                30,
                "the upload's first chunk on disk",
            )
            # Another writer leaves 6 MiB free: the next chunk still fits, but then 5 MiB are free for the
            # 6 MiB this upload was promised and the 4 MiB kept free. It is refused there, not at ENOSPC.
            with open(models / "filler", "wb") as filler:
                filler.write(b"\0" * (shutil.disk_usage(models).free - 6 * MIB))

            held.release()
            err = held.error()

            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert re.fullmatch(
                r"the agent's disk filled up after 2\.1 MB of a 8\.4 MB model \(5\.\d MB free, 4\.2 MB kept free\):"
                r" upload discarded",
                err.details(),
            ), err.details()
            assert not any((models / ".incoming").iterdir()) and not client.has_model(held.sha)
    finally:
        agent.stop(grace_s=0)
