"""RAPL powercap energy counters: wrap tracking under a live writer, zones, polling rate, permissions."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sensor_fakes import RaplCounterWriter, build_rapl_zone, write

from agent.device.profiles import load_profile
from agent.errors import SensorError
from agent.sensors.base import ENERGY_UJ
from agent.sensors.rapl import RaplSensor, find_zones


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tmp_path))
    return tmp_path


def test_energy_at_4w_stays_within_1pct_across_several_wraps(root: Path) -> None:
    # 4.00 W with a 1 J range wraps every 0.25 s; the backend's own guard thread polls it.
    range_uj = 1_000_000
    path = build_rapl_zone(root, "intel-rapl:0", "package-0", 0, range_uj)
    writer = RaplCounterWriter(path, power_w=4.0, max_range_uj=range_uj, wraps_wanted=5)
    writer.start()
    sensor = RaplSensor(find_zones(), max_power_w=16.0)
    try:
        # Each read happens under the writer's lock, so the file and the writer's own unwrapped total
        # agree: the comparison is exact whatever the machine's load, not a race against the clock.
        with writer.lock:
            (e_start_uj,) = sensor.read()
            total_start_uj, t_start = writer.last_total_uj, writer.last_t
        assert writer.wrapped.wait(timeout=10.0), "writer never wrapped 5 times"
        with writer.lock:
            (e_end_uj,) = sensor.read()
            total_end_uj, t_end = writer.last_total_uj, writer.last_t
    finally:
        sensor.close()
        writer.stop.set()
        writer.join()

    assert (total_end_uj - total_start_uj) // range_uj >= 3  # several wraps between the two reads
    assert e_end_uj - e_start_uj == pytest.approx(total_end_uj - total_start_uj, abs=1)
    assert (e_end_uj - e_start_uj) / 1e6 / (t_end - t_start) == pytest.approx(4.00, rel=0.01)


def test_min_rate_reads_twice_per_wrap_at_max_power(root: Path) -> None:
    build_rapl_zone(root, "intel-rapl:0", "package-0", 0, 1_000_000)

    sensor = RaplSensor(find_zones(), max_power_w=16.0, guard=False)

    # 1 J at 16 W wraps in 62.5 ms: reading every 31.25 ms or faster never misses one.
    assert sensor.min_rate_hz == pytest.approx(32.0)


def test_counter_unwraps_each_step(root: Path) -> None:
    path = build_rapl_zone(root, "intel-rapl:0", "package-0", 900_000, 1_000_000)
    sensor = RaplSensor(find_zones(), guard=False)

    steps = [950_000, 50_000, 600_000, 100_000]
    totals = []
    for raw in steps:
        write(root, str(path.relative_to(root)), raw)
        totals.append(sensor.read()[0])

    assert totals == [50_000, 150_000, 700_000, 1_200_000]


def test_every_zone_is_read_with_the_zone_it_is_a_part_of(root: Path) -> None:
    build_rapl_zone(root, "intel-rapl:0", "package-0")
    build_rapl_zone(root, "intel-rapl:0:0", "core")
    build_rapl_zone(root, "intel-rapl:0:1", "uncore")
    build_rapl_zone(root, "intel-rapl:0:2", "dram")
    build_rapl_zone(root, "intel-rapl:1", "package-1")
    build_rapl_zone(root, "intel-rapl:2", "psys")

    sensor = RaplSensor.from_profile(load_profile("x86-rapl"))
    try:
        channels = {(ch.name, ch.role, ch.part_of, ch.kind) for ch in sensor.channels()}
    finally:
        sensor.close()

    # psys is the whole platform; the packages and DRAM are parts of it; core and uncore of their package.
    assert channels == {
        ("package-0", "cpu", "psys", ENERGY_UJ),
        ("core-0", "cpu", "package-0", ENERGY_UJ),
        ("uncore-0", "cpu", "package-0", ENERGY_UJ),
        ("dram-0", "dram", "psys", ENERGY_UJ),
        ("package-1", "cpu", "psys", ENERGY_UJ),
        ("psys", "total", "", ENERGY_UJ),
    }


def test_profile_rails_override_the_package_role(root: Path) -> None:
    build_rapl_zone(root, "intel-rapl:0", "package-0")

    sensor = RaplSensor.from_profile(load_profile("nvidia-dgpu"))
    sensor.close()

    assert [ch.role for ch in sensor.channels()] == ["cpu"]


def _find_zones_error(as_uid: int | None) -> str:
    """find_zones()'s SensorError text, read as ``as_uid`` (in a forked child) or as ourselves."""
    if as_uid is None:
        with pytest.raises(SensorError) as caught:
            find_zones()
        return str(caught.value)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root so the file's permission bits apply, report, never return
        status = 1
        try:
            os.close(read_fd)
            os.setgid(as_uid)
            os.setuid(as_uid)
            find_zones()
        except SensorError as err:
            os.write(write_fd, str(err).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "no SensorError raised for a root-only counter"
    return message


@pytest.fixture
def world_readable_tree(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake root that another user can traverse (pytest's own tmp_path is private to its owner)."""
    tree = Path(tempfile.mkdtemp(prefix="edgeprof-rapl-"))
    tree.chmod(0o755)
    monkeypatch.setenv("EDGEPROF_SYSFS_ROOT", str(tree))
    yield tree
    shutil.rmtree(tree)


def test_root_only_counter_raises_a_message_saying_how_to_grant_access(world_readable_tree: Path) -> None:
    # Real permission bits; as root they do not apply, so then the read runs as "nobody".
    path = build_rapl_zone(world_readable_tree, "intel-rapl:0", "package-0", 123)
    path.chmod(0o400)

    message = _find_zones_error(65534 if os.geteuid() == 0 else None)

    assert "energy_uj" in message and "permission denied" in message
    assert "chmod a+r" in message and "udev" in message and "root" in message
    assert "\n" not in message


def test_no_powercap_is_not_available(root: Path) -> None:
    assert not RaplSensor.is_available()
    with pytest.raises(SensorError):
        RaplSensor([], guard=False)
