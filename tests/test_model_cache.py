"""The agent's model cache: content addressed, verified, least-recently-used eviction at its limit."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import InvalidInput, ModelTooLarge, UploadCorrupt
from agent.storage.model_cache import ModelCache


def _model(size: int, seed: int) -> tuple[bytes, str]:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32)
    return data, hashlib.sha256(data).hexdigest()


def _store(cache: ModelCache, data: bytes, sha: str) -> None:
    cache.store(sha, len(data), [data[i : i + 1000] for i in range(0, len(data), 1000)])


def test_least_recently_used_model_is_evicted_at_the_limit(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=10_000, lease_s=0)  # no lease: only LRU order decides
    models = [_model(3_200, seed) for seed in range(3)]
    for i, (data, sha) in enumerate(models):
        _store(cache, data, sha)
        os.utime(cache.path(sha), (time.time() - 100 + i, time.time() - 100 + i))  # distinct, ordered ages
    cache.use(models[0][1])  # model 0 is now the most recently used
    data, sha = _model(3_200, 99)
    _store(cache, data, sha)
    assert cache.has(models[1][1]) is None, "the least recently used model should have been evicted"
    assert cache.has(models[0][1]) == 3_200 and cache.has(models[2][1]) == 3_200 and cache.has(sha) == 3_200
    assert cache.total_bytes() <= 10_000


def test_model_in_use_by_a_job_is_never_evicted(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=7_000, lease_s=0)  # no lease: only the pin keeps it
    old_data, old_sha = _model(3_200, 1)
    _store(cache, old_data, old_sha)
    os.utime(cache.path(old_sha), (1, 1))
    cache.pin(old_sha)
    for seed in (2, 3):
        data, sha = _model(3_200, seed)
        _store(cache, data, sha)
    assert cache.has(old_sha) == 3_200


def test_mismatched_bytes_are_discarded_not_cached(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    data, sha = _model(3_200, 5)
    with pytest.raises(UploadCorrupt):
        cache.store(sha, len(data), [data[:-1] + b"x"])
    assert cache.has(sha) is None and not any((tmp_path / ".incoming").iterdir())


def test_oversized_and_non_hash_names_are_refused(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, max_model_bytes=1_000)
    data, sha = _model(3_200, 6)
    with pytest.raises(ModelTooLarge):
        cache.store(sha, len(data), [data])
    with pytest.raises(InvalidInput):
        cache.path("../../etc/passwd")


def test_model_just_uploaded_is_kept_for_its_profile_and_the_newcomer_refused(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=7_000)
    first, second, third = (_model(3_200, seed) for seed in (7, 8, 9))
    _store(cache, *first)
    _store(cache, *second)

    with pytest.raises(ModelTooLarge) as caught:
        _store(cache, *third)

    assert "just uploaded" in str(caught.value) and "\n" not in str(caught.value)
    assert cache.has(first[1]) == 3_200 and cache.has(second[1]) == 3_200 and cache.has(third[1]) is None


def test_has_model_confirmation_keeps_a_cached_model_from_eviction(tmp_path: Path) -> None:
    old_data, old_sha = _model(3_200, 10)
    (tmp_path / old_sha).write_bytes(old_data)  # left by an earlier agent run: no lease
    os.utime(tmp_path / old_sha, (1, 1))
    leasing = ModelCache(tmp_path, limit_bytes=7_000)

    assert leasing.has(old_sha, lease=True) == 3_200
    for seed in (11, 12):
        data, sha = _model(3_200, seed)
        with pytest.raises(ModelTooLarge) if seed == 12 else contextlib.nullcontext():
            _store(leasing, data, sha)

    assert leasing.has(old_sha) == 3_200, "the confirmed model was evicted before its Profile"


def test_upload_of_a_cached_model_ends_without_reading_the_stream(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    data, sha = _model(3_200, 13)
    _store(cache, data, sha)
    read: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            read.append(1)
            yield b"x" * 1000

    result = cache.store(sha, len(data), endless())

    assert result.already_present and result.received_bytes == 0 and read == []


# Limits at their edges and the words of each refusal (issue 18: mutation testing found them unchecked).
def test_a_model_of_exactly_the_size_limit_is_stored_and_one_a_little_larger_refused(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, max_model_bytes=3_200)
    data, sha = _model(3_200, seed=1)
    big, big_sha = _model(3_232, seed=2)

    result = cache.store(sha, len(data), [data])

    assert (result.sha256, result.received_bytes, result.already_present) == (sha, 3_200, False)
    assert cache.path(sha).read_bytes() == data
    with pytest.raises(ModelTooLarge, match=r"^model is 0\.0 MB, this agent accepts at most 0\.0 MB \(agent serve"):
        cache.store(big_sha, len(big), [big])
    again = cache.store(sha, len(data), [])
    assert (again.sha256, again.received_bytes, again.already_present) == (sha, 0, True)


def test_held_models_fill_the_limit_exactly_and_not_one_byte_beyond(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=9_984, lease_s=3600)  # every upload stays leased
    held, held_sha = _model(3_200, seed=3)
    fits, fits_sha = _model(6_784, seed=4)  # 3 200 + 6 784 = 9 984: exactly the limit
    over, over_sha = _model(6_816, seed=5)  # 3 200 + 6 816 = 10 016
    _store(cache, held, held_sha)

    with pytest.raises(ModelTooLarge) as refused:
        _store(cache, over, over_sha)
    _store(cache, fits, fits_sha)

    assert str(refused.value) == (
        "no room in the agent's model cache for a 0.0 MB model: limit 0.0 MB, 0.0 MB held by models in use or"
        " just uploaded, 0.0 MB by uploads in progress (agent serve --cache-limit-mb)"
    )
    assert cache.has(held_sha) == 3_200 and cache.has(fits_sha) == 6_784 and cache.has(over_sha) is None


def test_a_model_pinned_by_two_jobs_stays_until_both_unpin_it(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=7_000, lease_s=0)
    first, first_sha = _model(3_200, seed=6)
    _store(cache, first, first_sha)
    cache.pin(first_sha)
    cache.pin(first_sha)
    cache.unpin(first_sha)

    second, second_sha = _model(3_200, seed=7)
    third, third_sha = _model(3_200, seed=8)
    _store(cache, second, second_sha)
    _store(cache, third, third_sha)  # evicts the unpinned second model, not the first
    assert cache.has(first_sha) == 3_200 and cache.has(second_sha) is None

    cache.unpin(first_sha)  # the last job let go: now it is the least recently used one
    fourth, fourth_sha = _model(3_200, seed=9)
    _store(cache, fourth, fourth_sha)
    assert cache.has(first_sha) is None and cache.has(third_sha) == 3_200


def test_files_that_are_not_models_are_neither_counted_nor_evicted(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=7_000, lease_s=0)
    (tmp_path / "README").write_bytes(b"x" * 5_000)
    data, sha = _model(3_200, seed=10)
    other, other_sha = _model(3_200, seed=11)

    _store(cache, data, sha)
    _store(cache, other, other_sha)

    assert cache.total_bytes() == 6_400
    assert (tmp_path / "README").read_bytes() == b"x" * 5_000


def test_using_a_model_that_is_not_cached_names_it_and_a_corrupt_upload_names_both_hashes(tmp_path: Path) -> None:
    from agent.errors import ModelNotFound

    cache = ModelCache(tmp_path)
    data, sha = _model(3_200, seed=12)
    wrong = hashlib.sha256(data[:-1] + b"!").hexdigest()

    with pytest.raises(ModelNotFound, match=f"^model {sha[:12]} is not in this agent's cache: upload it first$"):
        cache.use(sha)
    with pytest.raises(UploadCorrupt) as corrupt:
        cache.store(wrong, len(data), [data])
    assert str(corrupt.value) == f"uploaded bytes hash to {sha[:12]}, not the announced {wrong[:12]}: discarded"
    assert cache.has(wrong) is None and list((tmp_path / ".incoming").iterdir()) == []


def test_unpacks_cut_off_by_a_crash_are_cleared_when_the_cache_opens(tmp_path: Path) -> None:
    stale = tmp_path / ".unpacked" / ".tmp-0123"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "weights.bin").write_bytes(b"half")
    kept = tmp_path / ".unpacked" / ("a" * 64)
    kept.mkdir()

    ModelCache(tmp_path)

    assert not stale.exists() and kept.is_dir()


def test_unpinning_a_model_no_job_pinned_changes_nothing(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=7_000, lease_s=0)
    data, sha = _model(3_200, seed=13)
    _store(cache, data, sha)

    cache.unpin(sha)  # e.g. a job cancelled before it pinned anything
    cache.pin(sha)
    cache.unpin(sha)
    cache.unpin(sha)

    other, other_sha = _model(3_200, seed=14)
    third, third_sha = _model(3_200, seed=15)
    _store(cache, other, other_sha)
    _store(cache, third, third_sha)
    assert cache.has(sha) is None  # not held: evicted first


def test_eviction_follows_last_use_not_names(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=7_000, lease_s=0)
    models = sorted((_model(3_200, seed) for seed in (16, 17)), key=lambda m: m[1])  # by name
    for data, sha in models:
        _store(cache, data, sha)
    (_, first_by_name), (_, second_by_name) = models
    now = time.time()
    os.utime(cache.path(first_by_name), (now, now))  # used just now
    os.utime(cache.path(second_by_name), (now - 100, now - 100))  # used long ago

    newcomer, newcomer_sha = _model(3_200, seed=18)
    _store(cache, newcomer, newcomer_sha)

    assert cache.has(second_by_name) is None and cache.has(first_by_name) == 3_200


def test_asking_whether_a_model_is_cached_does_not_lease_it_unless_told(tmp_path: Path) -> None:
    data, sha = _model(3_200, seed=19)
    _store(ModelCache(tmp_path, lease_s=0), data, sha)  # cached by an earlier agent run, no lease now
    cache = ModelCache(tmp_path, limit_bytes=7_000, lease_s=3600)

    assert cache.has(sha) == 3_200  # a plain question: no lease
    for seed in (20, 21):  # two uploads, each leased; the first model is the one to make room
        other, other_sha = _model(3_200, seed=seed)
        _store(cache, other, other_sha)
    assert cache.has(sha) is None


def test_uploading_a_cached_model_again_leases_it_for_its_profile(tmp_path: Path) -> None:
    data, sha = _model(3_200, seed=23)
    _store(ModelCache(tmp_path, lease_s=0), data, sha)
    cache = ModelCache(tmp_path, limit_bytes=7_000, lease_s=3600)

    assert cache.store(sha, len(data), []).already_present
    other, other_sha = _model(3_200, seed=24)
    _store(cache, other, other_sha)
    third, third_sha = _model(3_200, seed=25)
    with pytest.raises(ModelTooLarge):  # both are leased now
        _store(cache, third, third_sha)
    assert cache.has(sha) == 3_200


def test_a_genai_tar_unpacks_once_and_two_models_unpack_side_by_side(tmp_path: Path) -> None:
    from host.prepare.genai_pack import pack
    from tests.genai_model import write_genai_dir

    cache = ModelCache(tmp_path / "cache", disk_reserve_bytes=0)
    shas = []
    for seed in (0, 1):
        tar = pack(write_genai_dir(tmp_path / f"model{seed}", seed=seed), tmp_path / f"packed{seed}").read_bytes()
        sha = hashlib.sha256(tar).hexdigest()
        cache.store(sha, len(tar), [tar])
        shas.append(sha)

    first = cache.unpacked(shas[0])
    (first / "left-by-test").touch()  # gone if the directory is unpacked again
    second = cache.unpacked(shas[1])

    assert first == tmp_path / "cache" / ".unpacked" / shas[0] and second.parent == first.parent
    assert cache.unpacked(shas[0]) == first and (first / "left-by-test").exists()  # not unpacked again
    assert sorted(p.name for p in first.parent.iterdir()) == sorted(shas)  # no scratch left behind


def test_an_unpack_left_unfinished_is_done_again(tmp_path: Path) -> None:
    from host.prepare.genai_pack import pack
    from tests.genai_model import write_genai_dir

    cache = ModelCache(tmp_path / "cache", disk_reserve_bytes=0)
    tar = pack(write_genai_dir(tmp_path / "model"), tmp_path / "packed").read_bytes()
    sha = hashlib.sha256(tar).hexdigest()
    cache.store(sha, len(tar), [tar])
    target = cache.unpacked(sha)
    files = sorted(p.name for p in target.iterdir())
    (target / ".complete").unlink()  # as if the agent died before it marked the unpack complete
    (target / "model.onnx").write_bytes(b"half")

    assert cache.unpacked(sha) == target
    assert sorted(p.name for p in target.iterdir()) == files and (target / "model.onnx").stat().st_size > 4


def test_eviction_removes_the_oldest_until_the_upload_fits_exactly(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=9_600, lease_s=0)
    models = [_model(3_200, seed) for seed in range(3)]  # oldest first
    for i, (data, sha) in enumerate(models):
        _store(cache, data, sha)
        os.utime(cache.path(sha), (time.time() - 100 + i, time.time() - 100 + i))
    data, sha = _model(6_400, 7)

    _store(cache, data, sha)

    # 3 x 3 200 + 6 400 is over 9 600: the two oldest go, the newest stays, exactly at the limit.
    assert [cache.has(s) for _, s in models] == [None, None, 3_200] and cache.has(sha) == 6_400
    assert cache.total_bytes() == 9_600


def test_every_held_model_counts_against_the_limit_and_the_refusal_says_how_much(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=998_400, lease_s=3600, disk_reserve_bytes=0)  # uploads stay leased
    for seed in (1, 2):
        _store(cache, *_model(320_000, seed))
    data, sha = _model(360_000, 3)  # 640 000 held + 360 000 = 1 000 000

    with pytest.raises(ModelTooLarge) as refused:
        _store(cache, data, sha)

    assert str(refused.value) == (
        "no room in the agent's model cache for a 0.4 MB model: limit 1.0 MB, 0.6 MB held by models in use or"
        " just uploaded, 0.0 MB by uploads in progress (agent serve --cache-limit-mb)"
    )


def test_an_upload_longer_or_shorter_than_announced_is_refused_saying_which(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    data, sha = _model(3_200, 5)

    with pytest.raises(UploadCorrupt) as longer:
        cache.store(sha, 3_199, [data])
    with pytest.raises(UploadCorrupt) as shorter:
        cache.store(sha, 3_200, [data[:1_000]])

    assert str(longer.value) == "upload sent more than the announced 3199 bytes"
    assert str(shorter.value) == "upload ended after 1000 of 3200 bytes"
    assert cache.has(sha) is None and list((tmp_path / ".incoming").iterdir()) == []


def test_a_name_that_is_not_a_sha256_is_quoted_in_the_refusal_up_to_80_characters(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    name = "../" + "x" * 200

    with pytest.raises(InvalidInput) as refused:
        cache.path(name)

    assert str(refused.value) == f"'{name[:80]}' is not a sha256 (64 lower-case hex digits)"


def test_a_leftover_the_cache_cannot_clear_does_not_stop_the_agent(tmp_path: Path) -> None:
    leftover = tmp_path / ".unpacked" / ".tmp-file"  # not a directory: rmtree refuses it
    leftover.parent.mkdir()
    leftover.write_bytes(b"?")
    data, sha = _model(3_200, seed=40)

    cache = ModelCache(tmp_path)
    _store(cache, data, sha)

    assert cache.has(sha) == 3_200


def _old_unheld_models(cache: ModelCache, seeds: tuple[int, ...], size: int) -> list[str]:
    """Models cached by an earlier agent run (no lease), oldest first."""
    shas = []
    for age, seed in enumerate(seeds):
        data, sha = _model(size, seed)
        _store(ModelCache(cache.directory, lease_s=0, disk_reserve_bytes=0), data, sha)
        then = time.time() - 1000 + age
        os.utime(cache.path(sha), (then, then))
        shas.append(sha)
    return shas


def test_eviction_passes_over_a_leased_model_to_the_next_oldest(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=9_600, lease_s=3600, disk_reserve_bytes=0)
    oldest, middle, newest = _old_unheld_models(cache, (41, 42, 43), 3_200)
    assert cache.has(oldest, lease=True) == 3_200  # a host just asked: its Profile follows

    _store(cache, *_model(3_200, seed=44))

    assert cache.has(oldest) == 3_200 and cache.has(middle) is None and cache.has(newest) == 3_200


def test_an_upload_finishing_while_another_is_in_flight_leaves_room_for_both(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, limit_bytes=9_600, lease_s=0, disk_reserve_bytes=0)
    oldest, newest = _old_unheld_models(cache, (45, 46), 3_200)
    slow, slow_sha = _model(3_200, seed=47)
    fast, fast_sha = _model(3_200, seed=48)
    seen_mid_upload: list[object] = []

    def slow_chunks() -> Iterator[bytes]:
        yield slow[:1_600]
        _store(cache, fast, fast_sha)  # a second host's upload completes meanwhile
        seen_mid_upload.extend([cache.has(oldest), cache.has(newest), cache.has(fast_sha)])
        yield slow[1_600:]

    cache.store(slow_sha, len(slow), slow_chunks())

    assert seen_mid_upload == [None, 3_200, 3_200]  # 2 cached + 1 stored + 1 in flight fit 9 600 only so
    assert cache.has(slow_sha) == 3_200 and cache.total_bytes() == 9_600


def test_a_job_starting_on_the_last_evictable_model_mid_upload_fails_the_upload_with_the_reason(
    tmp_path: Path,
) -> None:
    cache = ModelCache(tmp_path, limit_bytes=1_500_000, lease_s=0, disk_reserve_bytes=0)
    (cached,) = _old_unheld_models(cache, (49,), 1_000_000)
    data, sha = _model(1_000_000, seed=50)

    def chunks() -> Iterator[bytes]:
        yield data[:500_000]
        cache.pin(cached)  # a job starts on the cached model: it can no longer make room
        yield data[500_000:]

    with pytest.raises(ModelTooLarge) as refused:
        cache.store(sha, len(data), chunks())

    assert str(refused.value) == (
        "no room in the agent's model cache for a 1.0 MB model: limit 1.5 MB, the rest held by models in use,"
        " just uploaded or in flight: upload discarded"
    )
    assert cache.has(cached) == 1_000_000 and cache.has(sha) is None
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_evicting_a_genai_tar_removes_its_unpacked_directory(tmp_path: Path) -> None:
    from host.prepare.genai_pack import pack
    from tests.genai_model import write_genai_dir

    cache = ModelCache(tmp_path / "cache", lease_s=0, disk_reserve_bytes=0)
    tar = pack(write_genai_dir(tmp_path / "model"), tmp_path / "packed").read_bytes()
    sha = hashlib.sha256(tar).hexdigest()
    cache.store(sha, len(tar), [tar])
    unpacked = cache.unpacked(sha)
    cache.limit_bytes = cache.total_bytes() + 3_200  # the tar and what it unpacked to (both count), plus one model

    _store(cache, *_model(3_200, seed=51))  # fits beside the tar
    assert unpacked.is_dir()
    os.utime(cache.path(sha), (time.time() - 1000, time.time() - 1000))
    _store(cache, *_model(3_200, seed=52))  # the tar is the oldest: it goes

    assert cache.has(sha) is None and not unpacked.exists()


def test_a_tar_that_does_not_unpack_leaves_no_scratch_directory(tmp_path: Path) -> None:
    from agent.errors import InvalidModel

    cache = ModelCache(tmp_path, disk_reserve_bytes=0)
    data, sha = _model(3_200, seed=53)  # not a tar at all
    _store(cache, data, sha)

    with pytest.raises(InvalidModel):
        cache.unpacked(sha)

    assert list((tmp_path / ".unpacked").iterdir()) == []


class _Disk:
    """shutil.disk_usage as the cache sees it: a disk with exactly `free` bytes free."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, path: object) -> tuple[int, int, int]:
        import shutil

        return shutil._ntuple_diskusage(10**12, 10**12 - self.free, self.free)  # type: ignore[attr-defined]


