"""Unpacks a cached GenAI model tar into a directory, refusing anything that could escape it or fill the disk."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from agent.errors import InvalidModel
from protos.genai_dir import MAX_FILES, GenAIDirError, check_model_dir, safe_member


def unpack(tar_path: Path, target: Path, *, max_bytes: int) -> None:
    """Regular files and directories only, every name inside `target`, at most max_bytes in all; then the
    directory must be a GenAI model (its config names files that are there). InvalidModel otherwise."""
    target.mkdir(parents=True)
    total = 0
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_FILES:
                    raise InvalidModel(f"GenAI model tar has more than {MAX_FILES} members")
                name = safe_member(member.name)
                if member.isdir():
                    (target / name).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise InvalidModel(f"GenAI model tar member '{member.name[:120]}' is not a regular file")
                total += member.size
                if total > max_bytes:
                    raise InvalidModel(f"GenAI model unpacks to more than {max_bytes / 1e6:.1f} MB")
                source = tar.extractfile(member)
                if source is None:
                    raise InvalidModel(f"GenAI model tar member '{member.name[:120]}' cannot be read")
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                with source, open(target / name, "xb") as out:  # "x": a repeated member is refused
                    shutil.copyfileobj(source, out)
        check_model_dir(target, "the GenAI model")
    except (GenAIDirError, FileExistsError) as err:
        raise InvalidModel(f"GenAI model: {err}" if isinstance(err, FileExistsError) else str(err)) from err
    except tarfile.TarError as err:
        raise InvalidModel(f"the uploaded GenAI model is not a valid tar: {err}") from err
