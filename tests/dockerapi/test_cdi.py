"""CDI devices through the Docker API: DeviceRequests with the `cdi` driver (docker-py's
DeviceRequest; `docker run --device vendor.com/class=name` from Docker 25 on) give the container
the fake vendor's node, env and mount, and run its hooks; bad names and bad specs are a 400
naming the device and the file, with nothing created. Berth only: dockerd 20.10 has no CDI
(its 25.0 added it), and fails such a container at start with "could not select device
driver"."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.types import DeviceRequest

from tests.fixtures.cdi import KIND, cdi_berthd, fake_vendor, hook_calls
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cdi_docker(tmp_path_factory: pytest.TempPathFactory, registry: Registry,
               e2e_images) -> Iterator[tuple[docker.DockerClient, Path, str]]:
    root = Path(tmp_path_factory.mktemp("dcdi"))
    with cdi_berthd(root, registry) as daemon:
        client = docker.DockerClient(base_url=f"unix://{daemon.docker_socket}", timeout=120)
        ref = e2e_images["busybox"].ref
        client.images.pull(ref)
        try:
            yield client, root, ref
        finally:
            for c in client.containers.list(all=True):
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True)
            client.close()


def _cdi(*names: str) -> list[DeviceRequest]:
    return [DeviceRequest(driver="cdi", device_ids=list(names))]


def test_container_sees_node_env_mount_and_hooks_ran(cdi_docker) -> None:
    client, root, ref = cdi_docker
    fake_vendor(root)
    c = client.containers.run(ref, ["sleep", "600"], detach=True,
                              device_requests=_cdi(f"{KIND}=gpu0"))
    try:
        code, out = c.exec_run(["sh", "-c", "stat -c '%F %t:%T' /dev/fakegpu0; "
                                "echo $FAKE_VISIBLE_DEVICES $FAKE_DRIVER_VERSION; "
                                "cat /opt/fake/lib.txt"])
        assert code == 0, out
        assert out.decode().splitlines() == ["character special file 1:7", "0 1.2.3",
                                             "fake vendor library"]
        assert [h["status"] for h in hook_calls(root, c.id)] == ["creating"]
    finally:
        c.remove(force=True)
    assert [h["status"] for h in hook_calls(root, c.id)] == ["creating", "stopped"]


@pytest.mark.parametrize(("requests", "message"), [
    (_cdi(f"{KIND}=gpu9"), f"{KIND}=gpu9"),
    (_cdi("gpu0"), "not a fully qualified name"),
    ([DeviceRequest(count=-1, capabilities=[["gpu"]])],
     'could not select device driver "" with capabilities'),
])
def test_bad_device_is_400_with_nothing_created(cdi_docker, requests, message) -> None:
    client, root, ref = cdi_docker
    fake_vendor(root)
    before = len(client.containers.list(all=True))
    with pytest.raises(docker.errors.APIError) as err:
        client.containers.create(ref, ["true"], device_requests=requests)
    assert err.value.status_code == 400 and message in str(err.value.explanation)
    assert len(client.containers.list(all=True)) == before
