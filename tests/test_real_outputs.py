"""The bridge's parsers on real output of the tools, collected from public issues and repositories.

Each file in tests/fixtures/real_outputs/ is a verbatim excerpt whose first lines ("#: source: …", "#: about: …")
say where it comes from (tests/fixtures/real_outputs/README.md lists what could not be found). Every file is
either parsed into the figures it shows, or refused with the reason a user would be given.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.adb import battery, benchmark_output, log_lines, op_table, ort_perf
from agent.runtimes.onnx import aggregate_ort_profile

CORPUS = Path(__file__).parent / "fixtures" / "real_outputs"
_SOURCE = re.compile(
    r"^#: source: https://github\.com/[\w.-]+/[\w.-]+/(blob/[0-9a-f]{40}/\S+#L\d+(-L\d+)?|(issues|pull)/\d+ \(.+\))$"
)


def load(name: str) -> str:
    """The tool's output in a corpus file, without its provenance lines."""
    lines = (CORPUS / name).read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("#: "))


def corpus_files() -> list[str]:
    return sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".txt", ".json"))


# -- benchmark_model -----------------------------------------------------------------------------------------

#: file -> figures its output shows (µs, MB; runs is the measured runs' count line).
COMPLETE_RUNS = {
    "bm_tf2.4_cpu_peak_memory.txt": dict(init=16242, first=360262, avg=249684, count=50, warmup=0, peak=138.809),
    "bm_tf2.4_nnapi_gpu_fp16.txt": dict(init=365972, first=120877, avg=92571.2, count=50, warmup=0, peak=61.0547),
    "bm_tf_gpu_delegate_opencl.txt": dict(init=870557, first=130565, avg=119375, count=50, warmup=4, peak=None),
    "bm_logcat_nnapi_partial.txt": dict(init=126059, first=32942, avg=12167.6, count=75, warmup=40, peak=None),
    "bm_tf1_average_timings.txt": dict(init=9933, first=None, avg=66767.6, count=15, warmup=7, peak=None),
    # No summary line at all: the measured runs' own avg= is the mean.
    "bm_tf1_op_table_spaces.txt": dict(init=None, first=None, avg=1592.71, count=626, warmup=302, peak=None),
    "bm_xnnpack_rpi_memory_delta.txt": dict(init=18777, first=64791, avg=55043.2, count=50, warmup=9, peak=18.7227),
    "bm_info_prefix_terminal_junk.txt": dict(init=630, first=3678, avg=3790.92, count=261, warmup=132, peak=None),
}


@pytest.mark.parametrize("name", sorted(COMPLETE_RUNS))
def test_benchmark_model_outputs_give_their_timings_counts_and_memory(name: str) -> None:
    want = COMPLETE_RUNS[name]
    result = benchmark_output.parse(load(name))

    assert result.complete, result.missing()
    assert (result.init_us, result.first_inference_us) == (want["init"], want["first"])
    assert result.inference_avg_us == pytest.approx(want["avg"])
    assert (result.runs["count"], result.warmup_count) == (want["count"], want["warmup"])
    assert result.peak_memory_mb == want["peak"]
    assert result.not_delegated is None


#: file -> (reason it is refused, the line a user is shown, or None where the output is only cut short).
REFUSED_RUNS = {
    "bm_tf2.4_nnapi_qti_default_failure.txt": (
        "no statistics of measured runs",
        "NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 while completing NNAPI compilation.",
    ),
    "bm_tf2.4_nnapi_qti_dsp_failure.txt": (
        "no statistics of measured runs",
        "NN API returned error ANEURALNETWORKS_BAD_DATA at line 1068 while adding operation.",
    ),
    "bm_logcat_gpu_unsupported_ops.txt": (
        "no statistics of measured runs",
        "Following operations are not supported by GPU delegate:",
    ),
    # Cut after the warmup: its count line must not pass for the measured runs'.
    "bm_hexagon_unavailable.txt": (
        "no statistics of measured runs",
        "Could not create Hexagon delegate: platform may not support delegate or required libraries are missing",
    ),
    "bm_qnn_delegate_none_taken.txt": ("no statistics of measured runs", None),
    "bm_android_studio_logcat.txt": ("no statistics of measured runs", None),
    "bm_tf2.4_nnapi_op_profile.txt": ("no statistics of measured runs", None),
    "bm_logcat_op_table_spaces.txt": ("no statistics of measured runs", None),
    "bm_tf1_delegate_op_table_spaces.txt": ("no statistics of measured runs", None),
}


