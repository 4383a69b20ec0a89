"""Supplementary groups inside a container: the primary gid is always in setgroups' list."""

from __future__ import annotations

import pytest

from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import sandbox_config
from tests.fixtures.image_defs import GROUPS_ID_CASES
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)
MAIN = "id > /tmp/id.new && mv /tmp/id.new /tmp/id && exec sleep 600"


def test_id_groups_match_runc(berthd: Berthd, e2e_images: dict[str, PushedImage], tmp_path):
    """Issue 21's seven `id` lines plus runAsGroup, on one pod with one container per case."""
    cli = berthd.client()
    pb = cli.pb
    ref = e2e_images["groups"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
    cfg = sandbox_config(cli, "groups", str(tmp_path / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    try:
        got = {}
        for i, (uid, gid, name, extra, _) in enumerate(GROUPS_ID_CASES):
            sec = pb.LinuxContainerSecurityContext(run_as_username=name,
                                                   supplemental_groups=extra)
            if uid is not None:
                sec.run_as_user.value = uid
            if gid is not None:
                sec.run_as_group.value = gid
            ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=f"g{i}"),
                                      image=pb.ImageSpec(image=ref), command=["sh", "-c", MAIN],
                                      linux=pb.LinuxContainerConfig(security_context=sec))
            cid = cli.runtime.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg), timeout=30).container_id
            cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
            out = cli.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["id"],
                                                          timeout=10), timeout=20)
            got[i] = out.stdout.decode().split("groups=")[-1].strip()
            # the container's own process got the same list as the exec (both from the spec)
            main = cli.runtime.ExecSync(pb.ExecSyncRequest(
                container_id=cid, cmd=["sh", "-c", "until [ -s /tmp/id ]; do sleep 0.1; done; "
                                       "cat /tmp/id"], timeout=10), timeout=20).stdout.decode()
            assert main.split("groups=")[-1].strip() == got[i], (i, main)
        assert got == {i: case[4] for i, case in enumerate(GROUPS_ID_CASES)}
    finally:
        cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
        cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                     timeout=30)
