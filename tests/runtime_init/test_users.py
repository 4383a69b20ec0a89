"""resolve_user reads the ROOTFS's passwd/group, never the host's, even through symlinks."""

from __future__ import annotations

import os

import pytest

from runtime.init import UserNotFound, resolve_user
from tests.runtime_init.conftest import GROUP, PASSWD


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


def test_by_name_and_uid(root):
    assert resolve_user(str(root), "alice") == (1000, 1000, [1000, 10, 29])
    assert resolve_user(str(root), "1001") == (1001, 1001, [1001, 10])
    assert resolve_user(str(root), 0) == (0, 0, [0])


def test_unknown_numeric_uid_gets_gid_0(root):
    assert resolve_user(str(root), 4321) == (4321, 0, [0])


def test_explicit_group(root):
    assert resolve_user(str(root), "bob:wheel") == (1001, 10, [10])
    assert resolve_user(str(root), "bob:77")[1] == 77


def test_unknown_name(root):
    with pytest.raises(UserNotFound, match="unable to find user carol"):
        resolve_user(str(root), "carol")


def test_symlinked_passwd_resolves_inside_rootfs(root):
    """An image whose /etc/passwd points at the host's must not read the host's file."""
    os.rename(root / "etc/passwd", root / "etc/real-passwd")
    os.symlink("/etc/real-passwd", root / "etc/passwd")
    os.rename(root / "etc/group", root / "etc/real-group")
    os.symlink("../../../../../../etc/real-group", root / "etc/group")  # climbs: stays in root
    assert resolve_user(str(root), "alice") == (1000, 1000, [1000, 10, 29])
