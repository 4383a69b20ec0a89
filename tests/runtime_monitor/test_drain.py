"""cg.drain: kill everything in a cgroup, wait with a bound, and name what outlived it."""

from __future__ import annotations

import asyncio
import subprocess

from runtime import cgroups
from runtime.monitor import cg


def test_drain_kills_a_forking_process_tree_and_reports_stragglers(cgroup_parent):
    path = f"{cgroup_parent}/drain"
    cg.create(path, {})
    # the child forks a new sleep every 20 ms: a kill that does not freeze first can miss one
    proc = subprocess.Popen(["sh", "-c", "while :; do sleep 0.02; done"])
    try:
        cgroups.driver().add_pid(path, proc.pid)
        # with no time at all nothing is killed: the pids left come back, described for people
        left = asyncio.run(cg.drain(path, timeout=0))
        assert proc.pid in left
        assert f"pid {proc.pid} (sh, " in cg.describe(left)
        assert asyncio.run(cg.drain(path)) == []
        assert proc.wait(10) == -9
        assert cgroups.driver().pids(path) == []
    finally:
        proc.kill()
        proc.wait()
        cg.remove(path)


def test_drain_without_a_cgroup_is_a_no_op(cgroup_parent):
    assert asyncio.run(cg.drain(f"{cgroup_parent}/never-made")) == []
    assert asyncio.run(cg.drain("")) == []