@pytest.mark.parametrize("name", sorted(REFUSED_RUNS))
def test_benchmark_model_outputs_without_measured_runs_are_refused_with_the_reason(name: str) -> None:
    reason, shown = REFUSED_RUNS[name]
    result = benchmark_output.parse(load(name))

    assert not result.complete
    assert result.missing().startswith(reason)
    if shown is not None:
        assert benchmark_output.failure_line(load(name)) == shown


def test_logcat_lines_keep_their_run_statistics_and_error_levels() -> None:
    result = benchmark_output.parse(load("bm_logcat_nnapi_partial.txt"))
    assert result.runs == {
        "count": 75,
        "first": 12840,
        "curr": 11853,
        "min": 11787,
        "max": 13649,
        "avg": 12167.6,
        "std": 325,
    }
    gpu = benchmark_output.parse(load("bm_logcat_gpu_unsupported_ops.txt"))
    assert gpu.errors == [
        "Following operations are not supported by GPU delegate:",
        "UNPACK: Operation is not supported.",
    ]


def test_every_logcat_format_gives_the_tools_own_line() -> None:
    studio = [log_lines.split(line) for line in load("bm_android_studio_logcat.txt").splitlines()]
    assert studio[1] == ("I", "Log parameter values verbosely: [0]")
    assert studio[-1] == ("I", "Loaded model /data/local/tmp/yolov8n-seg_float32.tflite")
    threadtime = load("bm_logcat_nnapi_partial.txt").splitlines()[4]
    assert log_lines.split(threadtime) == (
        "I",
        "count=40 first=32942 curr=12594 min=11340 max=32942 avg=12581.9 std=3331",
    )
    assert log_lines.split("ERROR: Node number 248 (TfLiteNnapiDelegate) failed to prepare.")[0] == "E"


def test_a_delegate_the_tool_dropped_is_named() -> None:
    qnn = benchmark_output.parse(load("bm_qnn_delegate_none_taken.txt"))
    assert qnn.delegated_nodes == (0, 31)
    assert qnn.not_delegated == "TfLiteQnnDelegate delegate: 0 nodes delegated out of 31 nodes with 0 partitions."
    hexagon = benchmark_output.parse(load("bm_hexagon_unavailable.txt"))
    assert hexagon.not_delegated is not None and hexagon.not_delegated.startswith("Could not create Hexagon delegate")
    assert hexagon.warmup_count == 6


def test_nnapi_operator_profile_gives_totals_over_the_profiled_runs() -> None:
    by_type, top = op_table.parse(load("bm_tf2.4_nnapi_op_profile.txt"))
    # 50 profiled runs; the initialization's ModifyGraphWithDelegate/AllocateTensors rows are left out.
    assert [(r.op_type, round(r.total_us), r.calls) for r in by_type] == [
        ("TfLiteNnapiDelegate", 7_474_150, 150),
        ("STRIDED_SLICE", 417_350, 300),
        ("RESIZE_NEAREST_NEIGHBOR", 43_950, 100),
    ]
    assert top[0].node == "[model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, model/tf.nn.silu_35/mul]:231"
    assert top[0].total_us == pytest.approx(79.010 * 1000 * 50)
    assert len(top) == 10


def test_space_aligned_tables_from_logcat_and_terminals_read_like_tab_separated_ones() -> None:
    (modify, allocate) = op_table.tables(load("bm_logcat_op_table_spaces.txt"))["Run Order"]
    assert modify == {
        "node type": "ModifyGraphWithDelegate",
        "first": "54.571",
        "avg ms": "54.571",
        "%": "95.055%",
        "cdf%": "95.055%",
        "mem kb": "1132.000",
        "times called": "1",
        "name": "ModifyGraphWithDelegate/0",
    }
    assert (allocate["node type"], allocate["times called"]) == ("AllocateTensors", "2")
    # The initialization's tables alone give no operator profile.
    assert op_table.parse(load("bm_logcat_op_table_spaces.txt")) == ([], [])

    rows = op_table.tables(load("bm_tf1_op_table_spaces.txt"))["Run Order"]
    assert [(r["node type"], r["start"], r["avg ms"], r["name"]) for r in rows] == [
        ("DEPTHWISE_CONV_2D", "0.000", "0.719", "[Relu6]"),
        ("FULLY_CONNECTED", "0.719", "0.849", "[BiasAdd_1]"),
    ]
    split = op_table.tables(load("bm_tf1_delegate_op_table_spaces.txt"))["Run Order"][1]
    assert split["node type"] == "SPLIT" and split["name"].count(", ") == 3
    assert split["name"].endswith("cudnn_compatible_lstm_cell/split:3]")


