"""`id` inside `docker run` with --user and --group-add: issue 21's table on every daemon."""

from __future__ import annotations

import pytest

from dockertest.harness import Daemon
from tests.fixtures.image_defs import GROUPS_ID_CASES


@pytest.mark.parametrize("case", range(len(GROUPS_ID_CASES)))
def test_id_groups(dk: Daemon, case: int) -> None:
    uid, gid, name, extra, want = GROUPS_ID_CASES[case]
    if uid is not None and gid is not None and not name:
        # `--user U:G` names the group: dockerd (runc) then leaves out the image's /etc/group
        # memberships, where CRI's runAsGroup (containerd) keeps them (`0:1` -> 1(daemon) here,
        # 1(daemon),10(wheel) there). Berth's Docker front end follows dockerd.
        want = want.split(",")[0] if want != "1234" else want
    ref = dk.images["groups"]
    dk.client.images.pull(ref)
    args = ["run", "--rm"]
    user = name or (str(uid) if uid is not None else "")
    if user and gid is not None:
        user += f":{gid}"
    if user:
        args += ["--user", user]
    for g in extra:
        args += ["--group-add", str(g)]
    out = dk.cli(*args, ref, "id").stdout
    assert out.split("groups=")[-1].strip() == want, out
