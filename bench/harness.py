"""What every benchmark shares: isolated environments, real agents and `host profile` runs, RESULTS.md."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.fleet import parent_death
from host.fleet.local_agent import read_listen_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
#: Agents are started from this one long-lived thread: the parent-death signal follows the thread that
#: started a child, so an agent started from a pool thread (bench_fleet) would die with that thread otherwise.
#: The signal (host.fleet.parent_death) means no agent, and no worker, which the agent stops on SIGTERM, is left
#: holding a core and skewing the next benchmark when a benchmark is killed.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-spawner")


def light_model(name: str) -> Path:
    """A real CNN from the onnx package's test data (e.g. "squeezenet" -> light_squeezenet.onnx)."""
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


def tiny_add_model(path: Path) -> Path:
    """A single Add on a 1-element float tensor: the cheapest inference there is."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "tiny_add", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@contextmanager
def isolated_env(extra: dict[str, str] | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A temp dir and an environment whose host store, caches, config and agent data all live in it."""
    with tempfile.TemporaryDirectory(prefix="edgeprof-bench-") as name:
        root = Path(name)
        env = dict(os.environ)
        env.update(
            EDGEPROF_DB=str(root / "runs.sqlite"),
            XDG_CACHE_HOME=str(root / "cache"),
            XDG_DATA_HOME=str(root / "data"),
            XDG_CONFIG_HOME=str(root / "config"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("EDGEPROF_TOKEN", None)
        env.pop("EDGEPROF_CONFIG", None)
        env.update(extra or {})
        yield root, env


@dataclass
class AgentProc:
    """One `agent serve` process on loopback."""

    proc: subprocess.Popen[str]
    address: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_agent(
    data_dir: Path,
    env: dict[str, str],
    extra_args: Sequence[str] = (),
    timeout_s: float = 60.0,
    advertise: bool = False,
) -> AgentProc:
    """`python -m agent serve --listen 127.0.0.1:0 --no-advertise --data-dir D …`; waits for its port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    quiet = [] if advertise else ["--no-advertise"]
    cmd = [
        sys.executable,
        "-m",
        "agent",
        "serve",
        "--listen",
        "127.0.0.1:0",
        *quiet,
        "--data-dir",
        str(data_dir),
        *extra_args,
    ]
    with open(data_dir / "agent.log", "ab") as log:
        proc = _SPAWNER.submit(
            lambda: subprocess.Popen(
                parent_death.command(cmd),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=data_dir,
                start_new_session=True,
            )
        ).result()
    port = read_listen_port(proc, timeout_s)
    if port is None:
        AgentProc(proc, "").stop()
        raise RuntimeError(f"agent did not start: {(data_dir / 'agent.log').read_text()[-500:]}")
    return AgentProc(proc, f"127.0.0.1:{port}")


def host_profile(
    model: Path, args: Sequence[str], env: dict[str, str], cwd: Path, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Run `host profile MODEL ARGS --json out --quiet` in a subprocess; return the result document."""
    out = cwd / f"result-{os.getpid()}-{threading.get_ident()}-{dt.datetime.now().timestamp()}.json"
    cmd = [sys.executable, "-m", "host", "profile", str(model), *args, "--json", str(out), "--quiet"]
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if not out.exists():
        raise RuntimeError(f"host profile failed (exit {done.returncode}): {done.stderr[-800:]}")
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def phase_s(device: dict[str, Any], name: str) -> float:
    """Duration in seconds of the device's first completed phase `name` (0.0 when absent)."""
    for phase in device.get("phases") or []:
        if phase["name"] == name and phase["end_ns"]:
            return float(phase["end_ns"] - phase["start_ns"]) / 1e9
    return 0.0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of process `pid` itself, CPU seconds of its children that have exited)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system, t.children_user + t.children_system


def cpu_stall_us() -> int:
    """Total µs some task waited for a CPU (/proc/pressure/cpu "some"); 0 where PSI is unavailable."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0
    return int(some.rsplit("total=", 1)[1])


def wait_for_quiet(max_wait_s: float = 20.0, stall_pct: float = 5.0) -> float:
    """Wait (up to `max_wait_s`) until other processes leave the CPUs alone; returns the last stall %.

    A shared machine has bursts of load from others; measuring during one moves p50 by tens of percent.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        s0, t0 = cpu_stall_us(), time.monotonic()
        time.sleep(1.0)
        pct = 100 * (cpu_stall_us() - s0) / ((time.monotonic() - t0) * 1e6)
        if pct <= stall_pct or time.monotonic() >= deadline:
            return pct


def machine() -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {cpu}, Python {platform.python_version()}, ORT {onnxruntime.__version__}"


def load_average() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


@dataclass
class Row:
    figure: str
    goal: str
    measured: str
    ratio: str


def print_table(title: str, rows: Sequence[Row]) -> None:
    print(f"\n{title}")
    widths = [
        max(len(h), *(len(getattr(r, a)) for r in rows))
        for h, a in (("figure", "figure"), ("goal", "goal"), ("measured", "measured"), ("ratio", "ratio"))
    ]
    print("  ".join(h.ljust(w) for h, w in zip(("figure", "goal", "measured", "ratio"), widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip((r.figure, r.goal, r.measured, r.ratio), widths, strict=True)))


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def record(section: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    """Replace (or append) this benchmark's section of bench/RESULTS.md."""
    today = dt.date.today().isoformat()
    cmd = command_line().replace("|", "\\|")
    lines = [
        f"<!-- bench:{section} -->",
        f"### {section}",
        "",
        "| figure | goal | measured | ratio | command | date | machine |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.figure} | {r.goal} | {r.measured} | {r.ratio} | `{cmd}` | {today} | {machine()} |" for r in rows]
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    lines.append(f"<!-- /bench:{section} -->")
    _write_section(section, "\n".join(lines))


def record_block(section: str, body: Sequence[str]) -> None:
    """Replace (or append) a section of bench/RESULTS.md whose tables have their own columns (calibration)."""
    head = [f"<!-- bench:{section} -->", f"### {section}", ""]
    _write_section(section, "\n".join([*head, *body, f"<!-- /bench:{section} -->"]))


def _write_section(section: str, block: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nRegenerate a section with `--record`.\n"
    pattern = re.compile(rf"<!-- bench:{re.escape(section)} -->.*?<!-- /bench:{re.escape(section)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(f"recorded in {RESULTS.relative_to(REPO)}")
