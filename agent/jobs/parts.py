"""Multi-part jobs: the measure phases of `host profile --repeat K` and `host ab`, back to back in one job.

Why one job and not K jobs: the agent serialises jobs, so parts of one job can never have another host's
job between them (an A/B sequence measured with a colleague's profile in the middle is not A/B). Each part
runs the whole protocol (prepare, settle, idle, warmup, measure) in a FRESH worker that loads its model
again: process start, memory layout and load are what vary from run to run, so each part samples them.
Every phase event, latency block and JobInfo carries its part index; the job's JobEnd lists each part.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import InvalidInput
from agent.storage.model_cache import check_sha256
from protos import agent_pb2 as pb

#: What Describe reports (DeviceInfo.capabilities) so a host knows it may send `parts`.
CAPABILITY = "parts"
#: More parts than this in one job is a mistake (K=100 of A and of B is already hours on a board).
MAX_PARTS = 200


@dataclass(frozen=True)
class Part:
    index: int
    model_sha256: str
    model_format: str


def job_parts(request: pb.ProfileRequest) -> list[Part]:
    """The parts to run in order; a request without `parts` is one part with the request's own model."""
    if not request.parts:
        return [Part(0, request.model_sha256, request.model_format)]
    return [Part(i, p.model_sha256, p.model_format) for i, p in enumerate(request.parts)]


def validate_parts(request: pb.ProfileRequest, formats: tuple[str, ...]) -> None:
    """Reject a malformed parts list with one line (INVALID_ARGUMENT)."""
    if len(request.parts) > MAX_PARTS:
        raise InvalidInput(f"a job has at most {MAX_PARTS} parts, got {len(request.parts)}")
    for i, part in enumerate(request.parts):
        check_sha256(part.model_sha256)
        if part.model_format not in formats:
            raise InvalidInput(f"part {i}: model_format '{part.model_format[:40]}' is not one of {', '.join(formats)}")


def part_models(request: pb.ProfileRequest) -> list[str]:
    """Every distinct model a job needs in the cache (pinned while it is queued or running)."""
    shas = [request.model_sha256] + [p.model_sha256 for p in request.parts]
    return list(dict.fromkeys(shas))


def combine_ends(ends: list[pb.JobEnd], n_parts: int, multi_part: bool) -> pb.JobEnd:
    """The job's JobEnd from its parts' ends (the last one is the first failure, if any).

    A one-part job's end is passed through unchanged (old hosts see what they always saw). For several
    parts, a failure names its part; success sums the counts, keeps the highest memory mark, and marks
    warmup unstable if any part's warmup was.
    """
    last = ends[-1]
    if not multi_part:
        return last
    done = [e for e in ends if e.status == pb.JobEnd.OK]
    combined = pb.JobEnd()
    combined.CopyFrom(last)
    del combined.parts[:]
    for index, end in enumerate(done):
        combined.parts.add(
            part=index,
            measured=end.measured,
            warmup=end.warmup,
            first_inference_ns=end.first_inference_ns,
            peak_rss_bytes=end.peak_rss_bytes,
            notes=dict(end.notes),
        )
    if last.status != pb.JobEnd.OK:
        combined.error = f"part {len(ends)} of {n_parts}: {last.error}"
        return combined
    combined.measured = sum(e.measured for e in ends)
    combined.warmup = sum(e.warmup for e in ends)
    combined.first_inference_ns = ends[0].first_inference_ns
    combined.peak_rss_bytes = max(e.peak_rss_bytes for e in ends)
    combined.notes.clear()
    problems = [e.notes["sampler_problems"] for e in ends if e.notes.get("sampler_problems")]
    if problems:
        combined.notes["sampler_problems"] = "; ".join(dict.fromkeys(problems))
    stable = all(e.notes.get("warmup_stable", "true") == "true" for e in ends)
    combined.notes["warmup_stable"] = "true" if stable else "false"
    if last.notes.get("op_profile"):  # why the (last part's) operator profile is missing: said, not dropped
        combined.notes["op_profile"] = last.notes["op_profile"]
    return combined
