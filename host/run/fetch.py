"""`host runs fetch`: collect jobs a host started but never stored (it crashed, or gave up re-attaching).

Every job is recorded in the store's pending_jobs before its stream starts; the agent journals every
batch. Fetching attaches from the first batch, follows the job to its end if it is still running,
merges the device entries into the run document (creating it when the host died before saving
anything), saves, and only then acknowledges so that the agent may prune its journal.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from host import __version__
from host.analysis.summary import device_entry, error_entry
from host.fleet.client import AgentClient, Credentials
from host.fleet.membership import prove
from host.fleet.rpc_errors import describe_rpc_error
from host.run.collect import JobCollector, SequenceError
from host.run.profiling import DeviceFailed, ProfileSettings, stall_bound_s, stream_job
from host.store.rundata import DeviceRaw, RunData
from host.store.sqlite import PendingJob, Store, StoreError
from protos import agent_pb2 as pb

CredentialsFor = Callable[[PendingJob], Credentials]


@dataclass
class FetchOutcome:
    """What happened to one pending job."""

    run_id: str
    device: str
    job_id: str
    status: str  # "ok" | "error" (the job ended badly; stored) | "left" (agent unreachable; still pending)
    message: str = ""
    n_inferences: int = 0


@dataclass
class RunFetch:
    run_id: str
    outcomes: list[FetchOutcome] = field(default_factory=list)
    created: bool = False


def fetch_runs(
    store: Store,
    run_id: str | None,
    credentials_for: CredentialsFor,
    *,
    reconnect_s: float = 10.0,
    on_outcome: Callable[[FetchOutcome], None] = lambda _o: None,
) -> list[RunFetch]:
    """Fetch the pending jobs of one run (`run_id`, a prefix is enough) or of every run (None)."""
    # Claimed, not just read: another host fetching the same store at once gets none of these jobs.
    claimant = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    pending = store.claim_pending(run_id, claimant)
    if run_id is not None and not pending:
        if store.pending(run_id):
            raise StoreError(f"the pending jobs of run '{run_id}' are being collected by another `host runs fetch`")
        raise StoreError(f"run '{run_id}' has no pending jobs in {store.path} (nothing to fetch; see `host runs ls`)")
    by_run: dict[str, list[PendingJob]] = {}
    for job in pending:
        by_run.setdefault(job.run_id, []).append(job)
    results = []
    try:
        for rid, jobs in by_run.items():
            result = fetch_run(store, rid, jobs, credentials_for, reconnect_s=reconnect_s)
            for outcome in result.outcomes:
                on_outcome(outcome)
            results.append(result)
    finally:
        store.release_claims(claimant)  # what was neither saved nor recorded again goes back for the next fetcher
    return results


def fetch_run(
    store: Store, run_id: str, jobs: list[PendingJob], credentials_for: CredentialsFor, *, reconnect_s: float
) -> RunFetch:
    result = RunFetch(run_id)
    collected: list[tuple[PendingJob, dict[str, Any], DeviceRaw | None]] = []
    left: list[PendingJob] = []
    for job in jobs:
        outcome, entry, raw = _collect(job, credentials_for(job), reconnect_s)
        result.outcomes.append(outcome)
        if outcome.status == "left":
            left.append(job)
        else:
            collected.append((job, entry, raw))
    if not collected:
        return result
    try:
        run = store.load_run(run_id)
    except StoreError:  # the host died before it saved anything: build the document from what it recorded
        run = RunData(document=_new_document(run_id, jobs), raw={})
        result.created = True
    devices = run.document.setdefault("devices", [])
    for job, entry, raw in collected:
        devices[:] = [d for d in devices if d.get("device") != job.device]
        devices.append(entry)
        run.raw.pop(job.device, None)
        if raw is not None:
            run.raw[job.device] = raw
    store.save_run(run)  # also clears the run's pending rows…
    for job in left:  # …so the ones not collected yet go back
        store.add_pending(job)
    for job, _entry, raw in collected:
        if raw is None:
            continue
        try:
            with AgentClient(job.address, credentials_for(job), timeout_s=5) as client:
                client.acknowledge(job.job_id, 1 << 62)
        except grpc.RpcError:
            pass  # best effort: the agent prunes by age as well
    return result


def _collect(
    job: PendingJob, credentials: Credentials, reconnect_s: float
) -> tuple[FetchOutcome, dict[str, Any], DeviceRaw | None]:
    # What the agent ran: the compiled artifact (pending rows of older hosts only have "model", which was it).
    artifact = job.request.get("artifact") or job.request.get("model") or {}
    recipe = job.request.get("recipe")
    request = pb.ProfileRequest(
        job_id=job.job_id, model_sha256=artifact.get("sha256", ""), model_format=artifact.get("format", "")
    )
    collector = JobCollector(job.device)
    known = {"recipe": recipe, "address": job.address, "job_id": job.job_id}
    if job.request.get("discovered"):
        # An address learnt from zeroconf may belong to someone else by now: no token before a new proof.
        refused = prove(job.address, credentials)
        if refused is not None:
            message = (
                f"the agent now at {job.address} did not prove it belongs to the fleet ({refused}):"
                " it was not sent the token"
            )
            return FetchOutcome(job.run_id, job.device, job.job_id, "left", message), {}, None
    try:
        with AgentClient(job.address, credentials) as client:
            rate_hz = float(job.settings.get("sample_rate_hz") or 0.0)
            stall_s = stall_bound_s(ProfileSettings(sample_rate_hz=rate_hz))
            stream_job(client, request, collector, lambda _c: None, reconnect_s, attach_only=True, stall_s=stall_s)
    except grpc.RpcError as err:
        message = describe_rpc_error(err, job.address)
        if err.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
            message = (
                f"the agent at {job.address} no longer has job {job.job_id[:8]} "
                "(its journal was pruned or its data dir was lost)"
            )
            return _error(job, message, known)
        if err.code() == grpc.StatusCode.OUT_OF_RANGE:  # type: ignore[attr-defined]
            return _error(job, message, known)
        return FetchOutcome(job.run_id, job.device, job.job_id, "left", message), {}, None
    except DeviceFailed as err:
        return FetchOutcome(job.run_id, job.device, job.job_id, "left", str(err)), {}, None
    except SequenceError as err:
        return _error(job, str(err), known)
    raw = collector.raw()
    entry = device_entry(
        job.device, raw, collector.info, collector.end, upload_bytes=0, recipe=recipe, job_id=job.job_id
    )
    entry["address"] = job.address
    entry["fetched"] = True
    status = "ok" if entry["status"] == "ok" else "error"
    outcome = FetchOutcome(job.run_id, job.device, job.job_id, status, entry.get("error") or "", entry["n_inferences"])
    return outcome, entry, raw


def _error(job: PendingJob, message: str, known: dict[str, Any]) -> tuple[FetchOutcome, dict[str, Any], None]:
    return (
        FetchOutcome(job.run_id, job.device, job.job_id, "error", message),
        error_entry(job.device, message, **known),
        None,
    )


def _new_document(run_id: str, jobs: list[PendingJob]) -> dict[str, Any]:
    model = dict(jobs[0].request.get("model") or {})
    return {
        "run_id": run_id,
        "created_at": _created_at(run_id),
        "host_version": __version__,
        "model": {
            "path": model.get("path", ""),
            "sha256": model.get("sha256", ""),
            "format": model.get("format", ""),
            "size_bytes": model.get("size_bytes", 0),
        },
        "settings": dict(jobs[0].settings),
        "fetched": True,
        "devices": [],
    }


def _created_at(run_id: str) -> str:
    """Run ids start with their UTC creation time ("20250101-120000-ab12cd")."""
    try:
        when = dt.datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        when = dt.datetime.now(dt.timezone.utc)
    return when.isoformat(timespec="seconds")
