"""GenAI model directories as tars: deterministic packing on the host, safe unpacking in the agent's cache."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import InvalidModel, ModelTooLarge
from agent.storage.model_cache import ModelCache
from host.prepare.genai_pack import pack
from protos import agent_pb2 as pb
from tests.genai_model import write_genai_dir


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_with(tmp_path: Path, data: bytes, max_model_bytes: int = 10**9) -> tuple[ModelCache, str]:
    cache = ModelCache(tmp_path / "cache", max_model_bytes=max_model_bytes, disk_reserve_bytes=0)
    sha = hashlib.sha256(data).hexdigest()
    cache.store(sha, len(data), [data])
    return cache, sha


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, payload in members:
            info.size = len(payload) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return buffer.getvalue()


def test_same_directory_packs_to_the_same_bytes_whatever_the_mtimes(tmp_path: Path) -> None:
    model_dir = write_genai_dir(tmp_path / "tiny")
    first = _sha(pack(model_dir, tmp_path / "a"))
    for path in model_dir.iterdir():
        os.utime(path, (1_000_000, 1_000_000))

    second = _sha(pack(model_dir, tmp_path / "b"))

    assert first == second


def test_packed_directory_unpacks_in_the_agent_cache_and_eviction_removes_it(tmp_path: Path) -> None:
    model_dir = write_genai_dir(tmp_path / "tiny")
    cache, sha = _cache_with(tmp_path, pack(model_dir, tmp_path / "p").read_bytes())

    unpacked = cache.unpacked(sha)

    assert (unpacked / "genai_config.json").read_bytes() == (model_dir / "genai_config.json").read_bytes()
    assert (unpacked / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()
    assert cache.unpacked(sha) == unpacked  # once: the second job finds it unpacked


def _with_config(extra: list[tuple[tarfile.TarInfo, bytes]], tmp_path: Path) -> bytes:
    model_dir = write_genai_dir(tmp_path / "src")
    members = [(tarfile.TarInfo(p.name), p.read_bytes()) for p in sorted(model_dir.iterdir())]
    return _tar(members + extra)


def test_member_escaping_the_directory_is_refused_and_nothing_lands_outside(tmp_path: Path) -> None:
    data = _with_config([(tarfile.TarInfo("../x"), b"escaped")], tmp_path)
    cache, sha = _cache_with(tmp_path, data)

    with pytest.raises(InvalidModel, match=r"member '\.\./x' would land outside the model directory"):
        cache.unpacked(sha)

    assert not list(tmp_path.rglob("x"))
    assert not (cache.directory / ".unpacked" / sha).exists()


def test_link_member_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("tokenizer_link.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cache, sha = _cache_with(tmp_path, _with_config([(link, b"")], tmp_path))

    with pytest.raises(InvalidModel, match="is not a regular file"):
        cache.unpacked(sha)


def test_unpacked_size_is_capped_by_the_model_limit(tmp_path: Path) -> None:
    data = _with_config([(tarfile.TarInfo("padding.bin"), b"\0" * 300_000)], tmp_path)
    cache, sha = _cache_with(tmp_path, data, max_model_bytes=len(data))
    cache.max_model_bytes = 200_000  # the tar fitted when it was uploaded; unpacked it is over the cap

    with pytest.raises(InvalidModel, match=r"unpacks to more than 0\.2 MB"):
        cache.unpacked(sha)


def test_config_naming_a_missing_file_is_refused_on_the_board(tmp_path: Path) -> None:
    model_dir = write_genai_dir(tmp_path / "src")
    members = [(tarfile.TarInfo(p.name), p.read_bytes()) for p in sorted(model_dir.iterdir()) if p.name != "model.onnx"]
    cache, sha = _cache_with(tmp_path, _tar(members))

    with pytest.raises(InvalidModel, match=r"names 'model\.onnx', which is not in the directory"):
        cache.unpacked(sha)


def test_collector_refuses_a_generation_with_tokens_out_of_order() -> None:
    from host.run.collect import InvalidBatch, JobCollector

    collector = JobCollector("dev")
    batch = pb.MeasurementBatch(job_id="a" * 32, seq=1)
    batch.tokens.add(phase=pb.MEASURE, prompt_tokens=16, start_ns=100, prefill_end_ns=200, token_end_ns=[300, 250])

    with pytest.raises(InvalidBatch, match="token timestamps out of order"):
        collector.add(batch)
    assert collector.last_seq == 0


MB = 1_000_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 200 MB tmpfs for the model cache (what the red team filled), mounted when the test runs as root."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _sparse_tar(tmp_path: Path, hole_bytes: int) -> bytes:
    """A GenAI model tar whose extra member is sparse: `hole_bytes` of zeros held in a few kB (GNU tar --sparse)."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is needed to write a sparse member")
    src = write_genai_dir(tmp_path / f"sparse-{hole_bytes}")
    with open(src / "padding.bin", "wb") as out:
        out.truncate(hole_bytes)
    names = sorted(p.name for p in src.iterdir())
    subprocess.run(["tar", "--sparse", "-cf", str(src) + ".tar", "-C", str(src), *names], check=True)
    return Path(str(src) + ".tar").read_bytes()


