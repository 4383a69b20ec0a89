"""A Docker container outlives berthd as a CRI one does, and its restart policy holds."""

from __future__ import annotations

import contextlib
import os
import signal

import docker

from proto import api_pb2 as pb
from tests.fixtures.waits import until


def test_survives_berthd_restart_and_policy_holds(berthd_fn, e2e_images):
    d = berthd_fn
    ref = e2e_images["busybox"].ref
    with contextlib.closing(docker.DockerClient(base_url=f"unix://{d.docker_socket}",
                                                timeout=60)) as cli:
        cli.images.pull(ref)
        keep = cli.containers.run(ref, ["sleep", "300"], name="keep", detach=True)
        again = cli.containers.run(ref, ["sleep", "300"], name="again", detach=True,
                                   restart_policy={"Name": "always"})
        pid = cli.api.inspect_container(again.id)["State"]["Pid"]
    d.kill()  # a crash: the monitor keeps both containers running
    os.kill(pid, signal.SIGKILL)  # and one exits while nobody watches
    d.start()
    with contextlib.closing(docker.DockerClient(base_url=f"unix://{d.docker_socket}",
                                                timeout=60)) as cli:
        assert cli.containers.get("keep").status == "running"
        until(lambda: cli.api.inspect_container("again")["RestartCount"] == 1)
        until(lambda: cli.containers.get("again").status == "running")
        # the image is shared: CRI sees the image pulled through Docker, not the containers
        cri = d.client()
        assert any(ref in i.repo_tags for i in cri.image.ListImages(
            pb.ListImagesRequest()).images)
        assert not cri.runtime.ListContainers(pb.ListContainersRequest()).containers
        assert not cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
        for c in (keep, again):
            cli.api.remove_container(c.id, force=True)
