"""Packs a GenAI model directory into a deterministic tar: the same files give the same bytes, hence sha256."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from protos.genai_dir import MAX_FILES, GenAIDirError, check_model_dir

#: Fixed metadata for every member: what varies between checkouts (mtime, owner, mode) must not change the hash.
_MTIME = 0
_MODE_FILE = 0o644
_MODE_DIR = 0o755


def default_pack_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeprof" / "genai"


def _members(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise GenAIDirError(f"{root}: '{path.relative_to(root)}' is a link; copy the file it points to instead")
        if path.is_file() or path.is_dir():
            found.append(path)
        if len(found) > MAX_FILES:
            raise GenAIDirError(f"{root} holds more than {MAX_FILES} files: not a GenAI model directory")
    return found


def pack(root: Path, out_dir: Path | None = None) -> Path:
    """The directory as <out_dir>/<name>.tar, sorted members with fixed mtime/uid/gid/mode (GenAIDirError if bad)."""
    check_model_dir(root, str(root))
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]  # one tar per source directory
    out = (out_dir or default_pack_dir()) / f"{where}-{root.resolve().name}.tar"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for path in _members(root):
                info = tarfile.TarInfo(path.relative_to(root).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = _MTIME, 0, 0, "", ""
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, _MODE_DIR
                    tar.addfile(info)
                    continue
                info.mode, info.size = _MODE_FILE, path.stat().st_size
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
        os.replace(tmp, out)  # atomic: a concurrent host never reads half a tar
    finally:
        tmp.unlink(missing_ok=True)
    return out
