"""The job runner's promises over real gRPC, each against a model that is uploaded (so a request that
slipped past a check would run, not end as NOT_FOUND): range checks, the queue bound (cancelled jobs do
not count), acknowledged batches, failed allocations reported as out of memory."""

from __future__ import annotations

import io
import math
from typing import Any

import grpc
import numpy as np
import pytest
from faultlib import profile_request, upload, wait_for
from onnx import TensorProto, helper
from test_faults_runner import _Stream

from host.fleet.client import AgentClient
from protos import agent_pb2 as pb


def _client(agent: Any) -> AgentClient:
    return AgentClient(f"127.0.0.1:{agent.port}")


def _ends(batches: list[pb.MeasurementBatch]) -> list[pb.JobEnd]:
    return [b.end for b in batches if b.HasField("end")]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("runs", 10_000_001),
        ("runs", -1),
        ("warmup", 1_000_001),
        ("min_duration_s", 86_401.0),
        ("min_duration_s", math.nan),
        ("idle_s", 3_601.0),
        ("threads", 1_025),
        ("sample_rate_hz", 10_001.0),
        ("sample_rate_hz", 1e-300),
        ("settle_timeout_s", -1.0),
        ("timeout_s", 7 * 86_400 + 1.0),
        ("max_warmup_s", math.inf),
    ],
)
def test_out_of_range_settings_are_refused_before_a_job_exists(agent_process: Any, field: str, value: float) -> None:
    with _client(agent_process) as client:
        sha = upload(client)
        request = profile_request(sha, **{field: value})
        with pytest.raises(grpc.RpcError) as err:
            list(client.profile(request, timeout_s=30))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field} must be between")
        assert all(j.job_id != request.job_id for j in client.list_jobs(include_acknowledged=True))


def test_queue_full_refuses_and_cancelled_queued_jobs_free_their_places(agent_process: Any) -> None:
    agent_process.runner.settings.max_queued = 2
    with _client(agent_process) as client:
        sha = upload(client)
        blocker = profile_request(sha, runs=10, min_duration_s=60)
        running = _Stream(client.profile(blocker, timeout_s=120))
        wait_for(running.measuring, 60, "the blocking job to measure")
        waiting = [profile_request(sha) for _ in range(2)]
        queued = [_Stream(client.profile(r, timeout_s=120)) for r in waiting]
        wait_for(lambda: all(s.batches for s in queued), 30, "both jobs to be queued")
        with pytest.raises(grpc.RpcError) as err:
            list(client.profile(profile_request(sha), timeout_s=30))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full (2 jobs waiting)" in err.value.details()
        for request in waiting:
            client.cancel(request.job_id)
        # Cancelled while queued: they end now, not when the blocker is done, and leave the queue.
        for stream in queued:
            assert stream.done.wait(30) and stream.error is None, stream.error
            ends = _ends(stream.batches)
            assert len(ends) == 1 and ends[0].status == pb.JobEnd.CANCELLED and ends[0].phase == "queued"
        assert not running.done.is_set()
        assert client.describe().queued_jobs == 0
        refill = [profile_request(sha) for _ in range(2)]
        refilled = [_Stream(client.profile(r, timeout_s=120)) for r in refill]
        wait_for(lambda: all(s.batches for s in refilled), 30, "two new jobs to be queued")
        assert all(s.error is None for s in refilled)
        for request in [blocker, *refill]:
            client.cancel(request.job_id)
        for stream in [running, *refilled]:
            assert stream.done.wait(60)
    wait_for(lambda: not agent_process.cache._pinned, 30, "every pin to be released")


def test_batches_below_the_acknowledged_one_cannot_be_attached(agent_process: Any) -> None:
    with _client(agent_process) as client:
        sha = upload(client)
        request = profile_request(sha, runs=5)
        batches = list(client.profile(request, timeout_s=60))
        assert len(batches) >= 3
        assert client.acknowledge(request.job_id, 2) == 2
        with pytest.raises(grpc.RpcError) as err:
            list(client.attach(request.job_id, 1, timeout_s=30))
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "acknowledged and pruned; attach after 2" in err.value.details()
        rest = list(client.attach(request.job_id, 2, timeout_s=30))
    assert [b.seq for b in rest] == [b.seq for b in batches[2:]]


