"""User .npz inputs are read lazily under a decompressed-size cap: zip bombs are refused, not expanded."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from faultlib import assert_still_serving, profile_request, upload
from numpy.lib import format as npy

from agent.errors import InvalidInput
from agent.measure.inputs import MAX_NPZ_DECOMPRESSED_BYTES, load_npz
from agent.runtimes.base import TensorSpec
from agent.service.serve import AgentProcess
from host.fleet.client import AgentClient
from protos import agent_pb2 as pb

SQUEEZENET_INPUT = TensorSpec("data_0", "float32", (1, 3, 224, 224))
BOMB_MIB = 512  # zeros: about 2 MB deflated


def _zip_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...], payload_mib: int) -> None:
    """A float32 .npy entry whose header says `shape`, holding `payload_mib` MiB of zeros."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        npy.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
        zeros = bytes(4 * 1024**2)
        for _ in range(payload_mib // 4):
            member.write(zeros)


@pytest.fixture(scope="module")
def bomb_beside_real_input() -> bytes:
    """data_0 as squeezenet wants it, plus an unused 512 MiB entry of zeros (`junk00`)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("data_0.npy", "w") as member:
            npy.write_array(member, np.ones((1, 3, 224, 224), np.float32))
        _zip_member(archive, "junk00", (BOMB_MIB * 1024**2 // 4,), BOMB_MIB)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb_as_input() -> bytes:
    """The model's input itself as a 512 MiB entry of zeros."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _zip_member(archive, "data_0", (1, 3, 224, BOMB_MIB * 1024**2 // 4 // (3 * 224)), BOMB_MIB)
    return buf.getvalue()


def test_only_the_arrays_the_model_uses_are_decompressed(bomb_beside_real_input: bytes) -> None:
    feeds = load_npz(bomb_beside_real_input, [SQUEEZENET_INPUT])

    assert list(feeds) == ["data_0"] and feeds["data_0"].shape == (1, 3, 224, 224) and feeds["data_0"].sum() > 0


def test_array_whose_header_exceeds_the_cap_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        _zip_member(archive, "data_0", (1, 3, 224, 224 * 4), 4)

    with pytest.raises(InvalidInput) as caught:
        load_npz(path, [TensorSpec("data_0", "float32", (1, 3, 224, -1))], max_bytes=1024**2)

    assert "at most 1 MB" in str(caught.value) and "data_0" in str(caught.value)


def test_entry_holding_more_than_its_header_says_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        _zip_member(archive, "x", (4,), 8)

    with pytest.raises(InvalidInput) as caught:
        load_npz(path, [TensorSpec("x", "float32", (4,))], max_bytes=16 * 1024**2)

    assert "more data than its shape" in str(caught.value)


def test_lazy_reader_returns_what_numpy_saved(tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    arrays = {
        "f": np.asfortranarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4)),
        "i": np.arange(6, dtype=np.int64).reshape(2, 3),
        "b": np.array([True, False]),
    }
    np.savez_compressed(path, **arrays)
    specs = [TensorSpec("f", "float64", (2, 3, 4)), TensorSpec("i", "int64", (2, 3)), TensorSpec("b", "bool", (2,))]

    feeds = load_npz(path, specs)

    for name, array in arrays.items():
        np.testing.assert_array_equal(feeds[name], array)


def test_zip_bomb_beside_the_inputs_leaves_the_worker_small(
    agent_process: AgentProcess, bomb_beside_real_input: bytes
) -> None:
    with AgentClient(f"127.0.0.1:{agent_process.port}") as client:
        sha = upload(client)

        batches = list(client.profile(profile_request(sha, inputs_npz=bomb_beside_real_input), timeout_s=120))

    end = batches[-1].end
    assert end.status == pb.JobEnd.OK, end
    assert end.peak_rss_bytes < 300 * 1024**2, f"worker peaked at {end.peak_rss_bytes / 1e6:.0f} MB"


def test_zip_bomb_as_the_input_is_refused_quickly_naming_the_cap(
    agent_process: AgentProcess, bomb_as_input: bytes
) -> None:
    with AgentClient(f"127.0.0.1:{agent_process.port}") as client:
        sha = upload(client)

        batches = list(client.profile(profile_request(sha, inputs_npz=bomb_as_input), timeout_s=120))

        end = batches[-1].end
        assert end.status == pb.JobEnd.ERROR and end.error_kind == "invalid_input", end
        assert f"at most {MAX_NPZ_DECOMPRESSED_BYTES / 1e6:.0f} MB" in end.error and "\n" not in end.error
        assert_still_serving(client, sha)


def test_an_npz_missing_an_input_says_which_not_that_the_archive_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, other=np.zeros((1, 3, 224, 224), np.float32))

    with pytest.raises(InvalidInput) as caught:
        load_npz(path, [SQUEEZENET_INPUT])

    assert str(caught.value) == "the inputs file lacks data_0 (it has: other)"
