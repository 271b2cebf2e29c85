"""JobCollector refuses batches whose numbers cannot be true, keeps nothing of them, and bounds a job's samples."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from fake_agent import job_batches

from host.analysis.summary import device_entry
from host.run.collect import InvalidBatch, JobCollector, SequenceError
from host.store.rundata import DeviceRaw, PhaseSpan
from host.store.strict_json import dumps, finite_or_null
from protos import agent_pb2 as pb

JOB = "f" * 32


def _series(batch: pb.MeasurementBatch, kind: int, values: list[float], t_ns: list[int] | None = None) -> None:
    t0 = batch.latency[0].start_ns[0]
    times = t_ns if t_ns is not None else [t0 + i * 1_000 for i in range(len(values))]
    batch.series.add(name="chan", kind=kind, t_ns=times, value=values)


CASES: list[tuple[str, Callable[[pb.MeasurementBatch], None], str]] = [
    ("nan power", lambda b: _series(b, pb.POWER_MW, [1.0, math.nan]), "non-finite value (nan)"),
    ("inf power", lambda b: _series(b, pb.POWER_MW, [math.inf]), "non-finite value (inf)"),
    ("-inf energy", lambda b: _series(b, pb.ENERGY_UJ, [-math.inf]), "non-finite value (-inf)"),
    ("11 kW", lambda b: _series(b, pb.POWER_MW, [1.1e7]), "outside -1e+07..1e+07 mW"),
    ("hot", lambda b: _series(b, pb.TEMP_C, [250.0]), "outside -60..200 °C"),
    ("frozen", lambda b: _series(b, pb.TEMP_C, [-80.0]), "outside -60..200 °C"),
    ("2 TiB RSS", lambda b: _series(b, pb.RSS_BYTES, [2.0 * 2**40]), "outside 0..1.09951e+12 bytes"),
    ("negative energy", lambda b: _series(b, pb.ENERGY_UJ, [-1.0]), "outside 0..1e+18 µJ"),
    ("series lengths", lambda b: _series(b, pb.TEMP_C, [40.0, 41.0], [5]), "1 timestamps but 2 values"),
    ("negative time", lambda b: _series(b, pb.TEMP_C, [40.0], [-5]), "negative timestamp"),
    ("time backwards", lambda b: _series(b, pb.TEMP_C, [40.0, 41.0], [10, 5]), "timestamps go backwards"),
    ("latency lengths", lambda b: b.latency[0].end_ns.pop(), "10 start times but 9 end times"),
    ("end before start", lambda b: b.latency.add(phase=pb.MEASURE, start_ns=[10], end_ns=[5]), "ends before it starts"),
    ("negative start", lambda b: b.latency.add(phase=pb.MEASURE, start_ns=[-1], end_ns=[5]), "negative start time"),
    (
        "starts backwards",
        lambda b: b.latency.add(phase=pb.MEASURE, start_ns=[10, 5], end_ns=[11, 6]),
        "start times go backwards",
    ),
    ("phase backwards", lambda b: b.phases.add(phase=pb.IDLE, start_ns=10, end_ns=5), "idle phase ends before"),
    ("negative count", lambda b: b.phases.add(phase=pb.WARMUP, start_ns=1, count=-3), "inference count is negative"),
    ("peak rss", lambda b: b.end.MergeFrom(pb.JobEnd(peak_rss_bytes=2**62)), "peak RSS"),
    ("negative measured", lambda b: b.end.MergeFrom(pb.JobEnd(measured=-1)), "measured inferences is negative"),
    (
        "nan op time",
        lambda b: b.end.MergeFrom(pb.JobEnd(op_by_type=[pb.OpStat(op_type="Conv", total_us=math.nan)])),
        "operator time is not a finite number",
    ),
    ("nan sample rate", lambda b: b.info.MergeFrom(pb.JobInfo(sample_rate_hz=math.inf)), "sample rate"),
    ("negative load time", lambda b: b.info.MergeFrom(pb.JobInfo(load_time_ns=-1)), "load time is negative"),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_batch_with_an_impossible_number_is_refused_whole(
    mutate: Callable[[pb.MeasurementBatch], None], expected: str
) -> None:
    first, second, _third = job_batches(JOB, [1, 2, 3], end=True)
    collector = JobCollector("board")
    collector.add(first)
    mutate(second)

    with pytest.raises(InvalidBatch, match="refused job ffffffff, batch 2 from the agent") as err:
        collector.add(second)

    assert expected in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, SequenceError)  # so profile and runs fetch fail that device, not the command
    assert collector.last_seq == 1 and collector.measured == 10  # nothing of the refused batch was kept
    assert [s.name for s in collector.raw().series] == ["worker"]
    assert collector.raw().series[0].t_ns.size == 10


def test_healthy_batches_pass_unchanged() -> None:
    collector = JobCollector("board")
    for batch in job_batches(JOB, [1, 2, 3], end=True):
        batch.series.add(name="VDD_IN", kind=pb.POWER_MW, t_ns=[batch.latency[0].start_ns[0]], value=[-120.0])
        collector.add(batch)

    raw = collector.raw()
    assert raw.start_ns.size == 30 and collector.finished
    assert {s.name: s.value.size for s in raw.series} == {"worker": 30, "VDD_IN": 3}  # small negative power is real


def test_the_sample_cap_stops_a_job_before_it_holds_more() -> None:
    collector = JobCollector("board", max_samples=45)
    batches = job_batches(JOB, [1, 2, 3], end=True)  # 10 inferences + 10 memory samples each
    collector.add(batches[0])
    collector.add(batches[1])

    with pytest.raises(InvalidBatch, match="more than 45 samples") as err:
        collector.add(batches[2])

    assert "EDGEPROF_MAX_SAMPLES_PER_JOB" in str(err.value)
    assert collector.samples == 40 and collector.raw().start_ns.size == 20


def test_the_sample_cap_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPROF_MAX_SAMPLES_PER_JOB", "1234")
    assert JobCollector("board").max_samples == 1234
    monkeypatch.setenv("EDGEPROF_MAX_SAMPLES_PER_JOB", "lots")
    with pytest.raises(ValueError, match="EDGEPROF_MAX_SAMPLES_PER_JOB must be a positive integer, not 'lots'"):
        JobCollector("board")


def test_device_entry_holds_null_never_nan() -> None:
    # A JobInfo that reaches device_entry without the collector (a stored or imported job) may hold anything.
    info = pb.JobInfo(runtime="onnxruntime", sample_rate_hz=math.nan, load_time_ns=1_000_000)
    end = pb.JobEnd(status=pb.JobEnd.OK, measured=1)
    raw = DeviceRaw("board", start_ns=np.array([0, 10]), end_ns=np.array([5, 15]))

    entry = device_entry("board", raw, info, end, upload_bytes=0)

    assert entry["sample_rate_hz"] is None and entry["load_time_ms"] == 1.0
    dumps(entry)  # strict JSON: raises on NaN


def test_strict_json_replaces_non_finite_and_refuses_what_is_left() -> None:
    cleaned = finite_or_null({"a": [1.0, math.nan, (math.inf, 2)], "b": np.float32("nan"), "c": np.float64(-math.inf)})
    assert cleaned == {"a": [1.0, None, (None, 2)], "b": None, "c": None}
    with pytest.raises(ValueError):
        dumps({"x": math.nan})


# What the collector hands on (issue 18: mutation testing found the per-part and live-display reads unchecked).
def _two_part_job() -> JobCollector:
    """Part 0: warmup 900-990, measure 1000-2000 at 2 W; part 1: measure 3000-4000 at 4 W (samples every 100 ns)."""
    first = pb.MeasurementBatch(job_id=JOB, seq=1)
    first.phases.add(phase=pb.WARMUP, start_ns=900, end_ns=990, part=0)
    first.phases.add(phase=pb.MEASURE, start_ns=1000, end_ns=2000, count=2, part=0)
    first.latency.add(phase=pb.WARMUP, part=0, start_ns=[900], end_ns=[950])
    first.latency.add(phase=pb.MEASURE, part=0, start_ns=[1000, 1100], end_ns=[1050, 1180])
    t0 = list(range(900, 2001, 100))
    first.series.add(name="VDD_IN", kind=pb.POWER_MW, role="total", sensor="ina3221", t_ns=t0, value=[2000.0] * 12)
    second = pb.MeasurementBatch(job_id=JOB, seq=2)
    second.phases.add(phase=pb.MEASURE, start_ns=3000, end_ns=4000, count=1, part=1)
    second.latency.add(phase=pb.MEASURE, part=1, start_ns=[3000], end_ns=[3200])
    t1 = list(range(3000, 4001, 100))
    second.series.add(name="VDD_IN", kind=pb.POWER_MW, role="total", sensor="ina3221", t_ns=t1, value=[4000.0] * 11)
    collector = JobCollector("pi")
    collector.add(first)
    collector.add(second)
    return collector


def test_latencies_of_each_phase_and_each_part_of_a_job() -> None:
    collector = _two_part_job()

    assert collector.latency_ns().tolist() == [50, 80, 200]
    assert collector.latency_ns(pb.WARMUP).tolist() == [50]
    idle = collector.latency_ns(pb.IDLE)
    assert idle.size == 0 and idle.dtype == np.int64
    assert collector.parts == [0, 1]

    part0 = collector.part_raw(0)
    assert (part0.start_ns.tolist(), part0.end_ns.tolist()) == ([1000, 1100], [1050, 1180])
    assert (part0.warmup_start_ns.tolist(), part0.warmup_end_ns.tolist()) == ([900], [950])
    assert part0.start_ns.dtype == part0.end_ns.dtype == np.int64
    (power0,) = part0.series
    assert (power0.name, power0.kind, power0.role, power0.sensor) == ("VDD_IN", "power_mw", "total", "ina3221")
    assert power0.t_ns.tolist() == list(range(900, 2001, 100)) and set(power0.value.tolist()) == {2000.0}
    assert [(p.name, p.start_ns, p.end_ns, p.count) for p in part0.phases] == [
        ("warmup", 900, 990, 0),
        ("measure", 1000, 2000, 2),
    ]
    part1 = collector.part_raw(1)
    assert (part1.start_ns.tolist(), part1.end_ns.tolist()) == ([3000], [3200])
    assert part1.warmup_start_ns.size == 0 and part1.warmup_start_ns.dtype == part1.warmup_end_ns.dtype == np.int64
    assert part1.series[0].t_ns.tolist() == list(range(3000, 4001, 100))
    nothing = collector.part_raw(7)
    assert nothing.device == "pi" and nothing.start_ns.size == 0 and nothing.series == []


def test_live_power_is_the_mean_over_the_newest_window_of_samples() -> None:
    collector = _two_part_job()

    assert collector.recent_power_w(window_ns=500) == pytest.approx(4.0)  # 3500-4000: part 1 only
    # 2000-4000 reaches back into the first batch's block: its last sample (2 W at 2000) and part 1's 11.
    assert collector.recent_power_w(window_ns=2_000) == pytest.approx((2.0 + 11 * 4.0) / 12)
    # Everything: 12 samples at 2 W and 11 at 4 W.
    assert collector.recent_power_w(window_ns=10_000) == pytest.approx((12 * 2.0 + 11 * 4.0) / 23)
    assert JobCollector("pi").recent_power_w() is None


def test_the_whole_job_keeps_every_sample_in_time_order() -> None:
    raw = _two_part_job().raw()

    assert raw.start_ns.tolist() == [1000, 1100, 3000] and raw.end_ns.tolist() == [1050, 1180, 3200]
    assert raw.start_ns.dtype == np.int64
    (power,) = raw.series
    assert (power.name, power.kind, power.role, power.sensor) == ("VDD_IN", "power_mw", "total", "ina3221")
    assert power.t_ns.tolist() == [*range(900, 2001, 100), *range(3000, 4001, 100)]
    assert power.t_ns.dtype == np.int64  # ns since boot pass 2^53 after 104 days: never through float64
    assert power.value.tolist() == [2000.0] * 12 + [4000.0] * 11


def test_gaps_and_repeats_name_the_batch_expected_and_the_one_received() -> None:
    first, second, third = job_batches(JOB, [1, 2, 3], end=True)
    collector = JobCollector("board")
    collector.add(first)

    with pytest.raises(SequenceError) as gap:
        collector.add(third)
    with pytest.raises(SequenceError) as repeat:
        collector.add(first)

    assert str(gap.value) == "gap in the measurement stream of job ffffffff: expected batch 2, got 3"
    assert str(repeat.value) == "duplicate in the measurement stream of job ffffffff: expected batch 2, got 1"
    collector.add(second)
    assert collector.last_seq == 2


def test_what_the_collector_keeps_of_a_job_for_the_summary_and_the_live_display() -> None:
    collector = _two_part_job()
    first_info = pb.JobInfo(runtime="onnxruntime", runtime_version="1.20", part=0)
    later = pb.MeasurementBatch(job_id=JOB, seq=3, info=pb.JobInfo(runtime="tflite", part=1))
    later.latency.add(phase=pb.MEASURE, part=1, start_ns=[4100, 4200], end_ns=[4150, 4290])
    fresh = JobCollector("pi")
    fresh.add(pb.MeasurementBatch(job_id=JOB, seq=1, info=first_info))
    fresh.add(pb.MeasurementBatch(job_id=JOB, seq=2, info=pb.JobInfo(runtime="tflite", part=1)))
    collector.add(later)

    assert collector.job_id == JOB and fresh.job_id == JOB
    assert fresh.info == first_info and fresh.infos[1].runtime == "tflite"  # the first describes the job
    assert collector.recent_latency_ns.tolist() == [50, 90]  # the newest measured block
    assert collector.measured == 5
    raw = collector.raw()
    assert (raw.device, raw.warmup_start_ns.tolist(), raw.warmup_end_ns.tolist()) == ("pi", [900], [950])
    assert [p.name for p in raw.phases] == ["warmup", "measure"] and (raw.phases[0].start_ns, raw.phases[0].end_ns) == (
        900,
        990,
    )
    part = collector.part_raw(1)
    assert part.device == "pi" and [s.name for s in part.series] == ["VDD_IN"]
    assert part.start_ns.tolist() == [3000, 4100, 4200]


def test_an_empty_job_still_has_integer_nanosecond_arrays() -> None:
    raw = JobCollector("pi").raw()
    arrays = (raw.start_ns, raw.end_ns, raw.warmup_start_ns, raw.warmup_end_ns)
    assert [(a.size, a.dtype) for a in arrays] == [(0, np.dtype(np.int64))] * 4


def test_a_malformed_generation_is_refused_naming_the_batch_and_what_is_wrong() -> None:
    first, second, _third = job_batches(JOB, [1, 2, 3], end=True)
    collector = JobCollector("board")
    collector.add(first)
    second.tokens.add(phase=pb.MEASURE, prompt_tokens=0, start_ns=10, prefill_end_ns=20, token_end_ns=[30])

    with pytest.raises(InvalidBatch) as err:
        collector.add(second)

    assert str(err.value) == "refused job ffffffff, batch 2 from the agent: a generation with 0 prompt tokens"
    assert collector.last_seq == 1


def test_generations_and_series_of_unknown_kinds_are_kept() -> None:
    first, _second, _third = job_batches(JOB, [1, 2, 3], end=True)
    collector = JobCollector("board")
    t0 = int(first.latency[0].start_ns[0])
    first.tokens.add(phase=pb.MEASURE, prompt_tokens=16, start_ns=t0, prefill_end_ns=t0 + 5, token_end_ns=[t0 + 9])
    first.series.add(name="mystery", kind=99, t_ns=[t0], value=[1.0])  # a kind from a newer agent
    collector.add(first)

    series = {s.name: s for s in collector.raw().series}
    assert series["mystery"].kind == "unknown" and series["mystery"].value.tolist() == [1.0]
    assert series["gen_start"].t_ns.tolist() == [t0] and series["gen_start"].value.tolist() == [16.0]


def test_a_phase_reported_in_pieces_keeps_what_each_event_said() -> None:
    # The agent sends a phase when it starts (no end), and again when it ends, with its count and detail.
    first = pb.MeasurementBatch(job_id=JOB, seq=1)
    first.phases.add(phase=pb.SETTLE, start_ns=50, end_ns=90, detail="settled at 41.0 C", part=0)
    first.phases.add(phase=pb.WARMUP, start_ns=100, part=0)
    second = pb.MeasurementBatch(job_id=JOB, seq=2)
    second.phases.add(phase=pb.WARMUP, start_ns=100, end_ns=900, count=12, detail="stable", part=0)
    second.phases.add(phase=pb.SETTLE, start_ns=50, part=0)  # a repeat without end or detail keeps both
    collector = JobCollector("pi")
    collector.add(first)
    assert collector.current_phase == "warmup"
    collector.add(second)

    whole = {p.name: (p.start_ns, p.end_ns, p.count, p.detail) for p in collector.raw().phases}
    part = {p.name: (p.start_ns, p.end_ns, p.count, p.detail) for p in collector.part_raw(0).phases}
    expected = {"settle": (50, 90, 0, "settled at 41.0 C"), "warmup": (100, 900, 12, "stable")}
    assert whole == part == expected and collector.current_phase == "settle"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b.phases.add(phase=99, start_ns=10, end_ns=5), "unknown phase ends before it starts"),
        (lambda b: b.latency.add(phase=99, start_ns=[10], end_ns=[5]), "unknown inference 0 ends before it starts"),
        (lambda b: b.series.add(name="x", kind=99, t_ns=[1], value=[math.nan]), "series 'x' (unknown) holds"),
    ],
    ids=["phase", "latency", "series"],
)
def test_a_refusal_names_what_a_newer_agent_sent_as_unknown(
    mutate: Callable[[pb.MeasurementBatch], None], expected: str
) -> None:
    batch = pb.MeasurementBatch(job_id=JOB, seq=1)
    mutate(batch)
    with pytest.raises(InvalidBatch, match="refused job ffffffff, batch 1 from the agent: ") as err:
        JobCollector("pi").add(batch)
    assert expected in str(err.value)


def _with_series(seq: int, names: list[str], samples: int = 1) -> pb.MeasurementBatch:
    batch = pb.MeasurementBatch(job_id=JOB, seq=seq)
    for name in names:
        batch.series.add(name=name, kind=pb.TEMP_C, t_ns=list(range(1, samples + 1)), value=[40.0] * samples)
    return batch


def test_the_caps_on_samples_and_series_are_inclusive() -> None:
    from host.run import validate

    exactly = JobCollector("pi", max_samples=6)
    exactly.add(_with_series(1, ["a", "b"], samples=3))  # 6 samples: at the cap, kept
    with pytest.raises(InvalidBatch, match="more than 6 samples for job ffffffff, batch 2"):
        exactly.add(_with_series(2, ["a"], samples=1))

    cap = validate.MAX_SERIES_PER_JOB
    series = JobCollector("pi")
    series.add(_with_series(1, [f"s{i}" for i in range(cap - 1)]))
    series.add(_with_series(2, ["s0", f"s{cap - 1}"]))  # one known, one new: exactly at the cap
    with pytest.raises(InvalidBatch) as err:
        series.add(_with_series(3, ["s0", "one-too-many"]))
    assert str(err.value) == f"the agent sent more than {cap} sensor series for job ffffffff, batch 3"


def test_generated_tokens_count_towards_the_sample_cap() -> None:
    batch = pb.MeasurementBatch(job_id=JOB, seq=1)
    batch.tokens.add(phase=pb.MEASURE, prompt_tokens=4, start_ns=10, prefill_end_ns=20, token_end_ns=[30, 40, 50])
    JobCollector("pi", max_samples=5).add(batch)  # 3 tokens + start + prefill
    with pytest.raises(InvalidBatch, match="more than 4 samples"):
        JobCollector("pi", max_samples=4).add(batch)


def test_live_power_from_a_slow_meter_with_one_sample_per_batch_beside_other_series() -> None:
    # A 1 Hz USB meter: each flush carries one sample or none; a temperature series comes first.
    collector = JobCollector("pi")
    for seq in range(1, 6):
        batch = pb.MeasurementBatch(job_id=JOB, seq=seq)
        batch.series.add(name="soc", kind=pb.TEMP_C, t_ns=[seq * 1000], value=[45.0])
        batch.series.add(name="usb", kind=pb.POWER_MW, sensor="um25c", t_ns=[seq * 1000], value=[1000.0 * seq])
        collector.add(batch)

    assert collector.recent_power_w(window_ns=2_000) == pytest.approx((3.0 + 4.0 + 5.0) / 3)


def test_live_power_sums_the_rails_as_the_report_does() -> None:
    # RAPL as older agents streamed it: the package with role "total" and DRAM beside it, which the rail plan
    # adds (host/analysis/rails.py); telling RAPL apart takes each series' sensor. 0.2 W + 0.04 W over 2 s.
    from host.analysis.energy import power_over_time_w

    batch = pb.MeasurementBatch(job_id=JOB, seq=1)
    t_ns = list(range(0, 2_000_000_001, 20_000_000))
    package_uj = [i * 4_000.0 for i in range(len(t_ns))]  # 4 mJ per 20 ms = 0.2 W
    dram_uj = [i * 800.0 for i in range(len(t_ns))]
    batch.series.add(name="package-0", kind=pb.ENERGY_UJ, sensor="rapl", role="total", t_ns=t_ns, value=package_uj)
    batch.series.add(name="dram", kind=pb.ENERGY_UJ, sensor="rapl", role="dram", t_ns=t_ns, value=dram_uj)
    collector = JobCollector("pi")
    collector.add(batch)

    t, watts = power_over_time_w(collector.raw().series)
    report_w = float(np.mean(watts[t >= t.max() - 1_000_000_000]))
    assert collector.recent_power_w() == pytest.approx(report_w) == pytest.approx(0.24)


# Survivors of the mutation run (bench/results/mutation_survivors.md, host/run/collect.py) that needed a test.
def test_a_refused_latency_block_names_its_phase() -> None:
    batch = pb.MeasurementBatch(job_id=JOB, seq=1)
    batch.latency.add(phase=pb.WARMUP, start_ns=[10], end_ns=[5])

    with pytest.raises(InvalidBatch) as err:
        JobCollector("pi").add(batch)

    assert (
        str(err.value)
        == "refused job ffffffff, batch 1 from the agent: warmup inference 0 ends before it starts (10 ns -> 5 ns)"
    )


def test_a_phase_from_a_newer_agent_is_kept_and_shown_as_unknown() -> None:
    batch = pb.MeasurementBatch(job_id=JOB, seq=1)
    batch.phases.add(phase=99, start_ns=10, end_ns=20, detail="new", part=0)
    collector = JobCollector("pi")

    collector.add(batch)

    assert collector.current_phase == "unknown"
    expected = [PhaseSpan("unknown", 10, 20, "new", 0)]
    assert collector.raw().phases == collector.part_raw(0).phases == expected


def test_a_running_phase_ends_at_zero_and_one_reported_without_start_starts_at_zero() -> None:
    # 0 is the protocol's "not known yet": the agent sends a phase when it starts, with no end.
    batch = pb.MeasurementBatch(job_id=JOB, seq=1)
    batch.phases.add(phase=pb.FINISH, end_ns=500, part=0)
    batch.phases.add(phase=pb.MEASURE, start_ns=100, part=0)
    collector = JobCollector("pi")

    collector.add(batch)

    expected = [PhaseSpan("finish", 0, 500), PhaseSpan("measure", 100, 0)]
    assert collector.raw().phases == expected
    part = collector.part_raw(0)
    assert part.phases == expected and part.series == []


def test_a_phase_end_sent_without_its_start_keeps_the_start_already_known() -> None:
    started = pb.MeasurementBatch(job_id=JOB, seq=1)
    started.phases.add(phase=pb.WARMUP, start_ns=100, part=0)
    ended = pb.MeasurementBatch(job_id=JOB, seq=2)
    ended.phases.add(phase=pb.WARMUP, end_ns=900, count=12, part=0)
    collector = JobCollector("pi")

    collector.add(started)
    collector.add(ended)

    expected = [PhaseSpan("warmup", 100, 900, "", 12)]
    assert collector.raw().phases == collector.part_raw(0).phases == expected


def test_a_part_without_inference_windows_has_empty_arrays_of_both_ends() -> None:
    batch = pb.MeasurementBatch(job_id=JOB, seq=1)
    batch.phases.add(phase=pb.PREPARE, start_ns=100, end_ns=200, part=0)
    collector = JobCollector("pi")
    collector.add(batch)

    part = collector.part_raw(0)

    arrays = (part.start_ns, part.end_ns, part.warmup_start_ns, part.warmup_end_ns)
    assert [(a.size, a.dtype) for a in arrays] == [(0, np.dtype(np.int64))] * 4


def test_live_power_by_default_averages_the_last_second_including_its_first_instant() -> None:
    batch = pb.MeasurementBatch(job_id=JOB, seq=1)
    t_ns = [0, 1, 1_000_000_001]  # the second sample is exactly 1 s before the newest, the first 1 ns more
    batch.series.add(name="usb", kind=pb.POWER_MW, sensor="um25c", t_ns=t_ns, value=[8000.0, 2000.0, 4000.0])
    collector = JobCollector("pi")
    collector.add(batch)

    assert collector.recent_power_w() == pytest.approx(3.0)