def test_a_failed_allocation_is_out_of_memory_not_invalid_input(agent_process: Any, tmp_path: Any) -> None:
    # A real allocation failure: ONNX Runtime's arena cannot allocate the 4 TiB that ConstantOfShape asks for.
    node = helper.make_node(
        "ConstantOfShape", ["shape"], ["out"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    )
    graph = helper.make_graph(
        [node],
        "alloc",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "alloc.onnx"
    path.write_bytes(model.SerializeToString())
    inputs = io.BytesIO()
    np.savez(inputs, shape=np.array([2**40], dtype=np.int64))
    with _client(agent_process) as client:
        sha = upload(client, path)
        batches = list(client.profile(profile_request(sha, inputs_npz=inputs.getvalue()), timeout_s=60))
        assert client.health() == "SERVING"
    ends = _ends(batches)
    assert len(ends) == 1 and ends[0].status == pb.JobEnd.ERROR
    assert ends[0].error_kind == "out_of_memory", ends[0].error
    assert ends[0].error.startswith("out of memory: ") and "Failed to allocate memory" in ends[0].error


# Every range check of a Profile request at its edges (issue 18: removing them went unnoticed, even by the
# RPC fuzzer). The request is refused before anything is queued, with one line naming the field.
BOUNDS = [
    ("runs", 0, 10_000_000),
    ("warmup", 0, 1_000_000),
    ("min_duration_s", 0, 86_400),
    ("idle_s", 0, 3_600),
    ("threads", 0, 1_024),
    ("sample_rate_hz", 0, 10_000),
    ("settle_timeout_s", 0, 3_600),
    ("timeout_s", 0, 7 * 86_400),
    ("max_warmup_s", 0, 3_600),
]
SHA = "ab" * 32


@pytest.mark.parametrize(("name", "low", "high"), BOUNDS)
def test_each_request_bound_is_inclusive_and_refused_beyond(name: str, low: float, high: float) -> None:
    from agent.errors import InvalidInput
    from agent.jobs.validation import validate

    validate(profile_request(SHA, **{name: low}))
    validate(profile_request(SHA, **{name: high}))
    beyond = profile_request(SHA, **{name: high + 1})
    with pytest.raises(InvalidInput) as refused:
        validate(beyond)
    assert str(refused.value) == f"{name} must be between {low:g} and {high:g}, got {getattr(beyond, name)}"
    if isinstance(getattr(pb.ProfileRequest(), name), float):
        with pytest.raises(InvalidInput, match=f"^{name} must be between"):
            validate(profile_request(SHA, **{name: math.nan}))
        with pytest.raises(InvalidInput, match=f"^{name} must be between"):
            validate(profile_request(SHA, **{name: -0.5}))


def test_a_sampling_rate_slower_than_one_sample_in_ten_seconds_is_refused_but_zero_means_the_default() -> None:
    from agent.errors import InvalidInput
    from agent.jobs.validation import validate

    validate(profile_request(SHA, sample_rate_hz=0.0))
    validate(profile_request(SHA, sample_rate_hz=0.1))
    with pytest.raises(InvalidInput) as refused:
        validate(profile_request(SHA, sample_rate_hz=0.05))
    assert str(refused.value) == (
        "sample_rate_hz must be between 0.1 and 10000, or 0 for the agent's default, got 0.05"
    )


def test_request_identity_format_and_shapes_are_checked_in_one_line() -> None:
    from agent.errors import InvalidInput
    from agent.jobs.validation import validate

    cases = [
        ({"job_id": "A" * 32}, "job_id must be 32 lower-case hex digits (a uuid4 hex)"),
        ({"job_id": "a" * 32 + "\n"}, "job_id must be 32 lower-case hex digits (a uuid4 hex)"),
        ({"model_format": "pt"}, "model_format 'pt' is not one of onnx, ort, tflite, genai, gguf"),
        ({"input_shapes": {"": "1x3"}}, "input_shapes has an empty or overlong input name"),
        ({"input_shapes": {"x" * 1025: "1x3"}}, "input_shapes has an empty or overlong input name"),
    ]
    for fields, message in cases:
        request = profile_request(SHA)
        for key, value in fields.items():
            if key == "input_shapes":
                request.input_shapes.update(value)
            else:
                setattr(request, key, value)
        with pytest.raises(InvalidInput) as refused:
            validate(request)
        assert str(refused.value) == message, fields
    ok = profile_request(SHA)
    ok.input_shapes["x" * 1024] = "1x3x224x224"
    validate(ok)


def test_a_genai_request_needs_sane_generation_sizes() -> None:
    from agent.errors import InvalidInput
    from agent.jobs.validation import validate

    def genai(**spec: Any) -> pb.ProfileRequest:
        request = profile_request(SHA)
        request.model_format = "genai"
        request.generation.MergeFrom(pb.GenerationSpec(**spec))
        return request

    validate(genai(gen_len=1, prompt_lens=[1]))
    validate(genai(gen_len=1_000_000, prompt_lens=[1_000_000] * 64))
    validate(genai(gen_len=8, prompt_text="hello"))
    cases = [
        (genai(gen_len=0, prompt_lens=[4]), "a generative model needs generation.gen_len between 1 and 1000000, got 0"),
        (genai(gen_len=1_000_001, prompt_lens=[4]), "generation.gen_len between 1 and 1000000, got 1000001"),
        (genai(gen_len=8), "a generative model needs generation.prompt_lens or generation.prompt_text"),
        (genai(gen_len=8, prompt_lens=[4] * 65), "generation.prompt_lens takes at most 64 lengths"),
        (genai(gen_len=8, prompt_lens=[0]), "generation.prompt_lens takes at most 64 lengths"),
        (genai(gen_len=8, prompt_lens=[1_000_001]), "generation.prompt_lens takes at most 64 lengths"),
        (genai(gen_len=8, prompt_text="x" * 1_000_001), "generation.prompt_text is longer than 1000000 characters"),
    ]
    for request, message in cases:
        with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate(request)
    validate(profile_request(SHA))  # not a GenAI model: no generation spec needed
