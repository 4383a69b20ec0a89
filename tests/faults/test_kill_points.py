"""SIGKILL berthd in the middle of an RPC; after restart every object is whole or gone."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import grpc
import pytest

from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import CriClient, remove_all_pods, run_container, sandbox_config
from tests.fixtures.images import PushedImage
from tests.images.ingest_probe import ingesting

pytestmark = pytest.mark.timeout(180)


def crash_during(d: Berthd, point: str, call) -> None:
    """Restart berthd with one failpoint armed, make the call, and see the daemon die."""
    d.env = {"BERTH_FAILPOINTS": point}
    d.restart()
    with pytest.raises(grpc.RpcError) as info:
        call(d.client())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert d.proc is not None
    d.proc.wait(timeout=20)
    d.env = {}
    d.start()


def leases(d: Berthd) -> list[str]:
    """IPs host-local still holds (files named by IP) in the fixture network's data dir."""
    return [p.name for p in (d.workdir / "ipam").rglob("*")
            if p.is_file() and p.name[0].isdigit()]


def pod_ids(cli: CriClient) -> list[str]:
    return [p.id for p in cli.runtime.ListPodSandbox(cli.pb.ListPodSandboxRequest(),
                                                     timeout=10).items]


@pytest.mark.parametrize("point", ["sandbox.after_namespaces", "sandbox.after_network"])
def test_kill_during_run_pod_sandbox(berthd_fn: Berthd, tmp_path: Path, point: str):
    cfg = sandbox_config(berthd_fn.client(), "crash", str(tmp_path / "logs"))
    crash_during(berthd_fn, point, lambda c: c.runtime.RunPodSandbox(
        c.pb.RunPodSandboxRequest(config=cfg), timeout=30))
    cli = berthd_fn.client()
    assert pod_ids(cli) == []
    assert leases(berthd_fn) == []
    assert not list((berthd_fn.run_dir / "pods").glob("*/*"))
    pod = cli.runtime.RunPodSandbox(cli.pb.RunPodSandboxRequest(config=cfg), timeout=30)
    assert pod.pod_sandbox_id


@pytest.mark.parametrize("point", ["container.after_rootfs", "container.after_monitor"])
def test_kill_during_create_container(berthd_fn: Berthd, e2e_images: dict[str, PushedImage],
                                      tmp_path: Path, point: str):
    cli = berthd_fn.client()
    pb = cli.pb
    img = e2e_images["busybox"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=img)), timeout=60)
    cfg = sandbox_config(cli, "crash", str(tmp_path / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"),
                              image=pb.ImageSpec(image=img), command=["sleep", "60"])
    crash_during(berthd_fn, point, lambda c: c.runtime.CreateContainer(
        c.pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg),
        timeout=30))
    cli = berthd_fn.client()
    assert cli.runtime.ListContainers(pb.ListContainersRequest(), timeout=10).containers == []
    assert not list((berthd_fn.state_dir / "bundles").glob("*"))
    cid = run_container(cli, pod_id, cfg, img, ["sleep", "60"], "c")
    assert cid
    remove_all_pods(cli)


@pytest.mark.parametrize("point", ["stop_pod.after_containers", "remove_pod.after_containers"])
def test_kill_during_stop_and_remove(berthd_fn: Berthd, e2e_images: dict[str, PushedImage],
                                     tmp_path: Path, point: str):
    cli = berthd_fn.client()
    pb = cli.pb
    cfg = sandbox_config(cli, "crash", str(tmp_path / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    run_container(cli, pod_id, cfg, e2e_images["busybox"].ref, ["sleep", "60"], "c")
    rpc = "StopPodSandbox" if point.startswith("stop") else "RemovePodSandbox"
    req = getattr(pb, f"{rpc}Request")(pod_sandbox_id=pod_id)
    crash_during(berthd_fn, point, lambda c: getattr(c.runtime, rpc)(req, timeout=30))
    cli = berthd_fn.client()
    assert pod_ids(cli) == [pod_id]  # still there, and removable
    cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
    assert pod_ids(cli) == []
    assert leases(berthd_fn) == []


def test_kill_during_pull(berthd_fn: Berthd, e2e_images: dict[str, PushedImage]):
    """Killed once the first blob bytes land: nothing half-pulled is ever listed."""
    cli = berthd_fn.client()
    pb = cli.pb
    ref = e2e_images["big"].ref
    ingest = berthd_fn.state_dir / "images" / "ingest"

    def pull() -> None:
        with contextlib.suppress(grpc.RpcError):  # the daemon dies under it
            cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)

    t = threading.Thread(target=pull)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ingesting(ingest, over=0):
        time.sleep(0.005)
    berthd_fn.kill()
    t.join(timeout=30)
    berthd_fn.start()
    cli = berthd_fn.client()
    assert cli.image.ListImages(pb.ListImagesRequest(), timeout=10).images == []
    got = cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
    assert got.image_ref == e2e_images["big"].config_digest
    cli.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=30)
