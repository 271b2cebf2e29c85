"""deploy/install-agent.sh and the systemd unit, exercised in a throwaway root without network."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from faultlib import AgentProc

from host.fleet.client import AgentClient, Credentials

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SCRIPT = DEPLOY / "install-agent.sh"
BOARD_CHECK = DEPLOY / "check-board.sh"
UNIT = DEPLOY / "edgeprof-agent.service"

VENV = Path("opt/edgeprof/venv")
TOKEN = Path("etc/edgeprof/agent.token")
ENV_FILE = Path("etc/edgeprof/agent.env")
UNIT_DEST = Path("etc/systemd/system/edgeprof-agent.service")
GROUPS_DROPIN = Path("etc/systemd/system/edgeprof-agent.service.d/10-groups.conf")
RAPL_RULE = Path("etc/udev/rules.d/99-edgeprof-rapl.rules")
DATA_DIR = Path("var/lib/edgeprof")
WANTS_LINK = Path("etc/systemd/system/multi-user.target.wants/edgeprof-agent.service")
HAND_START = "Without systemd (container, chroot), start the agent by hand with: "
SETPRIV_EDGEPROF = ["setpriv", "--reuid=edgeprof", "--regid=edgeprof", "--init-groups", "--reset-env", "--"]


def install(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the installer into `root` with the test's interpreter for the venv."""
    cmd = ["bash", str(SCRIPT), "--root", str(root), "--python", sys.executable, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def hand_command(stdout: str) -> list[str]:
    """The command the installer says starts the agent where systemd does not run, as words."""
    line = next(line for line in stdout.splitlines() if line.startswith(HAND_START))
    return shlex.split(line.removeprefix(HAND_START))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_settings(root: Path) -> dict[str, str]:
    lines = (root / ENV_FILE).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize("script", [SCRIPT, BOARD_CHECK], ids=lambda p: p.name)
def test_script_passes_bash_syntax_check(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", [SCRIPT, BOARD_CHECK], ids=lambda p: p.name)
def test_script_passes_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_unit_file_is_accepted_by_systemd_analyze(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart= exists; point it at an executable this machine has.
    unit = tmp_path / "edgeprof-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgeprof/venv/bin/agent", shutil.which("true") or "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    # Unknown or malformed keys are only warnings (exit 0), so stderr must be empty too.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_unit_runs_the_agent_as_its_own_user_with_the_token() -> None:
    text = UNIT.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "User=edgeprof" in text
    assert "EnvironmentFile=-/etc/edgeprof/agent.env" in text
    assert "serve --listen ${EDGEPROF_LISTEN} --token-file /etc/edgeprof/agent.token" in exec_start
    assert "--data-dir /var/lib/edgeprof" in exec_start
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"):
        assert option in text


def test_unit_bounds_the_agents_memory_and_survives_a_worker_oom_kill() -> None:
    text = UNIT.read_text()
    service = text.split("[Service]", 1)[1].split("[Install]", 1)[0]
    settings = dict(line.split("=", 1) for line in service.splitlines() if "=" in line and not line.startswith("#"))
    assert settings.get("MemoryMax", "").rstrip("%").isdigit(), "the unit must cap the agent's memory"
    assert 50 <= int(settings["MemoryMax"].rstrip("%")) <= 90
    assert settings.get("OOMPolicy") == "continue", "a worker's OOM kill must not stop the agent's unit"


def test_help_describes_every_option() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    for option in (
        "--source",
        "--extras",
        "--root",
        "--listen",
        "--profile",
        "--tags",
        "--power-meter",
        "--python",
        "--no-start",
        "--uninstall",
        "--rapl-access",
        "--pip-args",
        "--skip-pip",
    ):
        assert option in result.stdout


def test_help_says_what_happens_without_systemd() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True)

    text = " ".join(result.stdout.split())
    assert "Where systemd is not running (a container, a chroot" in text
    assert "exits 0, and prints the exact command that starts the agent by hand" in text


def test_hand_start_command_is_the_units_command_as_the_service_user(tmp_path: Path) -> None:
    root = tmp_path / "root"

    result = install(root, "--skip-pip", "--profile", "rpi5", "--tags", "lab,pi", "--no-start")

    settings = env_settings(root)
    exec_start = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    unit_command = (
        exec_start.removeprefix("ExecStart=")
        .replace("${EDGEPROF_LISTEN}", settings["EDGEPROF_LISTEN"])
        .replace("$EDGEPROF_AGENT_ARGS", settings["EDGEPROF_AGENT_ARGS"])
    )
    assert hand_command(result.stdout) == [*SETPRIV_EDGEPROF, *shlex.split(unit_command)]


def _primary_group_has_others() -> str | None:
    group = grp.getgrgid(os.getegid())
    me = pwd.getpwuid(os.geteuid()).pw_name
    others = (set(group.gr_mem) | {u.pw_name for u in pwd.getpwall() if u.pw_gid == group.gr_gid}) - {me, "root"}
    return f"group {group.gr_name} has {sorted(others)}" if others else None


def test_agent_starts_on_the_token_the_installer_wrote_without_a_warning(tmp_path: Path) -> None:
    # Under --root the file keeps this user's group (chown is only shown): readable by this user alone
    # unless that group has other members, which the agent would rightly warn about.
    shared = _primary_group_has_others()
    if shared:
        pytest.skip(f"this user's primary group is shared ({shared})")
    root = tmp_path / "root"
    install(root, "--skip-pip")
    token_file = root / TOKEN

    agent = AgentProc(tmp_path, "--token-file", str(token_file)).start()
    try:
        with AgentClient(agent.address, Credentials(token=token_file.read_text().strip())) as client:
            assert client.describe().auth_required
    finally:
        agent.stop()

    assert stat.S_IMODE(token_file.stat().st_mode) == 0o640
    assert "accessible by other users" not in agent.log_path.read_text()


def test_install_into_root_creates_venv_token_settings_and_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"

    result = install(root, "--skip-pip", "--profile", "rpi5", "--tags", "lab,pi")

    assert (root / VENV / "bin" / "python").exists()
    token = (root / TOKEN).read_text().strip()
    assert len(token) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert stat.S_IMODE((root / TOKEN).stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "etc/edgeprof").stat().st_mode) == 0o750
    assert env_settings(root) == {
        "EDGEPROF_LISTEN": "0.0.0.0:50051",
        "EDGEPROF_AGENT_ARGS": "--profile rpi5 --tags lab,pi",
    }
    assert (root / UNIT_DEST).read_text() == UNIT.read_text()
    assert (root / DATA_DIR).is_dir()
    # Nothing outside the root was changed: system commands were only shown.
    assert "would run: useradd --system" in result.stdout
    assert "would run: systemctl restart edgeprof-agent" in result.stdout
    assert "--device" in result.stdout and "--token-file" in result.stdout


def test_second_run_keeps_token_and_settings_it_is_not_given(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--skip-pip", "--profile", "jetson-orin-nano", "--listen", "0.0.0.0:6000")
    token = (root / TOKEN).read_text()

    install(root, "--skip-pip", "--tags", "lab")

    assert (root / TOKEN).read_text() == token
    assert env_settings(root) == {
        "EDGEPROF_LISTEN": "0.0.0.0:6000",
        "EDGEPROF_AGENT_ARGS": "--profile jetson-orin-nano --tags lab",
    }


def test_hand_added_agent_arguments_survive_a_rerun(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--skip-pip", "--profile", "rpi4")
    env = root / ENV_FILE
    env.write_text(env.read_text().replace("--profile rpi4", "--profile rpi4 --no-advertise"))

    install(root, "--skip-pip", "--power-meter", "um25c:/dev/rfcomm0")

    args = env_settings(root)["EDGEPROF_AGENT_ARGS"].split()
    assert args == ["--profile", "rpi4", "--power-meter", "um25c:/dev/rfcomm0", "--no-advertise"]


def test_existing_sensor_groups_become_supplementary_groups(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\ni2c:x:998:\n")

    result = install(root, "--skip-pip", "--rapl-access", "--venv", "/srv/edgeprof/venv", "--no-start")

    assert (root / GROUPS_DROPIN).read_text().splitlines()[-1] == "SupplementaryGroups=i2c video"
    assert "would run: usermod --append --groups i2c,video edgeprof" in result.stdout
    assert (root / RAPL_RULE).read_text() == (DEPLOY / "udev/99-edgeprof-rapl.rules").read_text()
    assert "ExecStart=/srv/edgeprof/venv/bin/agent serve" in (root / UNIT_DEST).read_text()
    assert (root / "srv/edgeprof/venv/bin/python").exists()
    assert "would run: systemctl restart" not in result.stdout


def test_uninstall_removes_install_but_keeps_data_until_purge(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text("video:x:44:\n")
    install(root, "--skip-pip", "--rapl-access")

    install(root, "--uninstall")

    for path in (VENV, TOKEN, ENV_FILE, UNIT_DEST, GROUPS_DROPIN, RAPL_RULE, Path("etc/edgeprof")):
        assert not (root / path).exists(), path
    assert (root / DATA_DIR).is_dir()

    result = install(root, "--uninstall", "--purge")

    assert not (root / DATA_DIR).exists()
    assert "would run: userdel edgeprof" in result.stdout


@pytest.mark.parametrize("listen", ["50051", "host:", "host:70000"])
def test_malformed_listen_address_is_refused(tmp_path: Path, listen: str) -> None:
    result = install(tmp_path / "root", "--skip-pip", "--listen", listen, check=False)

    assert result.returncode != 0
    assert "--listen" in result.stderr or "port" in result.stderr
    assert not (tmp_path / "root" / TOKEN).exists()


def _site_packages() -> list[str]:
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def test_installed_agent_command_runs_offline(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools here")
    # Build a wheel of this checkout from a copy, so the build leaves nothing in the working tree.
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            "tests",
            "bench",
            "deploy",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".*_cache",
            ".venv",
            "venv",
        ),
    )
    if not (src / "README.md").exists():
        (src / "README.md").write_text("edgeprof\n")
    wheelhouse = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(wheelhouse),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    wheel = next(wheelhouse.glob("edgeprof-*.whl"))
    root = tmp_path / "root"

    install(root, "--source", str(wheel), "--pip-args", "--no-index --no-deps", "--no-start")

    agent = root / VENV / "bin" / "agent"
    assert agent.exists()
    assert agent.read_text().splitlines()[0] == f"#!{root / VENV / 'bin' / 'python'}"
    # The venv holds edgeprof but not its dependencies (no network here): borrow those from the
    # test's own environment. PYTHONPATH does not process .pth files, so `agent` itself still
    # comes from the installed wheel, not from this checkout.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(_site_packages())}
    result = subprocess.run(
        [str(agent), "serve", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--token-file" in result.stdout
    located = subprocess.run(
        [str(root / VENV / "bin" / "python"), "-c", "import agent; print(agent.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert located.stdout.startswith(str(root / VENV))


def _can_unshare_mounts() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("useradd") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def _bin_dir_without(directory: Path, *names: str) -> Path:
    """A PATH directory with every program of this machine but `names`: a system without systemd installed."""
    directory.mkdir()
    for system_dir in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(system_dir):
            continue
        for program in Path(system_dir).iterdir():
            link = directory / program.name
            if program.name not in names and not link.exists() and not link.is_symlink():
                link.symlink_to(program)
    return directory


def _in_private_mounts(binds: dict[Path, str], script: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs `script` in a private mount namespace over copies of system directories, without systemd: its
    /run is hidden where systemd runs, and systemctl is not on its PATH."""
    mounts = " && ".join(f"mount --bind {source} {target}" for source, target in binds.items())
    prelude = f"""
        set -e
        {mounts}
        if [ -d /run/systemd/system ]; then mount -t tmpfs tmpfs /run; fi
    """
    return subprocess.run(
        ["unshare", "-m", "bash", "-c", prelude + script], capture_output=True, text=True, timeout=timeout_s
    )


def _python_any_user_may_run() -> str | None:
    """This interpreter, or the system's of the same version, where every directory on the way lets others in."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys.executable), os.path.realpath(f"/usr/bin/python{version}")):
        path = Path(candidate)
        if not path.is_file():
            continue
        if all(os.stat(p).st_mode & stat.S_IXOTH for p in (path, *path.parents)):
            return str(path)
    return None


def test_live_install_without_systemd_exits_0_and_the_agent_starts_by_hand(tmp_path: Path) -> None:
    """The real (non --root) path, inside a private mount namespace over copies of /etc, /opt and
    /var/lib, with no systemd running and no systemctl installed (a container, a chroot): useradd and
    chown run for real without touching this machine, a second run upgrades, and the command the
    installer prints starts the agent as `edgeprof` on the token it wrote, without a warning."""
    if not _can_unshare_mounts():
        pytest.skip("needs root and a private mount namespace (unshare -m)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    etc, opt, var_lib = tmp_path / "etc", tmp_path / "opt", tmp_path / "var-lib"
    subprocess.run(["cp", "-a", "/etc", str(etc)], check=True)
    opt.mkdir()
    var_lib.mkdir()
    binds = {etc: "/etc", opt: "/opt", var_lib: "/var/lib"}
    path = _bin_dir_without(tmp_path / "bin", "systemctl", "journalctl")
    port = free_port()
    install_cmd = f"bash {SCRIPT} --skip-pip --python {sys.executable}"

    installed = _in_private_mounts(
        binds,
        f"""
        export PATH={path}
        if command -v systemctl; then echo "systemctl is still on PATH"; exit 1; fi
        {install_cmd} --profile rpi4 --listen 127.0.0.1:{port} > {tmp_path}/first.out
        {install_cmd} --tags lab > {tmp_path}/second.out
        stat -c '%U:%G %a' /etc/edgeprof/agent.token /etc/edgeprof /var/lib/edgeprof
        readlink /etc/systemd/system/multi-user.target.wants/edgeprof-agent.service
        """,
    )

    assert installed.returncode == 0, installed.stdout + installed.stderr
    first, second = (tmp_path / "first.out").read_text(), (tmp_path / "second.out").read_text()
    assert "systemd is not running here" in first
    assert "Reusing venv" in second and "Keeping the existing token" in second
    assert "root:edgeprof 640\nroot:edgeprof 750\nedgeprof:edgeprof 750\n" in installed.stdout
    assert "/etc/systemd/system/edgeprof-agent.service\n" in installed.stdout
    command = hand_command(second)
    assert command[:7] == [*SETPRIV_EDGEPROF, "/opt/edgeprof/venv/bin/agent"]
    assert command[7:] == [
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--token-file",
        "/etc/edgeprof/agent.token",
        "--data-dir",
        "/var/lib/edgeprof",
        "--profile",
        "rpi4",
        "--tags",
        "lab",
    ]

    # --skip-pip left the venv empty: the same command with this checkout's agent in place of the venv's,
    # run by an interpreter of this Python version that `edgeprof` may execute.
    python = _python_any_user_may_run()
    if python is None:
        pytest.skip(f"no Python {sys.version_info.major}.{sys.version_info.minor} here that other users may run")
    agent = ["env", f"PYTHONPATH={os.pathsep.join([str(REPO), *_site_packages()])}", python, "-m", "agent"]
    by_hand = shlex.join([*command[:6], *agent, *command[7:], "--no-advertise"])
    log = tmp_path / "agent.log"
    describe = (
        "from host.fleet.client import AgentClient, Credentials; "
        "token = open('/etc/edgeprof/agent.token').read().strip(); "
        f"print('auth_required', AgentClient('127.0.0.1:{port}', Credentials(token=token)).describe().auth_required)"
    )
    served = _in_private_mounts(
        binds,
        f"""
        {by_hand} > {log} 2>&1 &
        pid=$!
        for _ in $(seq 600); do
            if grep -q 'edgeprof agent listening on' {log} || ! kill -0 $pid 2>/dev/null; then break; fi
            sleep 0.1
        done
        PYTHONPATH={REPO} {sys.executable} -c "{describe}" || true
        ps -o user=,args= -p $pid || true
        kill -TERM $pid 2>/dev/null || true
        status=0
        wait $pid || status=$?
        echo "agent exit status $status"
        {install_cmd} --uninstall --purge
        if getent passwd edgeprof; then echo "user still there"; exit 1; fi
        test ! -e /etc/systemd/system/multi-user.target.wants/edgeprof-agent.service
        """,
    )

    agent_log = log.read_text()
    assert served.returncode == 0, served.stdout + served.stderr + agent_log
    assert f"edgeprof agent listening on 127.0.0.1:{port} (profile rpi4, auth token)" in agent_log
    assert "auth_required True" in served.stdout
    assert re.search(r"^edgeprof +\S+ -m agent serve", served.stdout, re.MULTILINE), served.stdout
    # The command execs the agent: a container's SIGTERM reaches it, and it stops cleanly.
    assert "agent exit status 0" in served.stdout, served.stdout + agent_log
    assert "accessible by other users" not in agent_log
    assert not (etc / "edgeprof").exists()
