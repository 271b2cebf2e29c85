"""The bridge's readers of phone output: benchmark_model's log, the fuel gauge's units and sign, CPU clusters."""

from __future__ import annotations

import pytest

from agent.adb import battery, benchmark_output, log_lines, op_table, runners
from agent.adb.describe import PhoneInfo, taskset_mask
from agent.errors import InvalidInput, RuntimeMissing

# Shaped like a LiteRT benchmark_model log (prefixes, scientific notation for large means, newer p5/median/p95).
LOG = """INFO: STARTING!
INFO: Graph: [/data/local/tmp/edgeprof/models/abc.tflite]
INFO: Loaded model /data/local/tmp/edgeprof/models/abc.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Replacing 66 out of 66 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions.
INFO: Initialized session in 21.5ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=33 first=41210 curr=14702 min=14377 max=41210 avg=15531.2 std=4566 p5=14390 median=14600 p95=19833

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=68 first=14710 curr=14645 min=14302 max=16016 avg=1.46853e+04 std=301 p5=14330 median=14630 p95=15380

INFO: Inference timings in us: Init: 21500, First inference: 41210, Warmup (avg): 15531.2, Inference (avg): 1.46853e+04
INFO: Memory footprint delta from the start of the tool (MB): init=5.125 overall=18.5
INFO: Overall peak memory footprint (MB) via periodic monitoring: 29.75
"""


def test_benchmark_log_gives_timings_counts_memory_and_delegation() -> None:
    result = benchmark_output.parse(LOG)
    assert result.complete
    assert (result.init_us, result.first_inference_us) == (21500, 41210)
    assert result.inference_avg_us == pytest.approx(14685.3)
    assert result.runs["count"] == 68 and result.runs["median"] == 14630
    assert result.warmup_count == 33
    assert result.peak_memory_mb == 29.75  # the periodic monitor's peak wins over the delta line
    assert result.delegated_nodes == (66, 66)


def test_failed_run_is_incomplete_and_names_the_delegate_error() -> None:
    log = "INFO: Loaded model m.tflite\nERROR: Failed to apply GPU delegate.\nERROR: Benchmarking failed.\n"
    assert not benchmark_output.parse(log).complete
    assert benchmark_output.failure_line(log) == "Failed to apply GPU delegate."


def _samples(current: float, voltage: float, n: int = 5) -> list[battery.GaugeSample]:
    return [battery.GaugeSample(i * 100_000_000, current, voltage, 30.0) for i in range(n)]


@pytest.mark.parametrize(
    ("current", "voltage", "expected"),
    [
        (-412_000, 3_870_000, "current_now in uA, voltage_now in uV, negative while discharging"),
        (412_000, 3_870_000, "current_now in uA, voltage_now in uV, positive while discharging"),
        (412, 3870, "current_now in mA, voltage_now in mV, positive while discharging"),
        (-412, 3870, "current_now in mA, voltage_now in mV, negative while discharging"),
        (-412_000, 3870, "current_now in uA, voltage_now in mV, negative while discharging"),
    ],
)
def test_gauge_units_and_sign_are_detected_and_give_the_same_power(
    current: float, voltage: float, expected: str
) -> None:
    samples = _samples(current, voltage)
    scale = battery.detect_scale(samples, {"sign": "auto", "current_unit": "auto", "voltage_unit": "auto"})
    assert scale.describe() == expected
    assert scale.power_mw(samples[0]) == pytest.approx(412 * 3.870)


def test_profile_pins_override_detection() -> None:
    scale = battery.detect_scale(_samples(5_000, 3_870_000), {"sign": "discharge_negative", "current_unit": "mA"})
    assert (scale.current_unit, scale.voltage_unit, scale.sign) == ("mA", "uV", -1.0)


