"""The agent's model cache: content addressed, verified, least-recently-used eviction at its limit."""

from __future__ import annotations

import hashlib
import os
import time
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
    cache = ModelCache(tmp_path, limit_bytes=10_000)
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
    cache = ModelCache(tmp_path, limit_bytes=7_000)
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
