"""`id` inside `docker run` with --user and --group-add: issue 21's table on every daemon.

One row differs from the CRI table: with an explicit group (`--user 0:1`) dockerd takes no
memberships from the image's /etc/group (libcontainer's GetExecUser keeps supplementary groups
for the implicit form only), where containerd's CRI keeps root's wheel. Berth's Docker API does
as dockerd, its CRI as containerd."""

from __future__ import annotations

import pytest

from dockertest.harness import Daemon
from tests.fixtures.image_defs import GROUPS_ID_CASES

DOCKER_WANT = {7: "1(daemon)"}  # --user 0:1: no /etc/group memberships with an explicit group


@pytest.mark.parametrize("case", range(len(GROUPS_ID_CASES)))
def test_id_groups(dk: Daemon, case: int) -> None:
    uid, gid, name, extra, want = GROUPS_ID_CASES[case]
    want = DOCKER_WANT.get(case, want)
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
