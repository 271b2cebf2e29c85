"""The worker subprocess: loads one model, runs warmup and measured inferences, reports over a pipe.

It runs apart from the agent so that a runtime that segfaults or runs out of memory fails one job,
not the agent; so that its memory is its own; and so that the agent's samplers never compete with
the timing loop for the GIL. Protocol (see agent/measure/frames.py):

  agent -> stdin:  one JSON line with the job spec; later the line "go" (after settle and idle)
  worker -> stdout: events {"type": "info" | "phase" | "end" | "error"} and latency blocks

With `--preload` (the agent's warm worker, `agent serve --warm-worker`) the worker imports the
installed runtimes before it reads the spec, so a job that takes it skips the interpreter start and
the runtime import (about 0.2 s on a laptop, 1-2 s on a Raspberry Pi). Everything after the spec
line is the same code path as a cold worker.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import IO, Any

from agent.errors import AgentError, InvalidInput
from agent.measure import frames
from agent.measure.frames import FLUSH_INTERVAL_NS
from agent.measure.rss import peak_rss_bytes, rss_bytes
from agent.measure.warmup import block_size, is_stable_in_time

# Phase numbers as in protos/agent.proto (kept literal: the worker must not import grpc/protobuf).
WARMUP = 5
MEASURE = 6
#: Latency windows per block at most (keeps one frame well below a megabyte).
MAX_BLOCK = 20_000


class Worker:
    def __init__(self, spec: dict[str, Any], out: IO[bytes], control: Any) -> None:
        self.spec = spec
        self.out = out
        self.control = control
        self.phase = "prepare"
        self.done = 0

    def event(self, **fields: Any) -> None:
        frames.write_event(self.out, fields)

    def run(self) -> None:
        """The job. Its memory limit is the agent's to enforce (agent/jobs/memory_limit.py), from outside."""
        from agent.measure.inputs import load_npz, random_inputs, resolve_shapes
        from agent.runtimes import GENERATIVE_FORMATS, backend_for_format

        spec = self.spec
        if spec["format"] == "gguf" and spec.get("llama_bench"):  # the board's own llama-bench binary
            from agent.inference.llama_bench_job import run_llama_bench

            run_llama_bench(self, spec["llama_bench"])  # the agent's memory watch counts its child too
            return
        runtime = backend_for_format(spec["format"], spec.get("options", {}).get("runtime", ""))
        if spec["format"] in GENERATIVE_FORMATS:  # generations, not inferences (agent/inference/generation.py)
            from agent.inference.generation import run_generation

            run_generation(self, runtime)
            return
        session, load_time_ns, load_rss_delta = self.load_session(runtime)
        if spec.get("inputs_npz_path"):
            feeds = load_npz(spec["inputs_npz_path"], session.inputs)  # lazily: only the arrays it uses
            source = "npz"
        else:
            shapes = resolve_shapes(session.inputs, spec.get("input_shapes", {}))
            feeds = random_inputs(session.inputs, shapes)
            source = "random"
        # The first run happens inside prepare (it validates the inputs); time it as first inference.
        t0 = time.monotonic_ns()
        session.prepare(feeds)
        # A native runner (trtexec) times its own first inference; its prepare is file writing.
        first_inference_ns = getattr(session, "first_inference_ns", 0) or time.monotonic_ns() - t0
        self.event(
            type="info",
            runtime=runtime.name,
            runtime_version=runtime.version(),
            providers=list(session.providers),
            load_time_ns=load_time_ns,
            load_rss_delta_bytes=load_rss_delta,
            first_inference_ns=first_inference_ns,
            inputs=[{"name": n, "dtype": str(a.dtype), "shape": list(a.shape)} for n, a in feeds.items()],
            outputs=[
                {"name": o.name, "dtype": o.dtype, "shape": [d if isinstance(d, int) else -1 for d in o.shape]}
                for o in session.outputs
            ],
            threads=int(spec.get("threads", 0)),
            inputs_source=source,
            prepare_detail=getattr(session, "prepare_detail", ""),
        )
        if not self.await_go():
            return  # agent cancelled the job
        if getattr(session, "native", False):  # the runner times its phases itself (agent/runtimes/trtexec.py)
            warmup_count, stable, measured = session.run_phases(self)
        else:
            warmup_count, stable = self.warmup(session)
            measured = self.measure(session)
        op_by_type: list[dict[str, Any]] = []
        op_top: list[dict[str, Any]] = []
        op_notes: dict[str, str] = {}
        if spec.get("op_profile"):
            op_by_type, op_top, op_notes = self.op_profile(runtime, feeds, session)
        self.event(
            type="end",
            measured=measured,
            warmup=warmup_count,
            warmup_stable=stable,
            first_inference_ns=first_inference_ns,
            peak_rss_bytes=peak_rss_bytes(),
            op_by_type=op_by_type,
            op_top_nodes=op_top,
            notes=session.notes() if hasattr(session, "notes") else {},
            **op_notes,
        )
        session.close()

    def load_session(self, runtime: Any) -> tuple[Any, int, int]:
        """The model loaded by `runtime` as the spec says: (session, load time ns, RSS growth in bytes)."""
        spec = self.spec
        rss_before = rss_bytes()
        t0 = time.monotonic_ns()
        session = runtime.load(
            spec["model_path"],
            threads=int(spec.get("threads", 0)),
            providers=spec.get("providers", []),
            options=self.runtime_options(),
            op_profile=False,
        )
        return session, time.monotonic_ns() - t0, rss_bytes() - rss_before

    def runtime_options(self) -> dict[str, str]:
        """The job's runtime options, plus what a runtime that builds for the run's shapes needs (TensorRT)."""
        options = dict(self.spec.get("options", {}))
        options["input_shapes_json"] = json.dumps(self.spec.get("input_shapes", {}))
        options.pop("tensorrt.engine_dir", None)  # where the agent keeps engines is the agent's to say
        if self.spec.get("engine_dir"):
            options["tensorrt.engine_dir"] = str(self.spec["engine_dir"])
        return options

    def await_go(self) -> bool:
        """Wait while the agent settles the board and records idle power (nothing may run meanwhile).

        False when the agent cancelled the job instead. The agent may extend the measure window to enough
        updates of a slow energy counter: "go SECONDS".
        """
        command, _, min_duration_s = self.control.readline().strip().partition(" ")
        if command != "go":
            return False
        if min_duration_s:
            self.spec["min_duration_s"] = max(float(self.spec.get("min_duration_s", 0.0)), float(min_duration_s))
        return True

    def warmup(self, session: Any) -> tuple[int, bool]:
        """At least `warmup` inferences, then until latency is stable or max_warmup_s has passed."""
        self.phase = "warmup"
        minimum = int(self.spec.get("warmup", 10))
        cap_ns = int(float(self.spec.get("max_warmup_s", 30.0)) * 1e9)
        block = block_size(minimum)
        starts: list[int] = []
        ends: list[int] = []
        latencies: list[int] = []
        run = session.run
        clock = time.monotonic_ns
        begin = clock()
        self.event(type="phase", phase="warmup", start_ns=begin)
        stable = minimum == 0
        checked_ns = begin
        while True:
            if len(starts) >= minimum:
                if minimum == 0:
                    break
                # Time blocks (agent/measure/warmup.py), looked at every 10 ms: a fast model's blocks are long.
                if ends[-1] - checked_ns >= 10_000_000:
                    checked_ns = ends[-1]
                    if is_stable_in_time(starts, latencies, block):
                        stable = True
                        break
                if clock() - begin >= cap_ns:
                    break
            t0 = clock()
            run()
            t1 = clock()
            starts.append(t0)
            ends.append(t1)
            latencies.append(t1 - t0)
        for i in range(0, len(starts), MAX_BLOCK):
            frames.write_latency(self.out, WARMUP, starts[i : i + MAX_BLOCK], ends[i : i + MAX_BLOCK])
        end = clock()
        self.event(type="phase", phase="warmup", start_ns=begin, end_ns=end, count=len(starts), stable=stable)
        return len(starts), stable

    def measure(self, session: Any) -> int:
        """At least `runs` inferences AND at least `min_duration_s` seconds (MLPerf-style)."""
        self.phase = "measure"
        runs = int(self.spec.get("runs", 100))
        min_duration_ns = int(float(self.spec.get("min_duration_s", 0.0)) * 1e9)
        run = session.run
        clock = time.monotonic_ns
        out = self.out
        starts: list[int] = []
        ends: list[int] = []
        begin = clock()
        self.event(type="phase", phase="measure", start_ns=begin)
        last_flush = begin
        count = 0
        t1 = begin
        while count < runs or t1 - begin < min_duration_ns:
            t0 = clock()
            run()
            t1 = clock()
            starts.append(t0)
            ends.append(t1)
            count += 1
            if t1 - last_flush >= FLUSH_INTERVAL_NS or len(starts) >= MAX_BLOCK:
                frames.write_latency(out, MEASURE, starts, ends)
                starts, ends = [], []
                last_flush = clock()
                self.done = count
        if starts:
            frames.write_latency(out, MEASURE, starts, ends)
        self.done = count
        self.event(type="phase", phase="measure", start_ns=begin, end_ns=clock(), count=count)
        return count

    def op_profile(
        self, runtime: Any, feeds: dict[str, Any], measured: Any = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
        """A separate profiled session after measuring, so the profiler never slows measured runs.

        Returns (by op type, slowest nodes, end-event fields): `op_profile_note` says why the measured session's
        runtime has no profile, `op_trace_gz_b64` carries the runtime's own trace (gzip, base64) when small enough.
        """
        unavailable = getattr(measured, "op_profile_unavailable", "")
        if unavailable:
            return [], [], {"op_profile_note": f"not available: {unavailable}"}
        self.phase = "op-profile"
        runs = int(self.spec.get("op_profile_runs", 20))
        if getattr(measured, "native", False):  # one more runner invocation with its own layer profiler
            by_type, top = measured.profile_layers(runs)
            return [vars(t) for t in by_type], [vars(t) for t in top], {}
        session = runtime.load(
            self.spec["model_path"],
            threads=int(self.spec.get("threads", 0)),
            providers=self.spec.get("providers", []),
            options=self.runtime_options(),
            op_profile=True,
        )
        session.prepare(feeds)
        for _ in range(runs):
            session.run()
        by_type, top = session.op_profile()
        fields = op_trace_fields(session.op_trace_json)
        session.close()
        return [vars(t) for t in by_type], [vars(t) for t in top], fields


#: Largest compressed trace a job's end carries (a JobEnd is one journal row and one gRPC message).
MAX_OP_TRACE_GZ_BYTES = 8 * 1024 * 1024


def op_trace_fields(trace_json: bytes) -> dict[str, str]:
    """The runtime's trace as end-event fields: gzip + base64 (frames are JSON), or a note when too large."""
    if not trace_json:
        return {}
    import base64
    import gzip

    packed = gzip.compress(trace_json, compresslevel=6)
    if len(packed) > MAX_OP_TRACE_GZ_BYTES:
        size_mb = len(packed) / 1e6
        return {"op_profile_note": f"trace not kept: {size_mb:.1f} MB compressed, over the 8 MB a job's end carries"}
    return {"op_trace_gz_b64": base64.b64encode(packed).decode("ascii")}


#: Modules a warm worker imports before it waits for a job: the runtimes' own (those installed) and
#: edgeprof's input and runtime code. TensorFlow, LiteRT's heaviest fallback, is left out on purpose.
PRELOAD = (
    "numpy",
    "agent.measure.inputs",
    "agent.runtimes.onnx",
    "agent.runtimes.tflite",
    "onnxruntime",
    "ai_edge_litert.interpreter",
    "tflite_runtime.interpreter",
)


def preload() -> list[str]:
    """Import what a job will need; returns the modules that were importable."""
    loaded = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        loaded.append(name)
    return loaded


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--preload" in args:
        preload()
    # Frames go to the real stdout; anything a runtime prints goes to stderr instead of corrupting them.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    line = sys.stdin.readline()
    if not line:
        return 0  # a warm worker whose agent went away (or shut down) before giving it a job
    spec = json.loads(line)
    worker = Worker(spec, out, sys.stdin)
    try:
        worker.run()
    except AgentError as err:
        frames.write_event(
            out, {"type": "error", "kind": err.kind, "message": str(err), "phase": worker.phase, "count": worker.done}
        )
        return 3
    except MemoryError:
        frames.write_event(
            out,
            {
                "type": "error",
                "kind": "crash",
                "message": "the worker ran out of memory",
                "phase": worker.phase,
                "count": worker.done,
            },
        )
        return 3
    except Exception as err:  # anything else: report it rather than dying silently
        traceback.print_exc()
        kind = (
            InvalidInput.kind if isinstance(err, (ValueError, TypeError)) and worker.phase == "prepare" else "internal"
        )
        frames.write_event(
            out,
            {
                "type": "error",
                "kind": kind,
                "message": f"{type(err).__name__}: {err}",
                "phase": worker.phase,
                "count": worker.done,
            },
        )
        return 4
    return 0


if __name__ == "__main__":
    code = main()
    # The result is out (frames are unbuffered); skip the interpreter's teardown, which unloads the
    # runtimes module by module: tens of milliseconds of CPU on a PC, more with GPU providers.
    sys.stderr.flush()
    os._exit(code)
