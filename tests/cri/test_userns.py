"""User namespaces in Berth itself: what stays on the host, what is refused before any work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from runtime.propagation import mount_table
from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import sandbox_config
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(120)
HOST = 65536 * 77


def _ns(pb: Any) -> Any:
    ids = [pb.IDMapping(container_id=0, host_id=HOST, length=65536)]
    return pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER, userns_options=pb.UserNamespace(
        mode=pb.NamespaceMode.POD, uids=ids, gids=ids))


def _mounts_under(path: Path) -> list[str]:
    return [e.mount_point for e in mount_table() if e.mount_point.startswith(str(path) + "/")]


def test_userns_container_leaves_only_its_rootfs(berthd: Berthd, tmp_path: Path,
                                                 e2e_images: dict[str, PushedImage]) -> None:
    """No staged layer clone and no helper outlive the create; the upper dir is the root's."""
    cli = berthd.client()
    pb = cli.pb
    ref = e2e_images["layers"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
    cfg = sandbox_config(cli, "userns", str(tmp_path / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    try:
        ccfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="u"), image=pb.ImageSpec(image=ref),
            command=["sleep", "600"], linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(namespace_options=_ns(pb))))
        cid = cli.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg), timeout=30).container_id
        bundle = berthd.state_dir / "bundles" / cid
        assert _mounts_under(bundle) == [str(bundle / "rootfs")]
        assert not (bundle / "idmap").exists()
        st = os.stat(bundle / "upper")
        assert (st.st_uid, st.st_gid) == (HOST, HOST)
        assert berthd.proc is not None
        kids = Path(f"/proc/{berthd.proc.pid}/task/{berthd.proc.pid}/children").read_text()
        assert not [p for p in kids.split()
                    if Path(f"/proc/{p}/comm").read_text().strip() in ("unshare", "cat")]
        cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
        out = cli.runtime.ExecSync(pb.ExecSyncRequest(
            container_id=cid, cmd=["sh", "-c", "stat -c %u /home/berth; id -u"], timeout=10),
            timeout=20)
        assert out.stdout.decode().split() == ["1000", "0"]  # the image's owners, inside
        cli.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=30)
        assert not bundle.exists()
    finally:
        cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
        cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                     timeout=30)


def test_refused_userns_leaves_nothing(berthd: Berthd, tmp_path: Path,
                                       e2e_images: dict[str, PushedImage]) -> None:
    cli = berthd.client()
    pb = cli.pb
    ref = e2e_images["busybox"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
    cfg = sandbox_config(cli, "userns-bad", str(tmp_path / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    try:
        before = set(os.listdir(berthd.state_dir / "bundles"))
        ccfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="p"), image=pb.ImageSpec(image=ref),
            command=["sleep", "600"], linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    privileged=True, namespace_options=_ns(pb))))
        with pytest.raises(grpc.RpcError) as err:
            cli.runtime.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "privileged" in (err.value.details() or "")  # type: ignore[attr-defined]
        assert set(os.listdir(berthd.state_dir / "bundles")) == before
        assert not cli.runtime.ListContainers(pb.ListContainersRequest()).containers or all(
            c.pod_sandbox_id != pod_id for c in
            cli.runtime.ListContainers(pb.ListContainersRequest()).containers)
    finally:
        cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
        cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                     timeout=30)
