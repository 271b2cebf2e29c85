"""The agent's bearer-token file: read it, and say who besides the agent's own user could read it.

Anyone who can read the token can run code on every agent that shares it, so the agent warns when the
file is open to other users. Two layouts are private, and both are accepted without a warning:

- mode 0600 (or stricter), owned by the agent's user: a token a person keeps for an agent they run;
- mode 0640, owned by root, group = a group whose only member is the agent's user: what
  deploy/install-agent.sh writes (root:edgeprof 0640). The service can read its token but cannot
  change or chmod it, which it could if it owned the file; the same rule PostgreSQL applies to its
  server key (root-owned, group-readable is allowed).

A group-readable file whose group has anyone else in it (primary or supplementary members) is warned
about, as is any file other users can read.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

#: The fewest characters a token may have (the installer writes 43).
MIN_TOKEN_CHARS = 16


class TokenFileError(ValueError):
    """A token file that cannot be used: one line for the user."""


def read_token(path: Path) -> tuple[str, str | None]:
    """The token in `path`, and a warning when users other than this process's could read it (else None)."""
    path = path.expanduser()
    try:
        token = path.read_text().strip()
        info = path.stat()
    except OSError as err:
        raise TokenFileError(f"cannot read the token file {path}: {err.strerror}") from err
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(
            f"the token in {path} is too short ({len(token)} chars): use at least {MIN_TOKEN_CHARS} random characters"
        )
    readers = other_readers(info, os.geteuid())
    if readers is None:
        return token, None
    mode = stat.S_IMODE(info.st_mode)
    warning = (
        f"the token file {path} is accessible by other users: {readers} (mode {mode:03o}): chmod 600 {path}, "
        "or make it root-owned 0640 with a group that has no member but the agent's user"
    )
    return token, warning


def other_readers(info: os.stat_result, agent_uid: int) -> str | None:
    """Who besides the user `agent_uid` can read a file with this status, in words; None when no one can.

    root can read everything anyway and is not counted.
    """
    mode = stat.S_IMODE(info.st_mode)
    found: list[str] = []
    if info.st_uid not in (0, agent_uid) and mode & stat.S_IRUSR:
        found.append(f"its owner {_user_name(info.st_uid)}")
    if mode & 0o070:
        others = _group_members(info.st_gid) - {_user_name(agent_uid), _user_name(0)}
        if others:
            found.append(f"group {_group_name(info.st_gid)} ({', '.join(sorted(others))})")
    if mode & 0o007:
        found.append("every user")
    return "; ".join(found) or None


def _group_members(gid: int) -> set[str]:
    """Every user in group `gid`: listed as members, or having it as their primary group.

    A group with no entry here gets a placeholder member: nobody can tell who is in it.
    """
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return {f"unknown members of gid {gid}"}
    members.update(user.pw_name for user in pwd.getpwall() if user.pw_gid == gid)
    return members


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"
