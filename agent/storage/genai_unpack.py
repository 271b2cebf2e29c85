"""Unpacks a cached GenAI model tar into a directory, refusing anything that could escape it or fill the disk.

Sizes are never taken on trust: a sparse member (a 10 kB upload held a 1 GB one, issue 23.2) is refused, the
bytes actually written are counted against the cap, and every chunk is reported to the cache (`on_write`),
which holds the space against --cache-limit-mb and --disk-reserve-mb and may stop the unpack.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

from agent.errors import InvalidModel
from protos.genai_dir import MAX_FILES, GenAIDirError, check_model_dir, safe_member

_CHUNK_BYTES = 1024**2


def _check_member(member: tarfile.TarInfo) -> None:
    if member.isdir():
        return
    if not member.isfile():
        raise InvalidModel(f"GenAI model tar member '{member.name[:120]}' is not a regular file")
    if member.issparse():
        raise InvalidModel(
            f"GenAI model tar member '{member.name[:120]}' is a sparse file: refused (model files are never"
            " sparse, and one unpacks to far more than the upload held)"
        )


def unpacked_size(tar_path: Path, *, max_bytes: int) -> int:
    """What the tar's regular files add up to, from its headers, checked before a byte is written."""
    total = 0
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_FILES:
                    raise InvalidModel(f"GenAI model tar has more than {MAX_FILES} members")
                safe_member(member.name)
                _check_member(member)
                total += member.size if member.isfile() else 0
                if total > max_bytes:
                    raise InvalidModel(f"GenAI model unpacks to more than {max_bytes / 1e6:.1f} MB")
    except GenAIDirError as err:
        raise InvalidModel(str(err)) from err
    except tarfile.TarError as err:
        raise InvalidModel(f"the uploaded GenAI model is not a valid tar: {err}") from err
    return total


def unpack(tar_path: Path, target: Path, *, max_bytes: int, on_write: Callable[[int], None] | None = None) -> int:
    """Regular files and directories only, every name inside `target`, at most max_bytes written in all; then
    the directory must be a GenAI model (its config names files that are there). InvalidModel otherwise.
    Returns the bytes written; `on_write(n)` is called after each chunk of n bytes (it may raise to stop)."""
    target.mkdir(parents=True)
    written = 0
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_FILES:
                    raise InvalidModel(f"GenAI model tar has more than {MAX_FILES} members")
                name = safe_member(member.name)
                _check_member(member)
                if member.isdir():
                    (target / name).mkdir(parents=True, exist_ok=True)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    raise InvalidModel(f"GenAI model tar member '{member.name[:120]}' cannot be read")
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                with source, open(target / name, "xb") as out:  # "x": a repeated member is refused
                    while chunk := source.read(_CHUNK_BYTES):
                        written += len(chunk)  # counted as written, whatever the header said
                        if written > max_bytes:
                            raise InvalidModel(f"GenAI model unpacks to more than {max_bytes / 1e6:.1f} MB")
                        out.write(chunk)
                        if on_write is not None:
                            on_write(len(chunk))
        check_model_dir(target, "the GenAI model")
    except (GenAIDirError, FileExistsError) as err:
        raise InvalidModel(f"GenAI model: {err}" if isinstance(err, FileExistsError) else str(err)) from err
    except tarfile.TarError as err:
        raise InvalidModel(f"the uploaded GenAI model is not a valid tar: {err}") from err
    return written
