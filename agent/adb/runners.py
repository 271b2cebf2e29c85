"""Runners on the phone: the user's benchmark_model (onnxruntime_perf_test, llama-bench), pushed content-addressed.

`agent adb install-runner PATH` pushes PATH to /data/local/tmp/edgeprof/runners/<sha256[:16]>/<name>, runs
it with --help to check that it starts on this phone (right ABI, libraries found), and records where it
is and its version in /data/local/tmp/edgeprof/runners/<name>.txt, which the bridge reads at job time.
Delegate libraries (the QNN TFLite delegate, a vendor's external delegate) go to …/delegates/ the same way.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from agent.adb.phone import PHONE_DIR, Phone
from agent.errors import AgentError, InvalidInput, RuntimeMissing

BENCHMARK_MODEL = "benchmark_model"
ORT_PERF_TEST = "onnxruntime_perf_test"
#: llama.cpp's benchmark for GGUF models (agent/adb/llama_phone.py); built for the phone's ABI, statically.
LLAMA_BENCH = "llama-bench"
RUNNERS = (BENCHMARK_MODEL, ORT_PERF_TEST, LLAMA_BENCH)
#: A flag each runner's --help mentions: it started on this phone and is the program it is named for.
_HELP_FLAG = {BENCHMARK_MODEL: "--graph", ORT_PERF_TEST: "-m", LLAMA_BENCH: "--n-prompt"}
DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi", "qnn")
RUNNER_DIR = f"{PHONE_DIR}/runners"
DELEGATE_DIR = f"{PHONE_DIR}/delegates"
QNN_DELEGATE = "libQnnTFLiteDelegate.so"
_VERSION = re.compile(r"version[:\s]+v?(\d+\.\d+[\w.\-]*)", re.I)


class RunnerRejected(AgentError):
    """The file given as a runner does not run on the phone."""

    kind = "runtime_missing"


@dataclass(frozen=True)
class Runner:
    name: str
    path: str
    version: str
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def runner_name(path: Path) -> str:
    for name in RUNNERS:
        if path.name.startswith(name):
            return name
    if path.suffix == ".so":
        return "delegate"
    raise InvalidInput(f"{path.name}: not a runner edgeprof knows (name it {' or '.join(RUNNERS)}, or a delegate .so)")


def install(phone: Phone, path: Path) -> Runner:
    """Push a runner (or delegate library) to the phone, check that it runs, record it; returns what was installed."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    name = runner_name(path)
    sha = _sha256(path)
    if name == "delegate":
        remote = f"{DELEGATE_DIR}/{path.name}"
        if phone.size(remote) != path.stat().st_size:
            phone.push(path, remote, mode=0o644)
        return Runner(path.name, remote, "", sha)
    remote = f"{RUNNER_DIR}/{sha[:16]}/{name}"
    if phone.size(remote) != path.stat().st_size:
        phone.push(path, remote, mode=0o755)
    out = phone.shell(f'{remote} --help 2>&1; echo "@rc $?"', timeout_s=60, doing="while checking the runner")
    rc = out.rstrip().rsplit("@rc ", 1)[-1].strip()
    if _HELP_FLAG[name] not in out:
        last = next((ln for ln in reversed(out.splitlines()) if ln.strip() and not ln.startswith("@rc")), "no output")
        static = " and linked statically (cmake -DBUILD_SHARED_LIBS=OFF)" if name == LLAMA_BENCH else ""
        raise RunnerRejected(
            f"{path.name} does not run on phone {phone.serial} (exit {rc}: {last.strip()[:200]}): "
            f"is it built for this phone's ABI{static}?"
        )
    match = _VERSION.search(out)
    version = match.group(1) if match else f"sha256:{sha[:12]}"
    record = f"{remote}\n{version}\n{sha}\n"
    phone.shell(f"echo {shlex.quote(record)} > {RUNNER_DIR}/{name}.txt", doing="while recording the runner")
    return Runner(name, remote, version, sha)


def installed(phone: Phone) -> dict[str, Runner]:
    """The runners recorded on the phone whose file is still there."""
    out = phone.shell(
        " ".join(f"echo @{n}; cat {RUNNER_DIR}/{n}.txt 2>/dev/null;" for n in RUNNERS)
        + f" echo @delegates; ls {DELEGATE_DIR} 2>/dev/null",
        doing="while listing runners",
    )
    found: dict[str, Runner] = {}
    current = ""
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("@"):
            current = line[1:].strip()
            lines[current] = []
        elif current and line.strip():
            lines[current].append(line.strip())
    for name in RUNNERS:
        rec = lines.get(name, [])
        if len(rec) >= 3:
            found[name] = Runner(name, rec[0], rec[1], rec[2])
    for lib in lines.get("delegates", []):
        found[lib] = Runner(lib, f"{DELEGATE_DIR}/{lib}", "", "")
    return found


def require(phone: Phone, name: str = BENCHMARK_MODEL) -> Runner:
    runner = installed(phone).get(name)
    if runner is None:
        get = (
            "build llama.cpp's llama-bench for its ABI (Android NDK, -DBUILD_SHARED_LIBS=OFF)"
            if name == LLAMA_BENCH
            else f"download the {'LiteRT benchmark_model' if name == BENCHMARK_MODEL else name} for its ABI"
        )
        raise RuntimeMissing(
            f"no {name} on phone {phone.serial}: {get} and run `agent adb install-runner PATH --serial {phone.serial}`"
        )
    return runner


def delegate_flags(delegate: str, available: dict[str, Runner]) -> list[str]:
    """benchmark_model flags for a delegate name: xnnpack, gpu, nnapi, qnn, cpu, or external:PATH."""
    if delegate in ("", "cpu"):
        return ["--use_xnnpack=false"]
    if delegate == "xnnpack":
        return ["--use_xnnpack=true"]
    if delegate == "gpu":
        return ["--use_gpu=true"]
    if delegate == "nnapi":
        return ["--use_nnapi=true"]
    if delegate == "qnn":
        if QNN_DELEGATE not in available:
            raise RuntimeMissing(
                f"the qnn delegate needs {QNN_DELEGATE} from Qualcomm's AI Engine Direct SDK on the phone: "
                f"`agent adb install-runner PATH/{QNN_DELEGATE}`"
            )
        return [
            f"--external_delegate_path={DELEGATE_DIR}/{QNN_DELEGATE}",
            "--external_delegate_options=backend_type:htp",
        ]
    if delegate.startswith("external:") and len(delegate) > len("external:"):
        return [f"--external_delegate_path={delegate.split(':', 1)[1]}"]
    raise InvalidInput(f"unknown delegate '{delegate[:40]}': use one of {', '.join(DELEGATES)} or external:PATH")
