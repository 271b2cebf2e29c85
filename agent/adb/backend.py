"""The phone's job backend: one job part measured with benchmark_model on the phone instead of a local worker.

The job runner (agent/jobs/) hands each part to `PhoneBackend.run_part`. The protocol is DESIGN.md §2's:
prepare (model pushed content-addressed, one checked run that loads it with the delegate), settle (thermal
zones), idle baseline, warmup, measure. benchmark_model prints aggregates only, so the measure phase runs
as blocks, one runner invocation each: a block's mean is the sample, laid out as its runs' windows
back to back at the end of the invocation so that counts, throughput and energy per inference hold, and
the result says `latency_source: block_means`. Every phone-side time comes from /proc/uptime and is mapped
onto this computer's CLOCK_MONOTONIC with one offset per part.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shlex
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.adb import battery, benchmark_output, op_table, ort_perf, runners, screen, thermal
from agent.adb.describe import PhoneInfo, taskset_mask
from agent.adb.phone import PHONE_DIR, Phone, ShellStream
from agent.device.sampler import SeriesChunk
from agent.errors import AgentError, InvalidInput, InvalidModel
from agent.jobs import settle
from agent.runtimes.onnx import aggregate_ort_profile
from agent.sensors.base import POWER_MW, TEMP_C
from agent.storage.batches import job_end
from protos import agent_pb2 as pb

if TYPE_CHECKING:
    from agent.jobs.execution import JobExecution

log = logging.getLogger(__name__)

SENSOR = "android-adb"
#: Blocks the measure phase is split into by default (each a sample of the latency distribution).
DEFAULT_BLOCKS = 10
#: The fewest blocks measured whatever --runs and --min-duration ask: the block means are the latency samples,
#: and five or fewer give the median no 95% interval (a runner that starts slowly fills the duration with gaps).
MIN_BLOCKS = 6
#: Fastest battery loop period: gauges refresh at 1-10 Hz (AndroidBatterySensor.max_rate_hz), reading faster
#: only repeats values and costs the phone a `sleep` fork per sample.
MIN_GAUGE_PERIOD_S = 0.1
_UPTIME = re.compile(r"^(\d+\.\d+) \d+\.\d+$")
#: Model formats and the runner that runs each.
RUNNER_FOR = {
    "tflite": runners.BENCHMARK_MODEL,
    "onnx": runners.ORT_PERF_TEST,
    "ort": runners.ORT_PERF_TEST,
    "gguf": runners.LLAMA_BENCH,
}
_PROFILE_MARK = "@profile"


class RunnerFailed(AgentError):
    """The runner (benchmark_model, onnxruntime_perf_test) exited with an error or was killed by a signal."""

    kind = "crash"


class PhoneBackend:
    """Runs job parts on the phone `phone`; one backend (and one agent endpoint) per phone."""

    def __init__(
        self,
        phone: Phone,
        info: PhoneInfo,
        delegate: str = "",
        gauge_options: Any = None,
        thermal_zones: Sequence[str] = (),
        max_temp_c: float | None = None,
    ) -> None:
        self.phone = phone
        self.info = info
        self.delegate = delegate
        self.gauge_options = dict(gauge_options or {})
        #: Zone types the loop samples (all temperature zones when empty) and the profile's throttling limit.
        self.thermal_zones = tuple(thermal_zones)
        self.max_temp_c = max_temp_c

    def run_part(self, execution: JobExecution, deadline: float) -> pb.JobEnd:
        execution.emitter.phase("prepare", time.monotonic_ns())
        execution._flush()
        run = _PhoneRun(self, execution, deadline)
        try:
            return run.execute()
        except _Cancelled:
            where = f"during {run.phase} after {run.measured} measured inferences"
            if execution.job.cancelled.is_set():
                return job_end(pb.JobEnd.CANCELLED, error=f"cancelled {where}", phase=run.phase, measured=run.measured)
            timeout_s = execution.req.timeout_s or execution.settings.default_timeout_s
            return job_end(
                pb.JobEnd.ERROR,
                error=f"job timed out after {timeout_s:g} s {where}",
                kind="timeout",
                phase=run.phase,
                measured=run.measured,
            )
        except AgentError as err:
            return job_end(
                pb.JobEnd.ERROR, error=str(err), kind=err.kind, phase=run.phase, measured=run.measured, notes=run.notes
            )
        finally:
            run.close()


class _PhoneRun:
    def __init__(self, backend: PhoneBackend, execution: JobExecution, deadline: float) -> None:
        self.backend = backend
        self.phone = backend.phone
        self.ex = execution
        self.req = execution.req
        self.deadline = deadline
        self.phase = "prepare"
        self.measured = 0
        self.notes: dict[str, str] = {"latency_source": "block_means"}
        self.offset_ns = 0
        self.gauge: list[battery.GaugeSample] = []
        self.zones: list[thermal.PhoneZone] = []
        #: The temperature the phone throttles at (its zones' lowest trip, else the profile's max_temp_c).
        self.trip_c: float | None = None
        self.op_rows: tuple[list[op_table.OpRow], list[op_table.OpRow]] = ([], [])
        self._output = ""
        self._loop: ShellStream | None = None
        self.with_power = False
        self._loop_thread: threading.Thread | None = None
        self._active: ShellStream | None = None
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    # -- the steps -----------------------------------------------------------------------------------

    def execute(self) -> pb.JobEnd:
        ex, req = self.ex, self.req
        self.phone.check()
        model = self._push_model()
        self.runner_name = RUNNER_FOR[ex.part.model_format]
        runner = runners.require(self.phone, self.runner_name)
        if self.runner_name == runners.LLAMA_BENCH:  # a GGUF model: generations, not inferences
            from agent.adb.llama_phone import measure_generations

            return measure_generations(self, model, runner)
        available = runners.installed(self.phone)
        delegate = (list(req.execution_providers) or [req.options.get("delegate", "") or self.backend.delegate])[0]
        if not delegate.startswith("external:"):
            delegate = delegate.lower().removesuffix("executionprovider")  # ONNX Runtime's names: CPU, Nnapi, QNN
        cores = self.backend.info.big_cores if req.options.get("adb.all_cores", "") != "1" else []
        mask = taskset_mask(cores)
        threads = req.threads or len(cores) or 4
        pinned = f"taskset {mask} " if mask else ""
        self.profile_events: list[dict[str, Any]] = []
        if self.runner_name == runners.ORT_PERF_TEST:
            flags = ort_perf.provider_flags(delegate)
            self.cmd = f"{pinned}{runner.path} -m times -x {threads} -I -s {' '.join(shlex.quote(f) for f in flags)}"
            self.model = model
            self.notes["latency_source"] = "per_inference"
        else:
            flags = runners.delegate_flags(delegate, available)
            self.cmd = (
                f"{pinned}{runner.path} --graph={model} --num_threads={threads}"
                f" --min_secs=0 --warmup_min_secs=0 --report_peak_memory_footprint=true {' '.join(flags)}"
            )
        self.notes.update(runner=f"{runner.name} {runner.version}", delegate=delegate or "cpu", cpu_mask=mask or "all")
        self._sync_clock()
        refused = self.energy_refusal()

        # prepare: one run loads the model with the delegate; a delegate that rejects it fails here.
        load = self._invoke(warmup_runs=0, num_runs=1, what="loading the model")
        prepared_ns = time.monotonic_ns()
        self.first_inference_ns = int((load.first_inference_us or 0) * 1000)
        self.peak_mb = load.peak_memory_mb or 0.0
        ex.emitter.info(
            pb.JobInfo(
                runtime=ort_perf.RUNTIME if self.runner_name == runners.ORT_PERF_TEST else "tflite-benchmark_model",
                runtime_version=runner.version,
                execution_providers=[delegate or "cpu"],
                load_time_ns=int((load.init_us or 0) * 1000),
                threads=threads,
                profile=ex.settings.profile,
                sample_rate_hz=1.0 / self._gauge_period_s(),
                inputs_source="random",
                device=ex.settings.describe(),
            )
        )
        ex.emitter.phase(
            "prepare", prepared_ns, prepared_ns, detail=f"{runner.name} {runner.version} on {self.phone.serial}"
        )
        ex._flush()
        self._start_gauge(with_power=refused is None)
        self._settle()
        with screen.dark(self.phone) as changed:
            self.notes["screen"] = changed
            self._idle()
            warm, mean_us = self._warmup()
            blocks, runs_per_block = self._measure(mean_us)
            if req.op_profile and self.runner_name == runners.BENCHMARK_MODEL:
                self._op_profile(runs_per_block)
        self._finish_gauge()
        period = battery.update_period_s(self.gauge)
        if period is not None:
            self.notes["gauge_update_period_s"] = f"{period:.3f}"
        self.notes["block_runs"] = str(runs_per_block)
        self.notes["blocks"] = str(blocks)
        ops: dict[str, Any] = {}
        if req.op_profile and self.profile_events:
            by_type, top = aggregate_ort_profile(self.profile_events)
            ops = {"op_by_type": [vars(t) for t in by_type], "op_top_nodes": [vars(t) for t in top]}
        elif req.op_profile and self.op_rows[0]:
            ops = {"op_by_type": [vars(r) for r in self.op_rows[0]], "op_top_nodes": [vars(r) for r in self.op_rows[1]]}
        return job_end(
            pb.JobEnd.OK,
            measured=self.measured,
            warmup=warm,
            first_inference_ns=self.first_inference_ns,
            peak_rss_bytes=int(self.peak_mb * 1024**2),
            notes=self.notes,
            **ops,
        )

    def check_cancelled(self) -> None:
        """Raise _Cancelled once the job is cancelled or past its deadline (after a runner invocation)."""
        if self.ex.job.cancelled.is_set() or time.monotonic() >= self.deadline:
            raise _Cancelled()

    def energy_refusal(self) -> str | None:
        """Why the battery cannot measure this run's energy (charging, on USB power), noted; None when it can.

        Latency from a phone on a cable is a valid latency: the host shows the one word and warns with the line.
        """
        power = battery.power_state(self.phone.shell(battery.POWER_COMMAND, doing="while reading the battery"))
        refused = power.refusal()
        if refused:
            self.notes["energy_refused"] = refused
            self.notes["energy_refused_short"] = power.refusal_word() or "refused"
        return refused

    def _push_model(self) -> str:
        part = self.ex.part
        if part.model_format not in RUNNER_FOR:
            raise InvalidInput(
                f"phone {self.phone.serial} runs .tflite models (benchmark_model), .onnx/.ort models "
                f"(onnxruntime_perf_test) and .gguf models (llama-bench); this job's model is {part.model_format}"
            )
        local = self.ex.runner.cache.use(part.model_sha256)
        remote = f"{PHONE_DIR}/models/{part.model_sha256}.{part.model_format}"
        if self.phone.size(remote) != local.stat().st_size:
            self.phone.push(local, remote)
        return remote

    def _sync_clock(self) -> None:
        """Offset from the phone's /proc/uptime to this computer's monotonic clock (midpoint of one round trip)."""
        before = time.monotonic_ns()
        out = self.phone.shell("cat /proc/uptime", doing="while reading its clock")
        after = time.monotonic_ns()
        self.offset_ns = (before + after) // 2 - round(float(out.split()[0]) * 1e9)

    def _gauge_period_s(self) -> float:
        rate_hz = self.req.sample_rate_hz or self.ex.settings.sample_rate_hz
        return max(MIN_GAUGE_PERIOD_S, 1.0 / rate_hz if rate_hz > 0 else 0.1)

    def _start_gauge(self, with_power: bool) -> None:
        """Start the loop that samples the gauge and the thermal zones (found by one shell call first)."""
        self.with_power = with_power
        found = self.phone.shell(
            f"[ -r {battery.BATTERY}/power_now ] && echo power_now; {thermal.LIST_COMMAND}",
            doing="while listing its sensors",
        )
        self.zones = thermal.parse_zones(found, self.backend.thermal_zones)
        self.trip_c = thermal.trip_temp_c(self.zones, self.backend.max_temp_c)
        if self.trip_c is not None:
            self.notes["trip_temp_c"] = f"{self.trip_c:.1f}"
        self.notes["thermal_zones"] = ",".join(z.name for z in self.zones) or "none"
        command = battery.loop_command(
            self._gauge_period_s(), "power_now" in found.split(), [z.temp_path for z in self.zones]
        )
        self._loop = self.phone.stream(command)
        self._loop_thread = threading.Thread(target=self._read_gauge, args=(self._loop,), daemon=True)
        self._loop_thread.start()
        if not self._wait_for(lambda: len(self.gauge) >= 2, 30.0):
            raise self.phone.unavailable("while starting the battery loop")

    def _read_gauge(self, loop: ShellStream) -> None:
        for line in loop.lines():
            sample = battery.parse_line(line)
            if sample is not None:
                self.gauge.append(sample)

    def _settle(self) -> None:
        """The common settle rule (agent/jobs/settle.py) on the loop's zone readings: phones idle warm."""
        limit_c = self.ex.settings.settle_temp_c
        timeout_s = self.req.settle_timeout_s or self.ex.settings.settle_timeout_s
        if limit_c is None or timeout_s <= 0:
            return
        self.phase = "settle"
        start = time.monotonic_ns()
        plan = settle.SettlePlan(limit_c, timeout_s, hot_limit_c=self.trip_c)
        end_by = min(self.deadline, time.monotonic() + timeout_s)
        outcome = settle.wait(plan, self._max_temp_c, self.ex.job.cancelled, end_by)
        if outcome is None:
            raise _Cancelled()
        self.notes["settle"] = outcome.rule
        self.ex.emitter.phase("settle", start, time.monotonic_ns(), detail=outcome.detail)

    def _max_temp_c(self) -> float | None:
        """The hottest sampled zone in the loop's latest sample (None without zones)."""
        latest = self.gauge[-1].zones_c if self.gauge else ()
        temps = [t for t in latest if math.isfinite(t)]
        return max(temps) if temps else None

    def _idle(self) -> None:
        if self.req.idle_s <= 0:
            return
        start = time.monotonic_ns()
        if not self.with_power:  # a baseline is only worth its seconds when there is power to measure
            self.ex.emitter.phase("idle", start, start, detail="skipped: energy refused")
            return
        self.phase = "idle"
        if self.ex.job.cancelled.wait(min(self.req.idle_s, max(0.0, self.deadline - time.monotonic()))):
            raise _Cancelled()
        self.ex.emitter.phase("idle", start, time.monotonic_ns(), detail="screen off")

    def _warmup(self) -> tuple[int, float]:
        """One invocation of the warmup runs; returns their count and mean latency (µs)."""
        self.phase = "warmup"
        count = max(1, self.req.warmup)
        result, start_ns, end_ns = self._block(warmup_runs=0, num_runs=count, what="warmup")
        starts, ends = self._windows(result, start_ns, end_ns)
        self.ex.emitter.latency(pb.WARMUP, starts, ends)
        self.ex.emitter.phase("warmup", start_ns, end_ns, count=len(starts), detail="one runner invocation")
        self.ex._flush()
        return len(starts), result.inference_avg_us or 0.0

    def _measure(self, mean_us: float) -> tuple[int, int]:
        """Blocks until --runs, --min-duration and MIN_BLOCKS blocks are all met, sized so that about DEFAULT_BLOCKS
        blocks do it.

        Each block is a runner invocation; its start-up (process start, model load) lies between the blocks'
        windows, and the host integrates energy over each block's own windows only (host/analysis/energy_blocks.py),
        so no start-up is charged to the inferences. Its share of the wall time is reported as block_gap_fraction.
        The duration is counted as the host's rule counts it, from the first measured run's start to the last
        one's end, not from before the first invocation started up: blocks go on until that span covers it.
        """
        self.phase = "measure"
        runs = self.req.runs or 100
        option = self.req.options.get("adb.block_runs", "")
        by_time = math.ceil(self.req.min_duration_s * 1e6 / DEFAULT_BLOCKS / mean_us) if mean_us > 0 else 1
        by_count = math.ceil(runs / DEFAULT_BLOCKS)
        per_block = int(option) if option.isdigit() and int(option) > 0 else max(1, by_count, by_time)
        blocks = 0
        first_ns = last_ns = busy_ns = 0
        while self.measured < runs or (last_ns - first_ns) / 1e9 < self.req.min_duration_s or blocks < MIN_BLOCKS:
            what = f"measure block {blocks + 1}"
            result, start_ns, end_ns = self._block(warmup_runs=1, num_runs=per_block, what=what)
            starts, ends = self._windows(result, start_ns, end_ns)
            self.ex.emitter.latency(pb.MEASURE, starts, ends)
            self.peak_mb = max(self.peak_mb, result.peak_memory_mb or 0.0)
            first_ns = first_ns or int(starts[0])
            last_ns = int(ends[-1])
            busy_ns += int(ends[-1] - starts[0])
            self.measured += len(starts)
            blocks += 1
            self.ex._flush()
        if last_ns > first_ns:
            self.notes["block_gap_fraction"] = f"{1 - busy_ns / (last_ns - first_ns):.3f}"
        detail = f"{blocks} blocks of {per_block} runs (block means)"
        self.ex.emitter.phase("measure", first_ns, last_ns, count=self.measured, detail=detail)
        return blocks, per_block

    def _op_profile(self, runs: int) -> None:
        """One more invocation with benchmark_model's operator profiler, after measuring (never slowing them)."""
        self.phase = "op-profile"
        self._invoke(
            warmup_runs=1, num_runs=max(1, min(runs, 20)), what="operator profile", extra=" --enable_op_profiling=true"
        )
        self.op_rows = op_table.parse(self._output)
        if not self.op_rows[0]:
            self.notes["op_profile"] = "benchmark_model printed no operator table (a build without profiling support?)"

    # -- runner invocations --------------------------------------------------------------------------

    def _block(self, warmup_runs: int, num_runs: int, what: str) -> tuple[benchmark_output.BenchmarkResult, int, int]:
        """One invocation; returns its parsed output and its start and end on this computer's clock."""
        result = self._invoke(warmup_runs, num_runs, what)
        return result, self._to_local(self._times[0]), self._to_local(self._times[1])

    def _to_local(self, uptime_ns: int) -> int:
        return uptime_ns + self.offset_ns

    def _windows(
        self, result: benchmark_output.BenchmarkResult, start_ns: int, end_ns: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The block's runs as windows ending where the invocation ended: each inference's own start and duration
        where the runner's profile gave them, else back-to-back windows of the block's mean latency."""
        count = int(result.runs.get("count", 0))
        if result.run_windows_us:
            rel = np.array(result.run_windows_us, dtype=np.float64)
            last_end_us = float((rel[:, 0] + rel[:, 1]).max())
            starts = end_ns - np.round((last_end_us - rel[:, 0]) * 1000).astype(np.int64)
            return starts, starts + np.round(rel[:, 1] * 1000).astype(np.int64)
        mean_ns = round((result.inference_avg_us or 0.0) * 1000)
        first = max(start_ns, end_ns - count * mean_ns)
        starts = first + mean_ns * np.arange(count, dtype=np.int64)
        return starts, starts + mean_ns

    def _invoke(self, warmup_runs: int, num_runs: int, what: str, extra: str = "") -> benchmark_output.BenchmarkResult:
        ort = self.runner_name == runners.ORT_PERF_TEST
        profiled = ort and self.phase == "measure"
        prefix = f"{PHONE_DIR}/profiles/{self.req.job_id[:32]}"
        if ort:
            # The tool always runs one untimed warm-up inference itself; -p adds each inference's own events.
            run = f"{self.cmd} -r {num_runs}{f' -p {prefix}' if profiled else ''} {self.model}"
        else:
            run = f"{self.cmd} --warmup_runs={warmup_runs} --num_runs={num_runs}{extra}"
        command = f'cat /proc/uptime; {run} 2>&1; echo "@rc $?"; cat /proc/uptime'
        if profiled:
            command = (
                f"mkdir -p {PHONE_DIR}/profiles; rm -f {prefix}_*.json; {command}; echo {_PROFILE_MARK};"
                f" cat {prefix}_*.json 2>/dev/null; rm -f {prefix}_*.json"
            )
        stream = self.phone.stream(command)
        self._active = stream
        lines: list[str] = []
        try:
            lines = list(stream.lines())
        finally:
            self._active = None
            stream.close()
        if self.ex.job.cancelled.is_set() or time.monotonic() >= self.deadline:
            raise _Cancelled()
        profile_text = ""
        if _PROFILE_MARK in lines:
            at = lines.index(_PROFILE_MARK)
            lines, profile_text = lines[:at], "\n".join(lines[at + 1 :])
        uptimes = [round(float(m.group(1)) * 1e9) for ln in lines if (m := _UPTIME.match(ln.strip()))]
        rc_line = next((ln for ln in lines if ln.startswith("@rc ")), None)
        output = "\n".join(ln for ln in lines if not ln.startswith("@rc ") and not _UPTIME.match(ln.strip()))
        if rc_line is None or len(uptimes) < 2 or (profiled and rc_line == "@rc 0" and not profile_text):
            raise self.phone.unavailable(f"during {self.phase} ({what})")
        rc = int(rc_line.split()[1])
        self._times = (uptimes[0], uptimes[-1])
        self._output = output
        result = ort_perf.parse(output) if ort else benchmark_output.parse(output)
        if rc == 0 and result.complete and profiled:
            events = ort_perf.load_profile(profile_text)
            result.run_windows_us = ort_perf.run_events(events, int(result.runs["count"]))
            if len(result.run_windows_us) != int(result.runs["count"]):
                raise RunnerFailed(
                    f"onnxruntime_perf_test's profile holds {len(result.run_windows_us)} of its"
                    f" {int(result.runs['count'])} inferences during {self.phase} ({what})"
                )
            self.profile_events.extend(e for e in events if e.get("cat") == "Node")
        delegate = self.notes.get("delegate", "cpu")
        if rc == 0 and result.complete and self.phase == "prepare" and not ort:
            self._check_delegation(result, delegate)
        if rc == 0 and result.complete:
            return result
        line = ort_perf.failure_line(output) if ort else benchmark_output.failure_line(output)
        said = " ".join(result.errors).lower()
        if self.phase == "prepare" and delegate != "cpu" and ("delegate" in said or (ort and delegate in said)):
            rejecting = "execution provider" if ort else "delegate"
            raise InvalidModel(f"the {delegate} {rejecting} rejected the model on phone {self.phone.serial}: {line}")
        if rc > 128:
            try:
                name = signal.Signals(rc - 128).name
            except ValueError:
                name = f"signal {rc - 128}"
            raise RunnerFailed(f"{self.runner_name} crashed ({name}) during {self.phase} ({what}): {line}")
        if rc == 0:  # exited normally with its statistics missing (a build that prints less, a cut stream)
            raise RunnerFailed(f"{self.runner_name} printed {result.missing()} during {self.phase} ({what}): {line}")
        raise RunnerFailed(f"{self.runner_name} failed (exit {rc}) during {self.phase} ({what}): {line}")

    def _check_delegation(self, result: benchmark_output.BenchmarkResult, delegate: str) -> None:
        """Note how much of the graph the delegate took; refuse a run the tool quietly moved to the CPU.

        benchmark_model goes on without a delegate it could not create (no Hexagon libraries, a QNN backend that
        takes no node): its timings are then the CPU's, not the accelerator's that was asked for.
        """
        if result.delegated_nodes is not None:
            taken, total = result.delegated_nodes
            self.notes["delegated_nodes"] = f"{taken} of {total}"
        if delegate not in ("cpu", "xnnpack") and result.not_delegated:
            raise InvalidModel(
                f"the {delegate} delegate was not used on phone {self.phone.serial}, benchmark_model would measure"
                f" the CPU instead: {result.not_delegated[:200]}"
            )

    # -- background ----------------------------------------------------------------------------------

    def _watch(self) -> None:
        """End the running invocation on cancel or timeout (closing its stream makes adbd hang it up)."""
        while not self._stop.wait(0.2):
            if self.ex.job.cancelled.is_set() or time.monotonic() >= self.deadline:
                active = self._active
                if active is not None:
                    active.close()

    def _wait_for(self, done: Any, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= end or self.ex.job.cancelled.is_set():
                return False
            time.sleep(0.05)
        return True

    def _finish_gauge(self) -> None:
        """Stop the battery loop and stream what it sampled (also after a failure: the samples are real)."""
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        loop.close()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=5)
        if self.gauge:
            self._emit_gauge()

    def close(self) -> None:
        self._stop.set()
        self._finish_gauge()
        with contextlib.suppress(Exception):
            self.ex._flush()

    def _emit_gauge(self) -> None:
        samples = list(self.gauge)
        t_ns = np.array([self._to_local(s.uptime_ns) for s in samples], dtype=np.int64)
        chunks = []
        temps = [(t, s.temp_c) for t, s in zip(t_ns, samples, strict=True) if s.temp_c is not None]
        if temps:
            chunks.append(
                SeriesChunk(
                    "battery-temp", TEMP_C, "", SENSOR, np.array([t for t, _ in temps]), np.array([v for _, v in temps])
                )
            )
        for i, zone in enumerate(self.zones):
            # A zone that did not read in a sample (NaN) is left out of that sample, not sent as a number.
            rows = [(t, s.zones_c[i]) for t, s in zip(t_ns, samples, strict=True) if len(s.zones_c) > i]
            rows = [(t, v) for t, v in rows if math.isfinite(v)]
            if rows:
                chunks.append(
                    SeriesChunk(
                        zone.name, TEMP_C, "", SENSOR, np.array([t for t, _ in rows]), np.array([v for _, v in rows])
                    )
                )
        if self.with_power:
            scale = battery.detect_scale(samples, self.backend.gauge_options)
            self.notes["gauge"] = scale.describe()
            power = np.array([scale.power_mw(s) for s in samples], dtype=np.float64)
            chunks.append(SeriesChunk("battery", POWER_MW, "total", SENSOR, t_ns, power))
        self.ex.emitter.series(chunks)


class _Cancelled(AgentError):
    """The job was cancelled or timed out while the phone ran it (the job runner reports which)."""

    kind = "cancelled"
