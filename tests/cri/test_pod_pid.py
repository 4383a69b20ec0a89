"""Pod-wide pid namespace: a reaping pid 1 that only pods asking for one pay for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime import podpid
from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import sandbox_config
from tests.fixtures.hostclean import pids_with_arg
from tests.fixtures.images import PushedImage
from tests.fixtures.waits import until

pytestmark = pytest.mark.timeout(120)


def test_shared_pid_pod_reaps_orphans_and_cleans_up(berthd: Berthd,
                                                    e2e_images: dict[str, PushedImage],
                                                    tmp_path):
    cli = berthd.client()
    pb = cli.pb
    ref = e2e_images["busybox"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
    shared = pb.NamespaceOption(pid=pb.POD)
    linux = pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=shared))
    cfg = sandbox_config(cli, "pidpod", str(tmp_path / "logs"), linux=linux)
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    pin = str(berthd.run_dir / "pods" / pod_id / "pid")
    assert len(pids_with_arg(pin)) == 1  # the detached unshare holding the init
    ccfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="a"), image=pb.ImageSpec(image=ref),
        command=["sleep", "600"], linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(namespace_options=shared)))
    cid = cli.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg), timeout=30).container_id
    cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)

    def sh(script: str) -> str:
        return cli.runtime.ExecSync(pb.ExecSyncRequest(
            container_id=cid, cmd=["sh", "-c", script], timeout=10), timeout=20).stdout.decode()

    assert sh("cat /proc/1/cmdline | tr '\\0' ' '").split()[-1:] == ["-P"]
    assert sh("cat /proc/1/comm").strip() == "catatonit"
    for _ in range(5):
        sh("(sleep 0.1 &) ; exit 0")  # each leaves an orphan behind
    until(lambda: sh("ps -o stat,args | grep -v '^Z' | grep -c '[s]leep 0[.]1' || true")
          .strip() == "0", 10, what="the orphans' exit")
    # they have exited: catatonit reaps each as it goes
    until(lambda: sh("ps -o stat | grep -c '^Z' || true").strip() == "0", 10, 0.2,
          what="no zombie left")
    cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
    assert pids_with_arg(pin) == []
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)


def test_missing_init_is_named_and_leaves_nothing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without catatonit on PATH the pod fails saying what to install, before creating anything."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(podpid.PidInitError, match="apt-get install catatonit"):
        asyncio.run(podpid.start(tmp_path / "pins"))
    assert not (tmp_path / "pins").exists()
