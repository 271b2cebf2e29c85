"""Authentication: bearer token, TLS and mutual TLS; no unauthenticated agent beyond loopback."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from faultlib import SQUEEZENET, AgentProc, generate_certs, isolated_env, profile_request, sha256_bytes, upload

from agent.serve import AgentProcess, ServeOptions
from host.fleet.client import AgentClient, Credentials

TOKEN_HINT = "--token-file, EDGEPROF_TOKEN or the fleet's token_file"


@pytest.fixture(scope="module")
def token_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProc, str]]:
    tmp = tmp_path_factory.mktemp("auth")
    token = secrets.token_urlsafe(32)
    (tmp / "token").write_text(token)
    (tmp / "token").chmod(0o600)
    proc = AgentProc(tmp, "--token-file", str(tmp / "token")).start()
    try:
        yield proc, token
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_certs(tmp_path_factory.mktemp("certs"))


def _host_profile(tmp: Path, address: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "host",
        "profile",
        str(SQUEEZENET),
        "--device",
        address,
        "--runs",
        "3",
        "--warmup",
        "0",
        "--min-duration",
        "0",
        "--idle",
        "0",
        "-q",
        *args,
    ]
    return subprocess.run(cmd, cwd=tmp, env=isolated_env(tmp, **env), text=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"], ids=["no-token", "wrong-token"])
def test_host_without_the_token_can_neither_upload_nor_profile(
    token_agent: tuple[AgentProc, str], token: str | None
) -> None:
    agent, right = token_agent
    with AgentClient(agent.address, Credentials(token=right)) as good:
        sha = upload(good)
        # The agent is shared by this module's tests: compare with its jobs before, not with "none".
        jobs_before = {job.job_id for job in good.list_jobs(include_acknowledged=True)}
    request = profile_request(sha)
    with AgentClient(agent.address, Credentials(token=token)) as client:
        for call in (
            lambda: client.upload(SQUEEZENET, sha256_bytes(b"other"), "onnx"),
            lambda: list(client.profile(request, timeout_s=10)),
            lambda: client.list_jobs(),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert TOKEN_HINT in caught.value.details()
    with AgentClient(agent.address, Credentials(token=right)) as good:
        assert not good.has_model(sha256_bytes(b"other"))
        jobs_after = {job.job_id for job in good.list_jobs(include_acknowledged=True)}
    assert request.job_id not in jobs_after, "the unauthenticated host's job was queued"
    assert jobs_after == jobs_before, "no job ran for the unauthenticated host"


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"], ids=["no-token", "wrong-token"])
def test_host_profile_without_the_token_prints_one_line_naming_how_to_set_it(
    token_agent: tuple[AgentProc, str], tmp_path: Path, token: str | None
) -> None:
    agent, _right = token_agent
    result = _host_profile(tmp_path, agent.address, **({"EDGEPROF_TOKEN": token} if token else {}))

    assert result.returncode == 1
    # The final table's console may wrap a long line at its width; the message itself is one line.
    output = " ".join((result.stdout + result.stderr).split())
    assert output.count(f"the agent at {agent.address} refused the host's credentials") == 1, output
    assert output.count(TOKEN_HINT) == 1, output


def test_host_profile_with_the_token_file_succeeds(token_agent: tuple[AgentProc, str], tmp_path: Path) -> None:
    agent, right = token_agent
    (tmp_path / "token").write_text(right + "\n")

    result = _host_profile(tmp_path, agent.address, "--token-file", str(tmp_path / "token"))

    assert result.returncode == 0, result.stdout + result.stderr


def test_agent_refuses_to_listen_beyond_loopback_without_auth(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--no-advertise",
            "--data-dir",
            str(tmp_path / "agent"),
        ],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        text=True,
        capture_output=True,
        timeout=30,
    )

    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--insecure" in lines[0] and "--token-file" in lines[0], result.stderr


def test_agent_listens_beyond_loopback_when_told_insecure(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--insecure",
            "--no-advertise",
            "--data-dir",
            str(tmp_path / "agent"),
        ],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "listening on 0.0.0.0:" in line and "auth none" in line
        port = int(line.split("0.0.0.0:")[1].split()[0])
        with AgentClient(f"127.0.0.1:{port}") as client:
            assert client.health() == "SERVING"
            assert not client.describe().auth_required
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def _tls_agent(tmp: Path, certs: dict[str, Path], mutual: bool) -> AgentProcess:
    proc = AgentProcess(
        ServeOptions(
            listen="127.0.0.1:0",
            advertise=False,
            data_dir=tmp,
            tls_cert=certs["server"],
            tls_key=certs["server_key"],
            tls_client_ca=certs["ca"] if mutual else None,
        )
    )
    proc.start()
    return proc


def _describe_code(address: str, credentials: Credentials | None) -> grpc.StatusCode:
    with AgentClient(address, credentials, timeout_s=5) as client:
        try:
            client.describe()
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_tls_agent_answers_a_host_that_trusts_its_ca_only(tmp_path: Path, certs: dict[str, Path]) -> None:
    agent = _tls_agent(tmp_path, certs, mutual=False)
    address = f"127.0.0.1:{agent.port}"
    try:
        assert _describe_code(address, Credentials(root_ca_pem=certs["ca"].read_bytes())) == grpc.StatusCode.OK
        assert _describe_code(address, Credentials(root_ca_pem=certs["other-ca"].read_bytes())) != grpc.StatusCode.OK
        assert _describe_code(address, None) != grpc.StatusCode.OK, "plaintext must not reach a TLS agent"
    finally:
        agent.stop(grace_s=0)


def test_mutual_tls_agent_refuses_hosts_without_a_certificate_from_its_ca(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    agent = _tls_agent(tmp_path, certs, mutual=True)
    address = f"127.0.0.1:{agent.port}"
    ca = certs["ca"].read_bytes()

    def creds(name: str | None) -> Credentials:
        if name is None:
            return Credentials(root_ca_pem=ca)
        return Credentials(
            root_ca_pem=ca, client_cert_pem=certs[name].read_bytes(), client_key_pem=certs[f"{name}_key"].read_bytes()
        )

    try:
        assert _describe_code(address, creds("client")) == grpc.StatusCode.OK
        assert _describe_code(address, creds(None)) != grpc.StatusCode.OK
        assert _describe_code(address, creds("rogue")) != grpc.StatusCode.OK
        with AgentClient(address, creds("client")) as client:
            assert client.describe().auth_required
    finally:
        agent.stop(grace_s=0)


def test_host_profile_with_tls_ca_profiles_a_tls_agent(tmp_path: Path, certs: dict[str, Path]) -> None:
    agent = _tls_agent(tmp_path / "agent", certs, mutual=False)
    address = f"127.0.0.1:{agent.port}"
    try:
        trusted = _host_profile(tmp_path, address, "--tls-ca", str(certs["ca"]), "--json", str(tmp_path / "run.json"))
        untrusted = _host_profile(tmp_path, address, "--tls-ca", str(certs["other-ca"]))
    finally:
        agent.stop(grace_s=0)

    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    [entry] = json.loads((tmp_path / "run.json").read_text())["devices"]
    assert entry["status"] == "ok" and entry["n_inferences"] >= 3
    assert untrusted.returncode == 1, "a CA that did not sign the agent's certificate must not be trusted"


@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_host_profile_with_an_unreadable_tls_ca_fails_in_one_line(tmp_path: Path, problem: str) -> None:
    ca = tmp_path / "ca.pem"
    if problem == "directory":
        ca.mkdir()

    # No agent listens there: the CA file is read before any agent is contacted.
    result = _host_profile(tmp_path, "127.0.0.1:9", "--tls-ca", str(ca))

    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("host: ") and str(ca) in lines[0], result.stderr


def _serve(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`agent serve` expected to refuse its configuration (exit 2) before it listens."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "serve", "--no-advertise", "--data-dir", str(tmp / "agent"), *args],
        cwd=tmp,
        env=isolated_env(tmp),
        text=True,
        capture_output=True,
        timeout=30,
    )


def test_server_only_tls_beyond_loopback_is_refused_as_no_authentication(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    result = _serve(
        tmp_path, "--listen", "0.0.0.0:0", "--tls-cert", str(certs["server"]), "--tls-key", str(certs["server_key"])
    )

    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "server-only TLS" in lines[0] and "--tls-client-ca" in lines[0] and "--insecure" in lines[0]


def test_only_a_token_or_mutual_tls_is_advertised_as_authentication(tmp_path: Path, certs: dict[str, Path]) -> None:
    (tmp_path / "token").write_text(secrets.token_urlsafe(32))
    (tmp_path / "token").chmod(0o600)
    tls = {"tls_cert": certs["server"], "tls_key": certs["server_key"]}
    setups = {
        "server-only tls": ServeOptions(**tls),
        "mutual tls": ServeOptions(**tls, tls_client_ca=certs["ca"]),
        "token": ServeOptions(token_file=tmp_path / "token"),
        "nothing": ServeOptions(),
    }
    advertised = {}
    for name, opts in setups.items():
        opts.listen, opts.advertise, opts.profile, opts.data_dir = (
            "127.0.0.1:0",
            False,
            "generic-linux",
            tmp_path / "data" / name,
        )
        agent = AgentProcess(opts)
        advertised[name] = agent.describe().auth_required
        agent.stop()

    assert advertised == {"server-only tls": False, "mutual tls": True, "token": True, "nothing": False}


def test_mutual_tls_alone_may_listen_beyond_loopback(tmp_path: Path, certs: dict[str, Path]) -> None:
    opts = ServeOptions(
        listen="0.0.0.0:0",
        advertise=False,
        profile="generic-linux",
        data_dir=tmp_path / "agent",
        tls_cert=certs["server"],
        tls_key=certs["server_key"],
        tls_client_ca=certs["ca"],
    )
    agent = AgentProcess(opts)
    agent.stop()

    assert agent.authenticated


def test_world_readable_token_file_is_warned_about_in_one_line(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(32))
    token.chmod(0o644)
    agent = AgentProc(tmp_path, "--token-file", str(token)).start()
    try:
        with AgentClient(agent.address, Credentials(token=token.read_text())) as client:
            assert client.describe().auth_required
    finally:
        agent.stop()

    warnings = [ln for ln in agent.log_path.read_text().splitlines() if "accessible by other users" in ln]
    assert len(warnings) == 1 and "chmod 600" in warnings[0] and "644" in warnings[0]


def test_private_token_file_gets_no_warning(token_agent: tuple[AgentProc, str]) -> None:
    agent, _token = token_agent

    assert "accessible by other users" not in agent.log_path.read_text()


def test_plain_loopback_agent_says_any_local_user_can_run_jobs(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-advertise",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
    finally:
        proc.terminate()
        proc.communicate(timeout=15)

    assert "listening on 127.0.0.1:" in line and "auth none" in line
    assert "any local user can run jobs" in line and "--token-file" in line


# The interceptor in this process (issue 18: mutation testing reaches only in-process code, and every test
# above runs the agent as a subprocess).
@pytest.fixture
def token_agent_here(tmp_path: Path) -> Iterator[tuple[AgentProcess, str]]:
    token = secrets.token_urlsafe(32)
    (tmp_path / "token").write_text(token)
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
    yield agent, token
    agent.stop()


def test_every_kind_of_call_without_the_right_token_is_unauthenticated(
    token_agent_here: tuple[AgentProcess, str],
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from protos import agent_pb2, agent_pb2_grpc

    agent, token = token_agent_here
    with grpc.insecure_channel(f"127.0.0.1:{agent.port}") as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        calls = {
            "Describe": lambda md: stub.Describe(agent_pb2.DescribeRequest(), metadata=md, timeout=30),
            "UploadModel": lambda md: stub.UploadModel(iter([agent_pb2.ModelChunk()]), metadata=md, timeout=30),
            "Profile": lambda md: list(stub.Profile(agent_pb2.ProfileRequest(), metadata=md, timeout=30)),
            "Attach": lambda md: list(stub.Attach(agent_pb2.AttachRequest(), metadata=md, timeout=30)),
        }
        for name, call in calls.items():
            for metadata in ((), (("authorization", f"Bearer {token[:-1]}"),), (("authorization", token),)):
                with pytest.raises(grpc.RpcError) as refused:
                    call(metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, metadata)
                assert TOKEN_HINT in (refused.value.details() or ""), name
        described = stub.Describe(
            agent_pb2.DescribeRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=30
        )
        assert described.hostname
        # Open without the token: health checks, and Prove (how a host shows it holds the token).
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        try:
            stub.Prove(agent_pb2.ProveRequest(), timeout=30)
        except grpc.RpcError as err:
            assert err.code() != grpc.StatusCode.UNAUTHENTICATED


def test_listen_addresses_are_read_and_checked_for_loopback() -> None:
    from agent.server import is_loopback, split_address

    assert [is_loopback(h) for h in ("localhost", "127.0.0.1", "127.9.9.9", "[::1]")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "192.168.1.20", "[::]", "lab-pi")] == [False] * 4
    assert split_address("0.0.0.0:50051") == ("0.0.0.0", 50051)
    assert split_address(":50051") == ("0.0.0.0", 50051)
    assert split_address("[::1]:7") == ("[::1]", 7)
    for bad in ("50051", "host:", "host:port"):
        with pytest.raises(ValueError, match=f"--listen '{bad}' must be HOST:PORT, e.g. 127.0.0.1:50051"):
            split_address(bad)


def test_a_second_agent_on_a_port_in_use_is_refused_in_one_line_and_health_names_the_service() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from agent.server import SERVICE_NAME, create_server
    from protos import agent_pb2_grpc

    first, port, _health = create_server("127.0.0.1:0", agent_pb2_grpc.AgentServicer())
    try:
        with pytest.raises(OSError) as refused:
            create_server(f"127.0.0.1:{port}", agent_pb2_grpc.AgentServicer())
        assert str(refused.value) == (
            f"cannot listen on 127.0.0.1:{port}: the address is in use (another agent?) or not on this machine;"
            " pick another --listen HOST:PORT"
        )
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            for service in (SERVICE_NAME, ""):
                reply = check(health_pb2.HealthCheckRequest(service=service), timeout=30)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    finally:
        first.stop(None)
