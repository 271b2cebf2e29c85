"""Property-based fuzzing of every RPC's request fields against a real in-process agent.

Whatever the fields hold, the agent answers with a status a host can act on, never INTERNAL or UNKNOWN,
and it still answers afterwards. Profile is held to the request contract: a request it forbids gets
INVALID_ARGUMENT, an allowed one for the uploaded model is accepted (and cancelled), one for a model the
agent lacks gets NOT_FOUND.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from faultlib import SQUEEZENET, profile_request, sha256_bytes, upload
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.service.serve import AgentProcess, ServeOptions
from host.fleet.client import AgentClient
from protos import agent_pb2 as pb

EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(st.characters(codec="utf-8"), max_size=80)
hexes = st.text("0123456789abcdef", min_size=0, max_size=70)
# Shapes a parser might choke on: Python refuses int() of more than 4300 digits.
digits = st.one_of(st.text("0123456789x", min_size=1, max_size=20), st.integers(4000, 6000).map(lambda n: "7" * n))
# SQLite integers are signed 64-bit: the top half of uint64 must be tried on purpose.
uint64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1]))
int32 = st.integers(-(2**31), 2**31 - 1)
doubles = st.floats(allow_nan=True, allow_infinity=True)
# A well-formed id or sha with a trailing newline: a regex anchored with `$` lets it through.
newline_tailed = st.sampled_from([uuid.uuid4().hex + "\n", sha256_bytes(b"x") + "\n"])
ids = st.one_of(text, hexes, st.just(uuid.uuid4().hex), newline_tailed)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    opts = ServeOptions(listen="127.0.0.1:0", advertise=False, data_dir=tmp_path_factory.mktemp("fuzz"), max_model_mb=1)
    proc = AgentProcess(opts)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(grace_s=0)


@pytest.fixture(scope="module")
def client(agent: AgentProcess) -> Iterator[AgentClient]:
    with AgentClient(f"127.0.0.1:{agent.port}", timeout_s=10) as c:
        yield c


@pytest.fixture(scope="module")
def finished_job(client: AgentClient) -> str:
    """A real, finished job, so Attach/Acknowledge/Cancel also meet a job that exists."""
    request = profile_request(upload(client), runs=2, warmup=0)
    assert list(client.profile(request, timeout_s=60))[-1].end.status == pb.JobEnd.OK
    return request.job_id


def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            for _ in result:
                pass
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _assert_expected(code: grpc.StatusCode, client: AgentClient) -> None:
    assert code in EXPECTED, code
    assert client.health() == "SERVING"


@FUZZ
@given(sha=st.one_of(text, hexes))
def test_has_model_fuzzed(client: AgentClient, sha: str) -> None:
    _assert_expected(_code(lambda: client._stub.HasModel(pb.HasModelRequest(sha256=sha), timeout=10)), client)


@FUZZ
@given(
    chunks=st.lists(
        st.builds(
            pb.ModelChunk,
            sha256=st.one_of(text, hexes, st.just(sha256_bytes(b"x"))),
            size_bytes=uint64,
            format=text,
            data=st.binary(max_size=64),
        ),
        max_size=4,
    )
)
def test_upload_model_fuzzed(client: AgentClient, chunks: list[pb.ModelChunk]) -> None:
    _assert_expected(_code(lambda: client._stub.UploadModel(iter(chunks), timeout=10)), client)


_PROFILE_FIELDS = {
    "job_id": ids,
    "model_sha256": st.one_of(hexes, text, newline_tailed),
    "model_format": st.one_of(text, st.sampled_from(["onnx", "tflite"])),
    "runs": int32,
    "warmup": int32,
    "threads": int32,
    "min_duration_s": doubles,
    "idle_s": doubles,
    "sample_rate_hz": doubles,
    "settle_timeout_s": doubles,
    "timeout_s": doubles,
    "max_warmup_s": doubles,
    "input_shapes": st.dictionaries(st.one_of(text, st.just("data")), st.one_of(text, digits), max_size=3),
    "inputs_npz": st.binary(max_size=64),
    "execution_providers": st.lists(text, max_size=3),
    "options": st.dictionaries(text, text, max_size=3),
    "op_profile": st.booleans(),
}


# The request contract, written out here rather than imported, so that a check dropped from
# agent/jobs/validation.py `validate` shows up as an accepted request that should have been refused.
_BOUNDS = {
    "runs": (0, 10_000_000),
    "warmup": (0, 1_000_000),
    "min_duration_s": (0, 86_400),
    "idle_s": (0, 3_600),
    "threads": (0, 1_024),
    "sample_rate_hz": (0, 10_000),
    "settle_timeout_s": (0, 3_600),
    "timeout_s": (0, 7 * 86_400),
    "max_warmup_s": (0, 3_600),
}
_LOWER_HEX = frozenset("0123456789abcdef")


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and set(value) <= _LOWER_HEX


def _shape_ok(shape: str) -> bool:
    """Positive integers joined by 'x' (case and surrounding space ignored), at most 256 characters."""
    if len(shape) > 256:
        return False
    dims = shape.strip().lower().split("x")
    return all(d.isdecimal() for d in dims) and all(int(d) > 0 for d in dims)


def _should_refuse(request: pb.ProfileRequest) -> str | None:
    """Why the agent must refuse `request` with INVALID_ARGUMENT, or None when it must take it."""
    if not _is_hex(request.job_id, 32):
        return "job_id"
    if not _is_hex(request.model_sha256, 64):
        return "model_sha256"
    if request.model_format not in ("onnx", "ort", "tflite"):
        return "model_format"
    for name, (low, high) in _BOUNDS.items():
        if not low <= getattr(request, name) <= high:  # NaN is never in range
            return name
    if 0 < request.sample_rate_hz < 0.1:  # a sampling period of years would overflow the sampler's wait
        return "sample_rate_hz"
    for name, shape in request.input_shapes.items():
        if not name or len(name) > 1024 or not _shape_ok(shape):
            return "input_shapes"
    return None


@pytest.fixture(scope="module")
def model_sha(client: AgentClient) -> str:
    """The model every fuzzed Profile names unless it fuzzes the sha: a request that passes must run."""
    return upload(client)


@FUZZ
@given(data=st.data(), fields=st.sets(st.sampled_from(sorted(_PROFILE_FIELDS)), min_size=1, max_size=4))
def test_profile_fuzzed(client: AgentClient, model_sha: str, data: st.DataObject, fields: set[str]) -> None:
    # A valid request for the uploaded model with a few fields replaced, so each field is reached past the
    # others' checks. A request the contract refuses must get INVALID_ARGUMENT; one it allows must be
    # accepted (its stream starts), and is then cancelled so that a long valid job costs nothing.
    values = {name: data.draw(_PROFILE_FIELDS[name], label=name) for name in sorted(fields)}
    request = profile_request(model_sha)
    for name, value in values.items():
        if isinstance(value, dict):
            getattr(request, name).update(value)
        elif isinstance(value, list):
            getattr(request, name).extend(value)
        else:
            setattr(request, name, value)
    refused_field = _should_refuse(request)
    if refused_field is None and request.model_sha256 != model_sha:
        expected = grpc.StatusCode.NOT_FOUND  # well-formed, but no such model in the agent's cache
    elif refused_field is None:
        expected = grpc.StatusCode.OK
    else:
        expected = grpc.StatusCode.INVALID_ARGUMENT
    event(f"expected {expected.name}")
    stream = client._stub.Profile(request, timeout=60, metadata=client._metadata)
    try:
        first = next(stream)
    except grpc.RpcError as err:
        assert err.code() == expected, (refused_field, err.code(), err.details())
        assert client.health() == "SERVING"
        return
    try:
        client.cancel(request.job_id)
        batches = [first, *stream]
    finally:
        stream.cancel()  # a failing example must not keep its stream open into the next ones
    assert expected == grpc.StatusCode.OK, f"accepted a request whose {refused_field} must be refused: {request}"
    assert batches[-1].HasField("end"), "the accepted job's stream ended without its JobEnd"
    assert client.health() == "SERVING"


@pytest.mark.parametrize("field", ["job_id", "model_sha256"])
def test_profile_refuses_an_id_with_a_trailing_newline(client: AgentClient, model_sha: str, field: str) -> None:
    request = profile_request(model_sha)
    setattr(request, field, getattr(request, field) + "\n")
    with pytest.raises(grpc.RpcError) as refused:
        next(client._stub.Profile(request, timeout=30, metadata=client._metadata))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


@FUZZ
@given(job_id=ids, after_seq=uint64, real=st.booleans())
def test_attach_fuzzed(client: AgentClient, finished_job: str, job_id: str, after_seq: int, real: bool) -> None:
    request = pb.AttachRequest(job_id=finished_job if real else job_id, after_seq=after_seq)
    _assert_expected(_code(lambda: client._stub.Attach(request, timeout=10, metadata=client._metadata)), client)


@FUZZ
@given(job_id=ids, seq=uint64, real=st.booleans(), include=st.booleans())
def test_acknowledge_cancel_list_fuzzed(
    client: AgentClient, finished_job: str, job_id: str, seq: int, real: bool, include: bool
) -> None:
    target = finished_job if real else job_id
    for call in (
        lambda: client._stub.Acknowledge(
            pb.AcknowledgeRequest(job_id=target, seq=seq), timeout=10, metadata=client._metadata
        ),
        lambda: client._stub.Cancel(pb.CancelRequest(job_id=target), timeout=10, metadata=client._metadata),
        lambda: client._stub.ListJobs(
            pb.ListJobsRequest(include_acknowledged=include), timeout=10, metadata=client._metadata
        ),
        lambda: client._stub.Describe(pb.DescribeRequest(), timeout=10),
    ):
        _assert_expected(_code(call), client)


@FUZZ
@given(nonce=st.one_of(text, hexes), address=st.one_of(text, st.just("127.0.0.1:1")))
def test_prove_fuzzed(client: AgentClient, nonce: str, address: str) -> None:
    request = pb.ProveRequest(nonce=nonce, dialed_address=address)
    _assert_expected(_code(lambda: client._stub.Prove(request, timeout=10)), client)


def test_agent_still_profiles_after_fuzzing(client: AgentClient) -> None:
    sha = upload(client, SQUEEZENET)
    assert list(client.profile(profile_request(sha, runs=2, warmup=0), timeout_s=60))[-1].end.status == pb.JobEnd.OK
