"""SIGKILL berthd in the middle of a Docker create; after restart nothing of it is left (the
anonymous volume it made included)."""

from __future__ import annotations

import contextlib
import time

import docker
import pytest
import requests

from tests.fixtures.berthd import Berthd
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)


def _client(d: Berthd) -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{d.docker_socket}", timeout=60)


@pytest.mark.parametrize("point", ["sandbox.after_network", "container.after_rootfs",
                                   "container.after_monitor"])
def test_kill_during_docker_create(berthd_fn: Berthd, e2e_images: dict[str, PushedImage],
                                   point: str):
    d = berthd_fn
    ref = e2e_images["busybox"].ref
    with contextlib.closing(_client(d)) as cli:
        cli.images.pull(ref)
    d.env = {"BERTH_FAILPOINTS": point}
    d.restart()
    with contextlib.closing(_client(d)) as cli, \
            pytest.raises((requests.ConnectionError, docker.errors.APIError)):
        cli.api.create_container(  # an anonymous volume (Config.Volumes) too
            ref, ["true"], name="doomed", ports=[8080], volumes=["/anon"],
            host_config=cli.api.create_host_config(port_bindings={8080: ("127.0.0.1", None)}))
    assert d.proc is not None
    d.proc.wait(timeout=20)
    d.env = {}
    d.start()
    with contextlib.closing(_client(d)) as cli:
        assert cli.containers.list(all=True) == []
        assert cli.volumes.list() == []
        deadline = time.monotonic() + 30
        while list((d.state_dir / "pods").glob("*")) or list((d.run_dir / "pods").glob("*/*")):
            assert time.monotonic() < deadline, "the Docker pod was not rolled back"
            time.sleep(0.2)
        assert not list((d.state_dir / "bundles").glob("*"))
        leases = [p.name for p in (d.workdir / "ipam").rglob("*")
                  if p.is_file() and p.name[0].isdigit()]
        assert leases == []
        assert cli.containers.run(ref, ["echo", "ok"], name="after", remove=True) == b"ok\n"
