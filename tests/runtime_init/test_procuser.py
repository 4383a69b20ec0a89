"""runtime.procuser: the group-list rule every front end (CRI, Docker API) shares."""

from __future__ import annotations

import pytest

from runtime.procuser import ProcessUser, process_user, user_string
from runtime.spec import UserNotFound
from tests.fixtures.image_defs import GROUPS_GROUP, GROUPS_PASSWD


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(GROUPS_PASSWD)
    (tmp_path / "etc/group").write_text(GROUPS_GROUP)
    return str(tmp_path)


@pytest.mark.parametrize("user, extra, want", [
    ("", [], ProcessUser(0, 0, [0, 10])),
    ("", [1, 1234], ProcessUser(0, 0, [0, 10, 1, 1234])),
    ("1234", [], ProcessUser(1234, 0, [0])),
    ("1234:1234", [], ProcessUser(1234, 1234, [1234])),
    ("1234", ["1234"], ProcessUser(1234, 0, [0, 1234])),
    ("daemon", [], ProcessUser(1, 1, [1])),
    ("daemon", [1234, 1, "wheel"], ProcessUser(1, 1, [1, 1234, 10])),
    ("root:daemon", [], ProcessUser(0, 1, [1, 10])),
])
def test_primary_gid_memberships_and_extras(root, user, extra, want):
    assert process_user(root, user, extra) == want


def test_strict_policy_skips_image_memberships(root):
    assert process_user(root, "root", [1234], image_groups=False) == ProcessUser(0, 0, [0, 1234])


def test_unknown_group_name_and_bad_gid(root):
    with pytest.raises(UserNotFound, match="unable to find group video"):
        process_user(root, "root", ["video"])
    with pytest.raises(ValueError, match="not a valid gid"):
        process_user(root, "root", [-1])


def test_user_string_follows_containerd():
    assert user_string("berth") == "berth"
    assert user_string("berth", uid=5) == "5"
    assert user_string("berth", uid=5, username="daemon") == "daemon"
    assert user_string("berth:wheel", uid=5, gid=7) == "5:7"
    assert user_string("", uid=0, gid=3) == "0:3"
    with pytest.raises(ValueError):
        user_string("", gid=3)
