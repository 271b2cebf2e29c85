"""Hostile uploads: a sha mismatch, a short stream, an oversized model, truncated or random bytes as a model."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from faultlib import SQUEEZENET, assert_still_serving, isolated_env, profile_request, sha256_bytes, upload

from agent.service.serve import AgentProcess, ServeOptions
from host.fleet.client import AgentClient
from protos import agent_pb2 as pb


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    data_dir = tmp_path_factory.mktemp("hostile")
    proc = AgentProcess(ServeOptions(listen="127.0.0.1:0", advertise=False, data_dir=data_dir, max_model_mb=1))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(grace_s=0)


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[AgentClient]:
    with AgentClient(f"127.0.0.1:{agent.port}") as c:
        yield c


def _cached(agent: AgentProcess) -> set[str]:
    models = agent.opts.data_dir / "models"
    return {p.name for p in models.iterdir() if p.is_file()} | {
        f".incoming/{p.name}" for p in (models / ".incoming").iterdir()
    }


def _upload_error(client: AgentClient, path: Path, sha: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        client.upload(path, sha, "onnx")
    return caught.value


def _profile_end(client: AgentClient, sha: str) -> pb.JobEnd:
    batches = list(client.profile(profile_request(sha), timeout_s=60))
    assert batches[-1].HasField("end")
    return batches[-1].end


def test_upload_with_sha_mismatch_is_rejected_and_not_cached(agent: AgentProcess, client: AgentClient) -> None:
    before = _cached(agent)
    claimed = sha256_bytes(b"some other model")

    err = _upload_error(client, SQUEEZENET, claimed)

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "discarded" in err.details() and "\n" not in err.details()
    assert not client.has_model(claimed)
    assert _cached(agent) == before


def test_upload_stream_shorter_than_announced_is_rejected_and_not_cached(
    agent: AgentProcess, client: AgentClient
) -> None:
    before = _cached(agent)
    data = SQUEEZENET.read_bytes()
    chunks = iter([pb.ModelChunk(sha256=sha256_bytes(data), size_bytes=len(data), format="onnx", data=data[:1000])])

    with pytest.raises(grpc.RpcError) as caught:
        client._stub.UploadModel(chunks, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"ended after 1000 of {len(data)} bytes" in caught.value.details()
    assert _cached(agent) == before


def test_model_over_max_model_mb_is_refused_naming_the_flag(
    agent: AgentProcess, client: AgentClient, tmp_path: Path
) -> None:
    big = tmp_path / "big.onnx"
    big.write_bytes(os.urandom(2 * 1024**2))

    err = _upload_error(client, big, sha256_bytes(big.read_bytes()))

    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-model-mb" in err.details()
    assert not client.has_model(sha256_bytes(big.read_bytes()))


@pytest.mark.parametrize("content", ["truncated", "random"])
def test_unloadable_model_fails_its_job_with_one_line(client: AgentClient, tmp_path: Path, content: str) -> None:
    data = SQUEEZENET.read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[: len(data) // 2] if content == "truncated" else os.urandom(4096))
    sha = upload(client, bad)

    end = _profile_end(client, sha)

    assert end.status == pb.JobEnd.ERROR and end.error_kind == "invalid_model", end
    assert end.error and "\n" not in end.error and end.phase == "prepare"
    assert_still_serving(client, upload(client))


def test_host_profile_of_random_bytes_prints_one_line(agent: AgentProcess, tmp_path: Path) -> None:
    bad = tmp_path / "random.onnx"
    bad.write_bytes(os.urandom(4096))

    result = subprocess.run(
        [sys.executable, "-m", "host", "profile", str(bad), "--device", f"127.0.0.1:{agent.port}", "-q"],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        text=True,
        capture_output=True,
        timeout=60,
    )

    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "random.onnx" in lines[0], result.stderr
