"""agent/token_file.py: who besides the agent's user can read its token file, on real files and this
machine's real user and group databases."""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
from pathlib import Path

import pytest

from agent.token_file import TokenFileError, other_readers, read_token


def _token_file(tmp_path: Path, mode: int, text: str | None = None) -> Path:
    path = tmp_path / "agent.token"
    path.write_text(text if text is not None else secrets.token_urlsafe(32) + "\n")
    path.chmod(mode)
    return path


def _group_members(gid: int) -> set[str]:
    members = set(grp.getgrgid(gid).gr_mem)
    return members | {user.pw_name for user in pwd.getpwall() if user.pw_gid == gid}


def _user_alone_in_own_group() -> pwd.struct_passwd:
    """A user other than root whose primary group has no other member (a service user like `edgeprof`)."""
    for user in pwd.getpwall():
        try:
            alone = user.pw_uid != 0 and _group_members(user.pw_gid) == {user.pw_name}
        except KeyError:
            continue
        if alone:
            return user
    pytest.skip("no user here is alone in its primary group")


def _another_user(than: pwd.struct_passwd) -> pwd.struct_passwd:
    """Any user but root and `than`."""
    other = next((user for user in pwd.getpwall() if user.pw_uid not in (0, than.pw_uid)), None)
    if other is None:
        pytest.skip("needs a second user besides root")
    return other


def _shared_group(besides: set[str]) -> grp.struct_group:
    """A group with members other than `besides` and root."""
    for group in grp.getgrall():
        if _group_members(group.gr_gid) - besides - {"root"}:
            return group
    pytest.skip("no group here has members")


def test_private_token_file_is_read_without_warning(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o600)

    token, warning = read_token(path)

    assert token == path.read_text().strip()
    assert warning is None


def test_world_readable_token_file_is_warned_about(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o644)

    _token, warning = read_token(path)

    assert warning is not None
    assert "accessible by other users: every user" in warning and "mode 644" in warning and "chmod 600" in warning


def test_installers_layout_root_owned_and_readable_by_the_service_users_group_alone_is_private(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file root:GROUP ownership")
    service = _user_alone_in_own_group()
    path = _token_file(tmp_path, 0o640)
    os.chown(path, 0, service.pw_gid)

    assert other_readers(path.stat(), service.pw_uid) is None


def test_group_readable_token_file_whose_group_has_other_members_is_warned_about(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the file to another group")
    service = _user_alone_in_own_group()
    shared = _shared_group(besides={service.pw_name})
    path = _token_file(tmp_path, 0o640)
    os.chown(path, 0, shared.gr_gid)

    readers = other_readers(path.stat(), service.pw_uid)

    assert readers is not None and readers.startswith(f"group {shared.gr_name} (")


def test_the_same_file_is_private_to_its_groups_user_and_open_to_anyone_else(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file root:GROUP ownership")
    service = _user_alone_in_own_group()
    other = _another_user(service)
    path = _token_file(tmp_path, 0o640)
    os.chown(path, 0, service.pw_gid)

    readers = other_readers(path.stat(), other.pw_uid)

    assert readers == f"group {grp.getgrgid(service.pw_gid).gr_name} ({service.pw_name})"


def test_token_file_owned_by_another_user_is_warned_about(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    service = _user_alone_in_own_group()
    agent = _another_user(service)
    path = _token_file(tmp_path, 0o600)
    os.chown(path, service.pw_uid, service.pw_gid)

    readers = other_readers(path.stat(), agent.pw_uid)

    assert readers == f"its owner {service.pw_name}"


@pytest.mark.parametrize(("text", "problem"), [("short\n", "too short (5 chars)"), (None, "cannot read")])
def test_unusable_token_file_is_refused_in_one_line(tmp_path: Path, text: str | None, problem: str) -> None:
    path = _token_file(tmp_path, 0o600, text) if text is not None else tmp_path / "missing.token"

    with pytest.raises(TokenFileError, match=re.escape(problem)):
        read_token(path)
