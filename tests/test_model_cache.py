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
from agent.model_cache import ModelCache


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
