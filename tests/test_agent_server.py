"""The agent over real gRPC on localhost:0: describe, cached uploads, profile streams, the job queue."""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from host.fleet.client import AgentClient
from host.run.collect import JobCollector
from protos import agent_pb2 as pb


def _client(agent: Any) -> AgentClient:
    return AgentClient(f"127.0.0.1:{agent.port}")


def _upload(client: AgentClient, model: Path) -> str:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    if not client.has_model(sha):
        client.upload(model, sha, "onnx")
    return sha


def _profile(client: AgentClient, sha: str, **fields: Any) -> JobCollector:
    request = pb.ProfileRequest(job_id=uuid.uuid4().hex, model_sha256=sha, model_format="onnx", **fields)
    collector = JobCollector("agent")
    for batch in client.profile(request, timeout_s=120):
        collector.add(batch)
    return collector


def test_describe_reports_board_runtimes_and_profile(agent_process: Any) -> None:
    with _client(agent_process) as client:
        info = client.describe()
    assert info.profile == "generic-linux"
    assert info.cpu_cores >= 1 and info.ram_bytes > 0
    runtimes = {rt.name: rt for rt in info.runtimes}
    assert "CPUExecutionProvider" in runtimes["onnxruntime"].execution_providers
    assert info.auth_required is False


def test_upload_skipped_when_agent_has_model(agent_process: Any, squeezenet: Path) -> None:
    sha = hashlib.sha256(squeezenet.read_bytes()).hexdigest()
    with _client(agent_process) as client:
        assert client.has_model(sha) is False
        assert client.upload(squeezenet, sha, "onnx") == squeezenet.stat().st_size
        assert client.has_model(sha) is True
        assert client.upload(squeezenet, sha, "onnx") == 0  # already present: nothing stored again


def test_upload_with_wrong_sha_is_rejected_and_not_cached(agent_process: Any, squeezenet: Path) -> None:
    wrong = "0" * 64
    with _client(agent_process) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.upload(squeezenet, wrong, "onnx")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "hash" in err.value.details()
        assert client.has_model(wrong) is False


def test_profile_streams_requested_runs_in_numbered_batches(agent_process: Any, squeezenet: Path) -> None:
    with _client(agent_process) as client:
        sha = _upload(client, squeezenet)
        job = _profile(client, sha, runs=40, warmup=3, min_duration_s=0.1, threads=1)
    assert job.end is not None and job.end.status == pb.JobEnd.OK, job.end
    raw = job.raw()
    assert raw.start_ns.size == job.end.measured >= 40
    assert np.all(raw.end_ns > raw.start_ns)
    assert np.all(np.diff(raw.start_ns) > 0)
    names = [p.name for p in raw.phases]
    assert names.index("prepare") < names.index("warmup") < names.index("measure")
    measure = raw.phase("measure")
    assert measure is not None and measure.start_ns <= raw.start_ns[0] and raw.end_ns[-1] <= measure.end_ns
    assert job.info is not None and job.info.runtime == "onnxruntime" and job.info.threads == 1
    assert list(job.info.inputs[0].shape) == [1, 3, 224, 224]
    assert job.end.peak_rss_bytes > 0
    assert any(s.kind == "rss_bytes" and s.value.size > 0 for s in raw.series)


def test_min_duration_keeps_measuring_past_the_run_count(agent_process: Any, squeezenet: Path) -> None:
    with _client(agent_process) as client:
        sha = _upload(client, squeezenet)
        job = _profile(client, sha, runs=1, warmup=1, min_duration_s=0.6)
    raw = job.raw()
    # The minimum counts from the measure phase's start (the first inference starts a few µs after it).
    (measure,) = [p for p in raw.phases if p.name == "measure"]
    assert measure.start_ns <= raw.start_ns[0] and (raw.end_ns[-1] - measure.start_ns) / 1e9 >= 0.6
    assert raw.start_ns.size > 1


def test_concurrent_profiles_queue_and_never_overlap(agent_process: Any, shufflenet: Path) -> None:
    with _client(agent_process) as client:
        sha = _upload(client, shufflenet)
    jobs: list[JobCollector] = []

    def run() -> None:
        with _client(agent_process) as client:
            jobs.append(_profile(client, sha, runs=30, min_duration_s=0.4))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(jobs) == 2 and all(j.end is not None and j.end.status == pb.JobEnd.OK for j in jobs)
    spans = sorted((j.raw().phase("measure") for j in jobs), key=lambda p: p.start_ns)  # type: ignore[arg-type, return-value]
    first, second = spans
    assert first.end_ns <= second.start_ns, "two jobs measured at the same time"
    queued_details = [j.raw().phase("queued").detail for j in jobs]  # type: ignore[union-attr]
    assert "position 1 in queue" in queued_details


def test_malformed_request_is_invalid_argument(agent_process: Any) -> None:
    with _client(agent_process) as client, pytest.raises(grpc.RpcError) as err:
        list(client.profile(pb.ProfileRequest(job_id="../../etc", model_sha256="a" * 64, model_format="onnx")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_model_is_not_found(agent_process: Any) -> None:
    request = pb.ProfileRequest(job_id=uuid.uuid4().hex, model_sha256="b" * 64, model_format="onnx", runs=1)
    with _client(agent_process) as client, pytest.raises(grpc.RpcError) as err:
        list(client.profile(request))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "upload it first" in err.value.details()


def test_wrong_input_shape_fails_the_job_with_one_line(agent_process: Any, squeezenet: Path) -> None:
    with _client(agent_process) as client:
        sha = _upload(client, squeezenet)
        job = _profile(client, sha, runs=5, input_shapes={"data_0": "1x3x200x200"})
    assert job.end is not None and job.end.status == pb.JobEnd.ERROR
    assert job.end.error_kind == "invalid_input"
    assert "axis 2 is fixed at 224" in job.end.error and "\n" not in job.end.error
    with _client(agent_process) as client:
        assert client.health() == "SERVING"


def test_user_npz_inputs_replace_random_data(agent_process: Any, squeezenet: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, data_0=np.ones((1, 3, 224, 224), dtype=np.float32))
    with _client(agent_process) as client:
        sha = _upload(client, squeezenet)
        job = _profile(client, sha, runs=5, inputs_npz=buf.getvalue())
    assert job.end is not None and job.end.status == pb.JobEnd.OK
    assert job.info is not None and job.info.inputs_source == "npz"


def test_cancel_stops_a_running_job(agent_process: Any, squeezenet: Path) -> None:
    with _client(agent_process) as client:
        sha = _upload(client, squeezenet)
        request = pb.ProfileRequest(
            job_id=uuid.uuid4().hex, model_sha256=sha, model_format="onnx", runs=10, min_duration_s=60
        )
        collector = JobCollector("agent")
        for batch in client.profile(request, timeout_s=60):
            collector.add(batch)
            if collector.measured > 0 and not collector.finished:
                client.cancel(request.job_id)
    assert collector.end is not None and collector.end.status == pb.JobEnd.CANCELLED
    assert collector.raw().start_ns.size > 0
