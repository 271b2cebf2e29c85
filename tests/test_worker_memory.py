"""A job's worker has a memory limit: a model that allocates too much ends its job, not the agent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from faultlib import AgentProc, assert_still_serving, isolated_env, profile_request, upload, wait_for
from onnx import TensorProto, helper

from agent.device.profiles import load_profile
from agent.jobs.memory_limit import MIN_WORKER_MEMORY_MB
from protos import agent_pb2 as pb


def _allocating_model(path: Path, n_floats: int) -> Path:
    """y = ConstantOfShape([n_floats]) + x: one run allocates n_floats * 4 bytes (ORT will not fold it)."""
    shape = helper.make_node(
        "Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [1], [n_floats])
    )
    big = helper.make_node(
        "ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    )
    add = helper.make_node("Add", ["big", "x"], ["y"])
    graph = helper.make_graph(
        [shape, big, add],
        "allocates",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("warm", [False, True], ids=["cold-worker", "warm-worker"])
def test_model_allocating_past_the_limit_ends_out_of_memory_and_the_agent_serves_on(tmp_path: Path, warm: bool) -> None:
    agent = AgentProc(tmp_path, "--worker-memory-mb", "256", *(["--warm-worker"] if warm else [])).start()
    try:
        with agent.client() as client:
            sha = upload(client, _allocating_model(tmp_path / "alloc.onnx", 400_000_000))  # 1.6 GB
            if warm:  # the job must take the worker that imported its runtime before the limit was known
                wait_for(agent.workers, 60, "the warm worker")

            started = time.monotonic()
            batches = list(client.profile(profile_request(sha), timeout_s=120))

            assert time.monotonic() - started < 30
            end = batches[-1].end
            assert end.status == pb.JobEnd.ERROR and end.error_kind == "out_of_memory", end
            assert end.error.startswith("out of memory: the worker's resident memory reached "), end.error
            assert "\n" not in end.error
            assert end.error.endswith(" MB during prepare (limit 256 MB)"), end.error
            # Killed near the limit, not after the 1.6 GB it asked for (what it touches in one watch interval).
            reached_mb = float(end.error.split("reached ")[1].split(" MB")[0])
            assert 256 < reached_mb < 256 + 400, end.error
            assert_still_serving(client, upload(client))  # squeezenet fits the same limit
    finally:
        agent.stop()


@pytest.mark.parametrize("threads", [16, 64])
def test_squeezenet_with_many_threads_runs_within_the_smallest_limit(tmp_path: Path, threads: int) -> None:
    # The limit bounds resident memory: what a runtime reserves per thread (a stack, a malloc arena) and
    # never touches is not counted. Under an address-space limit 64 threads hung ONNX Runtime in prepare.
    agent = AgentProc(tmp_path, "--worker-memory-mb", str(MIN_WORKER_MEMORY_MB)).start()
    try:
        with agent.client() as client:
            sha = upload(client)

            request = profile_request(sha, threads=threads, runs=3, warmup=0, timeout_s=90)
            ends = [b.end for b in client.profile(request, timeout_s=120) if b.HasField("end")]

            assert ends and ends[-1].status == pb.JobEnd.OK, ends
    finally:
        agent.stop()


def test_worker_memory_limit_below_the_floor_is_refused_in_one_line(tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "agent", "serve", "--listen", "127.0.0.1:0", "--no-advertise"]
    result = subprocess.run(
        [*serve, "--data-dir", str(tmp_path / "agent"), "--worker-memory-mb", "16"],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--worker-memory-mb" in lines[0] and "256 MB" in lines[0], result.stderr


def test_profile_sets_the_default_worker_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny-board.toml").write_text('name = "tiny-board"\n[limits]\nworker_memory_mb = 384\n')
    (tmp_path / "bad-board.toml").write_text('name = "bad-board"\n[limits]\nworker_memory_mb = "lots"\n')
    monkeypatch.setenv("EDGEPROF_PROFILES_DIR", str(tmp_path))

    assert load_profile("tiny-board").worker_memory_mb == 384
    assert load_profile("rpi4").worker_memory_mb == 1024 and load_profile("nvidia-dgpu").worker_memory_mb == 0
    with pytest.raises(ValueError, match="worker_memory_mb must be a whole number"):
        load_profile("bad-board")


def test_a_runner_the_worker_starts_counts_against_its_limit() -> None:
    # llama-bench and trtexec run as the worker's children: their memory is the job's too.
    from agent.jobs.memory_limit import MemoryWatch, tree_resident_bytes

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; subprocess.run([sys.executable, '-c',"
            " 'import time; x = bytearray(300 * 2**20); time.sleep(60)'])",
        ],
        start_new_session=True,
    )
    try:
        wait_for(lambda: (tree_resident_bytes(parent.pid) or 0) > 300 * 2**20, 30, "the child to allocate")
        watch = MemoryWatch(parent.pid, MIN_WORKER_MEMORY_MB).start()
        parent.wait(timeout=10)  # killed with its whole group
        watch.stop()
    finally:
        if parent.poll() is None:
            parent.kill()

    assert watch.tripped_bytes is not None and watch.tripped_bytes > 300 * 2**20
    assert parent.returncode == -9


def test_the_figure_reached_is_never_shown_at_or_under_the_limit() -> None:
    from agent.jobs.memory_limit import MemoryWatch

    watch = MemoryWatch(os.getpid(), 256)
    watch.tripped_bytes = int(256.1 * 2**20)  # just past: rounded to the nearest MB it read "reached 256 MB"

    assert str(watch.error("prepare")) == (
        "out of memory: the worker's resident memory reached 257 MB during prepare (limit 256 MB)"
    )
