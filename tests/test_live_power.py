"""Running power for the live table: the newest second of a job's power or energy samples, in watts."""

from __future__ import annotations

import io

import pytest

from host.run.collect import JobCollector
from host.run.profiling import DeviceProgress
from host.run.progress import PlainProgress
from protos import agent_pb2 as pb

RATE_HZ = 100
STEP_NS = 1_000_000_000 // RATE_HZ


def _stream(kind: int, values_per_s: list[tuple[float, float]], role: str = "total") -> JobCollector:
    """Batches of 0.1 s each; (seconds, watts) segments one after another, as a sensor would send them."""
    collector = JobCollector("board")
    t_ns, energy_uj, seq = 0, 0.0, 0
    for seconds, watts in values_per_s:
        for _ in range(int(seconds * 10)):
            ts, vs = [], []
            for _ in range(RATE_HZ // 10):
                t_ns += STEP_NS
                energy_uj += watts * STEP_NS / 1e3
                ts.append(t_ns)
                vs.append(energy_uj if kind == pb.ENERGY_UJ else watts * 1e3)
            seq += 1
            batch = pb.MeasurementBatch(job_id="j", seq=seq)
            batch.series.add(name="rail", kind=kind, role=role, sensor="fake", t_ns=ts, value=vs)
            collector.add(batch)
    return collector


@pytest.mark.parametrize("kind", [pb.POWER_MW, pb.ENERGY_UJ], ids=["power_mw", "energy_uj"])
def test_recent_power_follows_the_last_second_not_the_whole_job(kind: int) -> None:
    collector = _stream(kind, [(5.0, 2.0), (2.0, 7.5)])  # 5 s at 2 W, then 2 s at 7.5 W

    assert collector.recent_power_w() == pytest.approx(7.5, rel=0.02)
    assert collector.recent_power_w(window_ns=20_000_000_000) == pytest.approx((5 * 2.0 + 2 * 7.5) / 7, rel=0.03)


def test_recent_power_is_none_without_a_power_sensor() -> None:
    collector = JobCollector("board")
    batch = pb.MeasurementBatch(job_id="j", seq=1)
    batch.series.add(name="cpu", kind=pb.TEMP_C, sensor="thermal", t_ns=[1, 2, 3], value=[40.0, 41.0, 42.0])
    collector.add(batch)

    assert collector.recent_power_w() is None


def test_recent_power_reads_only_the_newest_chunks() -> None:
    collector = _stream(pb.POWER_MW, [(60.0, 3.0)])
    series, times, _ = next(iter(collector._series.values()))
    assert series.kind == "power_mw" and len(times) == 600
    # Poison the old chunks (stamps in the future, 1 kW): reading them would move the window onto them.
    _, old_times, old_values = collector._series["rail"]
    for t_chunk, v_chunk in zip(old_times[:-20], old_values[:-20], strict=True):
        t_chunk += 10**12
        v_chunk[:] = 1e6

    assert collector.recent_power_w() == pytest.approx(3.0)


def test_plain_progress_line_shows_p50_and_power() -> None:
    out = io.StringIO()
    PlainProgress(out)(DeviceProgress("jetson-1", phase="measure", measured=120, p50_ms=3.25, power_w=6.125))

    assert out.getvalue().strip() == "jetson-1: measure  120 inferences  recent p50 3.250 ms  6.12 W"