# -- onnxruntime_perf_test -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "init_us", "avg_us", "count", "peak_mb"),
    [
        ("ort_summary_acl.txt", 127_918, 144_871, 10, 158_171_136 / 1024**2),
        ("ort_summary_no_spaces.txt", 1_841_490, 734_606, 1, None),
        ("ort_summary_latency_is_sec.txt", None, 58_805.3, 1000, None),
    ],
)
def test_onnxruntime_perf_test_summaries_of_every_vintage_parse(
    name: str, init_us: float | None, avg_us: float, count: int, peak_mb: float | None
) -> None:
    result = ort_perf.parse(load(name))

    assert result.complete and not result.errors
    assert result.init_us == (pytest.approx(init_us) if init_us else None)
    assert result.inference_avg_us == pytest.approx(avg_us)
    assert result.runs["count"] == count
    assert result.peak_memory_mb == (pytest.approx(peak_mb) if peak_mb else None)


def test_old_latency_percentiles_in_seconds_are_read() -> None:
    runs = ort_perf.parse(load("ort_summary_latency_is_sec.txt")).runs
    assert runs["median"] == pytest.approx(58_710.8) and runs["p99"] == pytest.approx(61_951.7)
    assert runs["min"] == pytest.approx(55_977.7) and runs["p999"] == pytest.approx(62_347.2)


def test_onnxruntime_profile_gives_the_run_window_and_kernel_times() -> None:
    events = ort_perf.load_profile(load("ort_profile_dml.json"))

    assert len(events) == 9
    assert ort_perf.run_events(events, 1) == [(1_253_564.0, 31_038.0)]
    by_type, top = aggregate_ort_profile(events)
    # The DirectML kernels carry no op_name: one row of unknown type, every kernel's time in it.
    assert [(t.op_type, t.total_us, t.calls) for t in by_type] == [("?", 10_329.0, 7)]
    assert (top[0].node, top[0].total_us) == ("DmlFusedNode_2_45", 8_298.0)


# -- battery state and fuel gauges ---------------------------------------------------------------------------

#: file -> (status, external supplies, current_now, voltage_now, the word energy is refused with or None).
POWER_STATES = {
    "dumpsys_battery_samsung_usb_full.txt": ("Full", ("usb",), 0.0, 4312.0, "plugged-in"),
    "dumpsys_battery_ac_charging.txt": ("Charging", ("ac",), None, 3764.0, "charging"),
    "dumpsys_battery_discharging_acc.txt": ("Discharging", (), None, 3985.0, None),
    # A charge limit holds the battery on USB power: the gauge's 976 µA is not what the phone draws.
    "uevent_pixel3a_not_charging.txt": ("Not charging", (), 976.0, 3_815_175.0, "plugged-in"),
    # Negative while charging, the opposite of the kernel ABI: never a sign to detect from.
    "uevent_xperia_battery_charging.txt": ("Charging", (), -257_109.0, 4_170_660.0, "charging"),
    "uevent_xperia_usb_online.txt": (None, ("usb",), None, None, "plugged-in"),
}


@pytest.mark.parametrize("name", sorted(POWER_STATES))
def test_battery_state_from_dumpsys_and_uevent_decides_whether_energy_is_measured(name: str) -> None:
    status, powered, current, voltage, word = POWER_STATES[name]
    state = battery.parse_power_state(load(name))

    assert (state.status, state.powered_by, state.current_now, state.voltage_now) == (status, powered, current, voltage)
    assert state.refusal_word() == word
    assert (state.refusal() is None) == (word is None)


# -- the corpus itself ---------------------------------------------------------------------------------------


def test_every_corpus_file_names_its_source_and_is_checked_here() -> None:
    checked = (
        set(COMPLETE_RUNS)
        | set(REFUSED_RUNS)
        | set(POWER_STATES)
        | {"ort_summary_acl.txt", "ort_summary_no_spaces.txt", "ort_summary_latency_is_sec.txt", "ort_profile_dml.json"}
    )
    files = corpus_files()
    assert set(files) == checked
    for name in files:
        first, second = (CORPUS / name).read_text().splitlines()[:2]
        assert _SOURCE.match(first), f"{name}: {first}"
        assert second.startswith("#: about: ") and len(second) > 20, name
