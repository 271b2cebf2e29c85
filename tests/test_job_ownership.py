"""Jobs belong to the credential and host that started them (issue 13.8): two hosts sharing a fleet token
cannot read, cancel or acknowledge each other's jobs, and see them only as queue entries."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.service.serve import AgentProcess, ServeOptions
from host.fleet.client import AgentClient, Credentials
from host.fleet.client_key import client_key, client_key_path
from protos import agent_pb2 as pb
from tests.faultlib import generate_certs, profile_request, upload, wait_for

TOKEN = uuid.uuid4().hex * 2


@pytest.fixture
def shared_agent(tmp_path: Path) -> Iterator[AgentProcess]:
    """A real agent with a token both hosts hold, as a fleet's agents usually have."""
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "token").chmod(0o600)
    agent = AgentProcess(
        ServeOptions(
            listen="127.0.0.1:0",
            profile="generic-linux",
            advertise=False,
            data_dir=tmp_path / "agent",
            token_file=tmp_path / "token",
        )
    )
    agent.start()
    yield agent
    agent.stop(grace_s=0)


def _code(call: object) -> grpc.StatusCode:
    try:
        result = call()  # type: ignore[operator]
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_another_host_with_the_same_token_can_neither_read_cancel_nor_acknowledge_a_job(
    shared_agent: AgentProcess,
) -> None:
    address = f"127.0.0.1:{shared_agent.port}"
    mine = AgentClient(address, Credentials(token=TOKEN, host_key="a" * 64))
    theirs = AgentClient(address, Credentials(token=TOKEN, host_key="b" * 64))
    try:
        sha = upload(mine)
        request = profile_request(sha, runs=1_000_000, min_duration_s=120.0, timeout_s=300.0)
        stream = mine.profile(request, timeout_s=120)
        first = next(stream)  # the job is queued and journalled
        wait_for(lambda: mine.list_jobs()[0].state == "running", 60, "the job to start running")

        denied = {
            "attach": _code(lambda: theirs.attach(request.job_id, 0, timeout_s=10)),
            "profile again": _code(lambda: theirs.profile(request, timeout_s=10)),
            "cancel": _code(lambda: theirs.cancel(request.job_id)),
            "acknowledge": _code(lambda: theirs.acknowledge(request.job_id, 1)),
        }
        seen_by_them = theirs.list_jobs(include_acknowledged=True)
        seen_by_me = mine.list_jobs(include_acknowledged=True)
        acked_by_me = mine.acknowledge(request.job_id, first.seq)
        cancelled = mine.cancel(request.job_id)
        ends = [b.end for b in stream if b.HasField("end")]
    finally:
        mine.close()
        theirs.close()

    assert denied == dict.fromkeys(denied, grpc.StatusCode.PERMISSION_DENIED)
    # Their view: a queue entry, with nothing that identifies the job or its model.
    assert [(j.job_id, j.model_sha256, j.state, j.queue_position, j.owned) for j in seen_by_them] == [
        ("", "", "running", 1, False)
    ]
    (own,) = seen_by_me
    assert (own.job_id, own.model_sha256, own.owned, own.queue_position) == (request.job_id, sha, True, 1)
    assert acked_by_me == 1 and cancelled.cancelled
    assert ends and ends[-1].status == pb.JobEnd.CANCELLED, "the owner still follows its job to the end"


def test_a_journal_from_before_owners_opens_and_its_jobs_stay_readable(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    data.mkdir()
    old = sqlite3.connect(data / "journal.sqlite")
    old.executescript(
        """
        CREATE TABLE jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL, model_sha256 TEXT NOT NULL,
            created REAL NOT NULL, finished REAL, last_seq INTEGER NOT NULL DEFAULT 0,
            acked_seq INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE batches (job_id TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,
            PRIMARY KEY (job_id, seq));
        """
    )
    job_id = uuid.uuid4().hex
    end = pb.MeasurementBatch(job_id=job_id, seq=1, end=pb.JobEnd(status=pb.JobEnd.OK, measured=3))
    old.execute(
        "INSERT INTO jobs VALUES (?, 'ok', ?, strftime('%s','now'), strftime('%s','now'), 1, 0)", (job_id, "0" * 64)
    )
    old.execute("INSERT INTO batches VALUES (?, 1, ?)", (job_id, end.SerializeToString()))
    old.commit()
    old.close()

    agent = AgentProcess(ServeOptions(listen="127.0.0.1:0", profile="generic-linux", advertise=False, data_dir=data))
    agent.start()
    try:
        with AgentClient(f"127.0.0.1:{agent.port}", Credentials(host_key="c" * 64)) as anyone:
            listed = anyone.list_jobs()
            batches = list(anyone.attach(job_id, 0, timeout_s=10))
    finally:
        agent.stop(grace_s=0)

    assert [(j.job_id, j.owned) for j in listed] == [(job_id, True)]
    assert [b.end.measured for b in batches] == [3]


def test_host_client_key_is_made_once_private_and_shared_by_later_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEPROF_CLIENT_KEY_FILE", str(tmp_path / "conf" / "client.key"))

    key = client_key()
    path = client_key_path()
    in_another_process = subprocess.run(
        [sys.executable, "-c", "from host.fleet.client_key import client_key; print(client_key())"],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    ).stdout.strip()

    assert len(key) == 64 and int(key, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert in_another_process == key, "`host runs fetch` later must be the same owner as `host profile`"


def test_with_mutual_tls_the_host_key_still_separates_hosts_sharing_a_client_certificate(tmp_path: Path) -> None:
    certs = generate_certs(tmp_path / "certs")
    agent = AgentProcess(
        ServeOptions(
            listen="127.0.0.1:0",
            profile="generic-linux",
            advertise=False,
            data_dir=tmp_path / "agent",
            tls_cert=certs["server"],
            tls_key=certs["server_key"],
            tls_client_ca=certs["ca"],
        )
    )
    agent.start()

    def client(host_key: str) -> AgentClient:
        creds = Credentials(
            root_ca_pem=certs["ca"].read_bytes(),
            client_cert_pem=certs["client"].read_bytes(),
            client_key_pem=certs["client_key"].read_bytes(),
            host_key=host_key,
        )
        return AgentClient(f"127.0.0.1:{agent.port}", creds)

    try:
        with client("a" * 64) as mine, client("b" * 64) as theirs:
            request = profile_request(upload(mine), runs=2, warmup=0)
            ends = [b.end for b in mine.profile(request, timeout_s=60) if b.HasField("end")]
            theirs_code = _code(lambda: theirs.attach(request.job_id, 0, timeout_s=10))
            mine_again = [b.seq for b in mine.attach(request.job_id, 0, timeout_s=10)]
    finally:
        agent.stop(grace_s=0)

    assert ends[-1].status == pb.JobEnd.OK
    assert theirs_code == grpc.StatusCode.PERMISSION_DENIED
    assert mine_again and mine_again[0] == 1