def test_three_small_uploads_with_sparse_members_cannot_fill_the_disk(small_disk: Path, tmp_path: Path) -> None:
    cache = ModelCache(small_disk, disk_reserve_bytes=50 * MB)
    tars = [_sparse_tar(tmp_path, (60 + i) * MB) for i in range(3)]
    assert all(len(tar) < 5 * MB for tar in tars)  # the model files, and a few kB for the 60 MB member

    refusals = []
    for tar in tars:
        sha = hashlib.sha256(tar).hexdigest()
        cache.store(sha, len(tar), [tar])
        with pytest.raises(InvalidModel) as refused:
            cache.unpacked(sha)
        refusals.append(str(refused.value))

    assert all("'padding.bin' is a sparse file" in r for r in refusals)
    assert shutil.disk_usage(small_disk).free > 190 * MB  # 3 x 60 MB were written before, below the reserve
    assert not list((small_disk / ".unpacked").iterdir())


def test_an_unpack_that_would_eat_the_disk_reserve_is_refused(small_disk: Path, tmp_path: Path) -> None:
    tar = _with_config([(tarfile.TarInfo("weights.bin"), b"\1" * (80 * MB))], tmp_path)
    cache = ModelCache(small_disk, disk_reserve_bytes=50 * MB)
    sha = hashlib.sha256(tar).hexdigest()
    cache.store(sha, len(tar), [tar])  # 80 MB on a 200 MB disk: 120 MB free, the reserve kept

    with pytest.raises(ModelTooLarge, match=r"not enough free disk on the agent for a 80\.\d MB unpacked GenAI model"):
        cache.unpacked(sha)  # another 80 MB would leave 40 MB, below the 50 MB reserve

    assert shutil.disk_usage(small_disk).free > 110 * MB
    assert not list((small_disk / ".unpacked").iterdir())


def test_unpacked_models_count_against_the_cache_limit(tmp_path: Path) -> None:
    tar = _with_config([(tarfile.TarInfo("weights.bin"), b"\1" * (3 * MB))], tmp_path)
    cache, sha = _cache_with(tmp_path, tar)
    cache.limit_bytes = len(tar) + 1 * MB

    with pytest.raises(ModelTooLarge, match=r"no room in the agent's model cache for a 3\.\d MB unpacked GenAI model"):
        cache.unpacked(sha)  # the tar alone fits the limit; unpacked beside it, it does not

    cache.limit_bytes = 2 * len(tar) + 1 * MB
    cache.unpacked(sha)
    other = b"\2" * (2 * MB)
    with pytest.raises(ModelTooLarge, match="no room in the agent's model cache"):
        cache.store(hashlib.sha256(other).hexdigest(), len(other), [other])  # accepted before: 9 MB in an 8 MB cache
    assert cache.total_bytes() <= cache.limit_bytes