def test_gauge_update_period_is_the_time_between_changes() -> None:
    # Sampled every 50 ms, the reading changes every 250 ms.
    samples = [battery.GaugeSample(i * 50_000_000, 100 + i // 5, 3800, None) for i in range(40)]
    assert battery.update_period_s(samples) == pytest.approx(0.25)
    assert battery.update_period_s(_samples(1, 1)) is None  # never changes: unknown, not zero


def test_loop_line_parses_phone_uptime_to_ns() -> None:
    sample = battery.parse_line("@ 1639.12 -300000 3900000 301")
    assert sample == battery.GaugeSample(1_639_120_000_000, -300000.0, 3900000.0, 30.1)
    assert battery.parse_line("sleep: bad number") is None


def test_charging_or_usb_power_is_refused_and_battery_is_not() -> None:
    assert battery.refusal("Discharging", []) is None
    line = battery.refusal("Not charging", ["usb"])
    assert line is not None and "(battery Not charging, usb online)" in line


def test_big_cores_include_a_lone_prime_core_and_mask_is_hex() -> None:
    info = PhoneInfo("s", {}, {0: 1800, 1: 1800, 2: 1800, 3: 1800, 4: 2800, 5: 2800, 6: 2800, 7: 3200}, 0)
    assert info.big_cores == [4, 5, 6, 7]
    assert taskset_mask(info.big_cores) == "f0"
    two_clusters = PhoneInfo("s", {}, {0: 1800, 1: 1800, 2: 2400, 3: 2400}, 0)
    assert two_clusters.big_cores == [2, 3]


def test_profile_is_picked_from_the_soc() -> None:
    assert PhoneInfo("s", {"ro.soc.manufacturer": "Mediatek"}, {}, 0).profile_name() == "android-mediatek"
    assert PhoneInfo("s", {"ro.board.platform": "gs201"}, {}, 0).profile_name() == "android-tensor"
    assert PhoneInfo("s", {"ro.board.platform": "exynos2100"}, {}, 0).profile_name() == "android-generic"


def test_delegate_flags() -> None:
    assert runners.delegate_flags("gpu", {}) == ["--use_gpu=true"]
    assert runners.delegate_flags("external:/vendor/lib64/libx.so", {}) == [
        "--external_delegate_path=/vendor/lib64/libx.so"
    ]
    with pytest.raises(RuntimeMissing, match=r"libQnnTFLiteDelegate\.so"):
        runners.delegate_flags("qnn", {})
    with pytest.raises(InvalidInput, match="unknown delegate 'tpu'"):
        runners.delegate_flags("tpu", {})


# Hand-written in the layout benchmark_model --enable_op_profiling=true prints (TensorFlow's stats calculator,
# as LiteRT's benchmark README shows it); not captured from a phone: the emulated runner has no per-operator
# timings to print (LiteRT's Python API exposes none), so the bridge's parser is pinned on this sample.
OP_LOG = (
    "INFO: Inference timings in us: Init: 16772, First inference: 8781, Warmup (avg): 7514, Inference (avg): 7454\n"
    "INFO: Profiling Info for Benchmark Initialization:\n"
    "============================== Run Order ==============================\n"
    "\t                 [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "\tModifyGraphWithDelegate\t 14.842\t 14.842\t 99.317%\t 99.317%\t 3428.000\t 1\tModifyGraphWithDelegate/0\n"
    "\n"
    "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    "============================== Run Order ==============================\n"
    "\t                 [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "\t                     CONV_2D\t    4.269\t    4.100\t 54.667%\t 54.667%\t     0.000\t        1\t[conv1/Relu6]:0\n"
    "\t           DEPTHWISE_CONV_2D\t    2.150\t    2.000\t 26.667%\t 81.333%\t     0.000\t        1\t[dw1/Relu6]:1\n"
    "\t                     CONV_2D\t    1.366\t    1.400\t 18.667%\t100.000%\t     0.000\t        1\t[conv2/Relu6]:2\n"
    "\n"
    "============================== Top by Computation Time ==============================\n"
    "\t                 [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "\t                     CONV_2D\t    4.269\t    4.100\t 54.667%\t 54.667%\t     0.000\t        1\t[conv1/Relu6]:0\n"
    "\t           DEPTHWISE_CONV_2D\t    2.150\t    2.000\t 26.667%\t 81.333%\t     0.000\t        1\t[dw1/Relu6]:1\n"
    "\t                     CONV_2D\t    1.366\t    1.400\t 18.667%\t100.000%\t     0.000\t        1\t[conv2/Relu6]:2\n"
    "\n"
    "============================== Summary by node type ==============================\n"
    "\t                 [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]\n"
    "\t                     CONV_2D\t        2\t     5.500\t    73.333%\t    73.333%\t     0.000\t        2\n"
    "\t           DEPTHWISE_CONV_2D\t        1\t     2.000\t    26.667%\t   100.000%\t     0.000\t        1\n"
    "\n"
    "Timings (microseconds): count=20 first=7785 curr=7412 min=7301 max=8101 avg=7500 std=180\n"
    "Memory (bytes): count=0\n"
    "3 nodes observed\n"
)


def test_operator_table_gives_totals_by_type_and_top_nodes_of_the_regular_runs() -> None:
    by_type, top = op_table.parse(OP_LOG)
    # avg ms and times called are per run; the 20 profiled runs make the totals. Initialization rows are left out.
    assert [(r.op_type, r.total_us, r.calls) for r in by_type] == [
        ("CONV_2D", pytest.approx(110_000), 40),
        ("DEPTHWISE_CONV_2D", pytest.approx(40_000), 20),
    ]
    assert [(r.op_type, r.node, r.calls) for r in top] == [
        ("CONV_2D", "[conv1/Relu6]:0", 20),
        ("DEPTHWISE_CONV_2D", "[dw1/Relu6]:1", 20),
        ("CONV_2D", "[conv2/Relu6]:2", 20),
    ]
    assert top[0].total_us == pytest.approx(82_000)
    assert op_table.parse(LOG) == ([], [])  # a run without --enable_op_profiling


# logcat's other formats, as `adb logcat -v brief` and `-v tag` print the tool's lines (layouts from logcat's
# documentation; the brief form without a pid as an app's log showed it in machidyo/MediaPipeHandTracking#3).
@pytest.mark.parametrize(
    ("line", "level", "text"),
    [
        ("I/tflite  (22838): count=25 first=187533 avg=145528", "I", "count=25 first=187533 avg=145528"),
        ("I/tflite: Initialized TensorFlow Lite runtime.", "I", "Initialized TensorFlow Lite runtime."),
        (
            "E/tflite: Next operations are not supported by GPU delegate:",
            "E",
            "Next operations are not supported by GPU delegate:",
        ),
        ("I tflite  : Inference timings in us: Init: 1", "I", "Inference timings in us: Init: 1"),
        ("2023-07-14 13:14:56.520 22838 22838 W tflite  : x", "W", "x"),
        ("Num threads: [4]", "", "Num threads: [4]"),
    ],
)
def test_log_prefixes_of_every_logcat_format_are_taken_off(line: str, level: str, text: str) -> None:
    assert log_lines.split(line) == (level, text)


def test_count_lines_belong_to_the_phase_announced_before_them() -> None:
    cut_after_warmup = "Running benchmark for at least 1 iterations and at least 0.5 seconds\ncount=6 avg=83420.5\n"
    result = benchmark_output.parse(cut_after_warmup)
    assert (result.warmup_count, result.runs, result.complete) == (6, {}, False)
    assert result.missing().startswith("no statistics of measured runs")
    both = (
        cut_after_warmup + "Running benchmark for at least 50 iterations and at least 1 seconds\ncount=50 avg=80000\n"
    )
    assert benchmark_output.parse(both).runs == {"count": 50, "avg": 80000} and benchmark_output.parse(both).complete


def test_space_aligned_row_keeps_a_node_type_of_several_words() -> None:
    table = (
        "============================== Summary by node type ==============================\n"
        "   [Node type]   [count]   [avg ms]   [avg %]   [cdf %]   [mem KB]   [times called]\n"
        "   Misc Runtime Ops   1   0.250   5.000%   100.000%   0.000   1\n"
    )
    (row,) = op_table.tables(table)["Summary by node type"]
    assert (row["node type"], row["avg ms"], row["times called"]) == ("Misc Runtime Ops", "0.250", "1")
