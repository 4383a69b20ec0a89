"""Pod hostname: HOSTNAME in every container, host-UTS pods refused a name of their own."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import pytest

from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import CriClient, sandbox_config
from tests.fixtures.hostclean import pids_with_arg
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)


def _host_net(pb) -> object:
    return pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=pb.NamespaceOption(network=pb.NODE)))


def _env_of(cli: CriClient, pod_id: str, cfg, ref: str, name: str, **extra) -> dict[str, str]:
    pb = cli.pb
    ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                              image=pb.ImageSpec(image=ref), command=["sleep", "600"], **extra)
    cid = cli.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg), timeout=30).container_id
    cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
    out = cli.runtime.ExecSync(pb.ExecSyncRequest(
        container_id=cid, cmd=["cat", "/proc/1/environ", "/proc/self/environ"], timeout=10),
        timeout=20).stdout.decode()
    envs = [dict(e.partition("=")[::2] for e in block.split("\0") if e)
            for block in out.split("\0\0")]
    return {k: v for k, v in envs[0].items() if k == "HOSTNAME"} | {
        "exec:" + k: v for k, v in envs[-1].items() if k == "HOSTNAME"}


def _remove(cli: CriClient, pod_id: str) -> None:
    pb = cli.pb
    cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)


@pytest.fixture
def ref(berthd: Berthd, e2e_images: dict[str, PushedImage]) -> str:
    cli = berthd.client()
    image = e2e_images["busybox"].ref
    cli.image.PullImage(cli.pb.PullImageRequest(image=cli.pb.ImageSpec(image=image)), timeout=60)
    return image


def test_hostname_env_in_every_container(berthd: Berthd, ref: str, tmp_path: Path) -> None:
    """The pod's hostname (the node's for host network) unless the container sets its own."""
    cli = berthd.client()
    pb = cli.pb
    cfg = sandbox_config(cli, "hn", str(tmp_path / "logs"), hostname="pod-host-21")
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    try:
        assert _env_of(cli, pod_id, cfg, ref, "a") == {"HOSTNAME": "pod-host-21",
                                                      "exec:HOSTNAME": "pod-host-21"}
        own = _env_of(cli, pod_id, cfg, ref, "b", envs=[pb.KeyValue(key="HOSTNAME", value="x")])
        assert own == {"HOSTNAME": "x", "exec:HOSTNAME": "x"}
    finally:
        _remove(cli, pod_id)
    hcfg = sandbox_config(cli, "hn-host", str(tmp_path / "logs"), linux=_host_net(pb))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=hcfg), timeout=30)\
        .pod_sandbox_id
    try:
        node = socket.gethostname()
        assert _env_of(cli, pod_id, hcfg, ref, "c") == {"HOSTNAME": node, "exec:HOSTNAME": node}
    finally:
        _remove(cli, pod_id)


def test_host_uts_pod_cannot_have_its_own_hostname(berthd: Berthd, tmp_path: Path) -> None:
    """Refused up front with runc's reason, nothing created; the node's own name is fine."""
    cli = berthd.client()
    pb = cli.pb
    before = len(cli.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items)
    cfg = sandbox_config(cli, "hn-bad", str(tmp_path / "logs"), hostname="not-the-node-21",
                         linux=_host_net(pb))
    with pytest.raises(grpc.RpcError) as err:
        cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "without a private UTS namespace" in (err.value.details() or "")
    assert len(cli.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items) == before
    same = sandbox_config(cli, "hn-same", str(tmp_path / "logs"), hostname=socket.gethostname(),
                          linux=_host_net(pb))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=same), timeout=30)\
        .pod_sandbox_id
    _remove(cli, pod_id)


def test_pod_stopped_right_after_start_is_quick(berthd: Berthd, tmp_path: Path) -> None:
    """A host-network pod (no CNI step) with a pod pid namespace, stopped at once: its init
    used to miss the SIGTERM and every stop waited out podpid's 5 s bound."""
    cli = berthd.client()
    pb = cli.pb
    for i in range(3):
        cfg = sandbox_config(cli, f"quick{i}", str(tmp_path / "logs"), linux=_host_net(pb))
        pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
            .pod_sandbox_id
        pin = str(berthd.run_dir / "pods" / pod_id / "pid")
        began = time.monotonic()
        cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
        took = time.monotonic() - began
        assert pids_with_arg(pin) == []
        cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                     timeout=30)
        assert took < 4.5, f"stop {i} took {took:.1f} s (the old path always took 5 s)"