def test_an_upload_that_leaves_exactly_the_reserve_free_is_taken_and_one_byte_more_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserve = 1_000_000
    data, sha = _model(3_200, seed=54)
    cache = ModelCache(tmp_path, disk_reserve_bytes=reserve)
    disk = _Disk(free=reserve + 3_200 - 1)
    monkeypatch.setattr("agent.storage.model_cache.shutil.disk_usage", disk)

    with pytest.raises(ModelTooLarge) as refused:
        _store(cache, data, sha)
    disk.free += 1  # upload + reserve == free: exactly enough
    _store(cache, data, sha)

    assert str(refused.value) == (
        "not enough free disk on the agent for a 0.0 MB model: 1.0 MB free, 0.0 MB promised to uploads in"
        " progress, 1.0 MB kept free"
    )
    assert cache.has(sha) == 3_200


def test_disk_taken_by_something_else_mid_upload_stops_it_at_the_reserve_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserve = 1_000_000
    cache = ModelCache(tmp_path, disk_reserve_bytes=reserve)
    disk = _Disk(free=reserve + 3_200)
    monkeypatch.setattr("agent.storage.model_cache.shutil.disk_usage", disk)

    def chunks(data: bytes, free_then: int) -> Iterator[bytes]:
        yield data[:1_000]
        disk.free = free_then  # another program wrote to the disk meanwhile
        yield data[1_000:2_000]  # checked here: 1 200 bytes still to come
        yield data[2_000:]

    kept, kept_sha = _model(3_200, seed=55)
    cache.store(kept_sha, len(kept), chunks(kept, reserve + 1_200))  # exactly enough left for the rest
    disk.free = reserve + 3_200
    lost, lost_sha = _model(3_200, seed=56)
    with pytest.raises(ModelTooLarge) as refused:
        cache.store(lost_sha, len(lost), chunks(lost, reserve + 1_199))

    assert cache.has(kept_sha) == 3_200 and cache.has(lost_sha) is None
    assert str(refused.value).startswith("the agent's disk filled up after 0.0 MB of a 0.0 MB model")
