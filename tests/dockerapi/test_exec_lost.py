"""Execs whose monitor session breaks for good: berthd or the monitor dies under them.

Berth only: the fixture's dockerd is not restarted, and its analogue of the monitor (a
containerd shim per container) is not killed. dockerd also keeps exec records in memory
only, so an exec id is unknown after its restart, as with berthd (404)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.faults.test_monitor_kill import kill_monitor
from tests.fixtures.berthd import Berthd
from tests.fixtures.images import PushedImage
from tests.fixtures.waits import until
from tests.runtime_monitor.conftest import pid_alive

pytestmark = pytest.mark.timeout(180)



@pytest.fixture
def cli(berthd_fn: Berthd, e2e_images: dict[str, PushedImage]) -> Iterator[docker.APIClient]:
    api = docker.APIClient(base_url=f"unix://{berthd_fn.docker_socket}", timeout=60)
    api.pull(e2e_images["busybox"].ref)
    yield api
    api.close()


def _sleeper(api: docker.APIClient, ref: str) -> str:
    c = api.create_container(ref, ["sleep", "300"])
    api.start(c["Id"])
    return str(c["Id"])


def _ended(api: docker.APIClient, exec_id: str) -> dict[str, Any] | None:
    """The exec's inspect once it no longer runs."""
    info: dict[str, Any] = api.exec_inspect(exec_id)
    return None if info["Running"] else info


def test_exec_lost_with_the_monitor_is_not_null(berthd_fn, cli, e2e_images):
    """The monitor dies (its containers and their execs with it): nobody can know how the
    exec ended, so inspect says Running false and ExitCode 126, dockerd's code for an exec it
    could not follow to its end, never null (which the docker CLI shows as 0)."""
    cid = _sleeper(cli, e2e_images["busybox"].ref)
    detached = cli.exec_create(cid, ["sleep", "100"])["Id"]
    cli.exec_start(detached, detach=True)
    attached = cli.exec_create(cid, ["sh", "-c", "echo up; sleep 100"])["Id"]
    sock = cli.exec_start(attached, socket=True)
    with contextlib.closing(sock):
        sock._sock.settimeout(30)
        assert b"up" in sock._sock.recv(4096)
        assert cli.exec_inspect(detached)["Running"] is True
        kill_monitor(berthd_fn)
        for eid in (detached, attached):
            info = until(functools.partial(_ended, cli, eid))
            assert info["ExitCode"] == 126


def test_exec_after_berthd_crash_is_gone_and_killed(berthd_fn, cli, e2e_images):
    """berthd is SIGKILLed during an exec: its session with the monitor ends, so the monitor
    kills the process (an exec must not outlive its session), and the restarted berthd
    does not know the exec id (404), as dockerd forgets its execs on restart."""
    cid = _sleeper(cli, e2e_images["busybox"].ref)
    eid = cli.exec_create(cid, ["sleep", "100"])["Id"]
    cli.exec_start(eid, detach=True)
    pid = cli.exec_inspect(eid)["Pid"]
    assert pid > 0 and pid_alive(pid)
    berthd_fn.kill()
    until(lambda: not pid_alive(pid), 10)
    berthd_fn.start()
    api = docker.APIClient(base_url=f"unix://{berthd_fn.docker_socket}", timeout=60)
    with contextlib.closing(api):
        with pytest.raises(docker.errors.NotFound, match="No such exec instance"):
            api.exec_inspect(eid)
        assert api.inspect_container(cid)["State"]["Running"] is True
        api.remove_container(cid, force=True)
