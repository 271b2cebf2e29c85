"""Profile requests checked before anything is queued: one line (INVALID_ARGUMENT) for what is wrong."""

from __future__ import annotations

import re

from agent.errors import InvalidInput
from agent.inputs import parse_shape
from agent.model_cache import check_sha256
from agent.parts import validate_parts
from agent.runtimes import GENERATIVE_FORMATS
from protos import agent_pb2 as pb

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FORMATS = ("onnx", "ort", "tflite", "genai", "gguf")
MAX_NPZ_BYTES = 64 * 1024**2
MAX_SHAPE_CHARS = 256
#: The slowest sampling rate a request may ask for: one sample every 10 s.
MIN_SAMPLE_RATE_HZ = 0.1


def validate(request: pb.ProfileRequest) -> None:
    """Reject malformed requests with one line (INVALID_ARGUMENT) before anything is queued."""
    if not _JOB_ID.fullmatch(request.job_id):  # `$` alone would let a trailing newline through
        raise InvalidInput("job_id must be 32 lower-case hex digits (a uuid4 hex)")
    check_sha256(request.model_sha256)
    if request.model_format not in FORMATS:
        raise InvalidInput(f"model_format '{request.model_format[:40]}' is not one of {', '.join(FORMATS)}")
    bounds: list[tuple[str, float, float, float]] = [
        ("runs", request.runs, 0, 10_000_000),
        ("warmup", request.warmup, 0, 1_000_000),
        ("min_duration_s", request.min_duration_s, 0, 86_400),
        ("idle_s", request.idle_s, 0, 3_600),
        ("threads", request.threads, 0, 1_024),
        ("sample_rate_hz", request.sample_rate_hz, 0, 10_000),
        ("settle_timeout_s", request.settle_timeout_s, 0, 3_600),
        ("timeout_s", request.timeout_s, 0, 7 * 86_400),
        ("max_warmup_s", request.max_warmup_s, 0, 3_600),
    ]
    for name, value, low, high in bounds:
        if not low <= value <= high:  # also catches NaN
            raise InvalidInput(f"{name} must be between {low:g} and {high:g}, got {value}")
    if 0 < request.sample_rate_hz < MIN_SAMPLE_RATE_HZ:  # a period of years overflows the sampler's wait
        raise InvalidInput(
            f"sample_rate_hz must be between {MIN_SAMPLE_RATE_HZ:g} and 10000, or 0 for the agent's default, "
            f"got {request.sample_rate_hz}"
        )
    for name, shape in request.input_shapes.items():
        if not name or len(name) > 1024:
            raise InvalidInput("input_shapes has an empty or overlong input name")
        if len(shape) > MAX_SHAPE_CHARS:  # int() refuses 4300+ digits with a ValueError, an INTERNAL error here
            raise InvalidInput(f"input shape for '{name[:40]}' is longer than {MAX_SHAPE_CHARS} characters")
        parse_shape(shape)
    if len(request.inputs_npz) > MAX_NPZ_BYTES:
        raise InvalidInput(f"inputs .npz is larger than {MAX_NPZ_BYTES // 1024**2} MB")
    validate_parts(request, FORMATS)
    _validate_generation(request)
    _validate_runtime_options(request)


#: Options only the agent sets (where it keeps engines, the run's shapes): a host may not choose them.
RESERVED_OPTIONS = ("tensorrt.engine_dir", "input_shapes_json")
RUNTIME_CHOICES = ("", "onnxruntime", "tensorrt")


def _validate_runtime_options(request: pb.ProfileRequest) -> None:
    """`runtime` and the TensorRT options (precision, DLA core) are checked before the job is queued."""
    options = request.options
    for key in RESERVED_OPTIONS:
        if key in options:
            raise InvalidInput(f"option '{key}' is set by the agent, not by a request")
    runtime = options.get("runtime", "")
    if runtime not in RUNTIME_CHOICES:
        raise InvalidInput(f"runtime '{runtime[:40]}' is not one of onnxruntime, tensorrt")
    if runtime == "tensorrt":
        from agent.runtimes.tensorrt_engines import TensorRTOptions

        TensorRTOptions.from_options(options)
        formats = {request.model_format, *(p.model_format for p in request.parts)}
        if formats - {"onnx"}:
            raise InvalidInput(f"TensorRT builds engines from ONNX models, not {', '.join(sorted(formats - {'onnx'}))}")


def _validate_generation(request: pb.ProfileRequest) -> None:
    """A generative model needs a generation spec with sane sizes (the worker checks the model's context length)."""
    formats = {request.model_format, *(p.model_format for p in request.parts)}
    spec = request.generation
    if not formats & set(GENERATIVE_FORMATS):
        return
    if not 0 < spec.gen_len <= 1_000_000:
        raise InvalidInput(f"a generative model needs generation.gen_len between 1 and 1000000, got {spec.gen_len}")
    if not spec.prompt_text and not spec.prompt_lens:
        raise InvalidInput("a generative model needs generation.prompt_lens or generation.prompt_text")
    if len(spec.prompt_lens) > 64 or any(not 0 < n <= 1_000_000 for n in spec.prompt_lens):
        raise InvalidInput("generation.prompt_lens takes at most 64 lengths, each between 1 and 1000000 tokens")
    if len(spec.prompt_text) > 1_000_000:
        raise InvalidInput("generation.prompt_text is longer than 1000000 characters")
