"""CDI devices through CRI: a fake vendor spec in berthd's private spec dirs maps a device node
the test made; the container sees the node, the env and the mount. Bad names and bad specs fail
CreateContainer with INVALID_ARGUMENT naming the device and the file, leaving nothing behind.
A real NVIDIA GPU is tried only where /dev/nvidia0 exists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fixtures.berthd import Berthd
from tests.fixtures.cdi import KIND, cdi_berthd, fake_vendor, hook_calls
from tests.fixtures.cri_client import CriClient, sandbox_config
from tests.fixtures.images import PushedImage
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.timeout(180)



@pytest.fixture(scope="module")
def cdi_env(tmp_path_factory: pytest.TempPathFactory,
            registry: Registry) -> Iterator[tuple[Berthd, Path]]:
    root = Path(tmp_path_factory.mktemp("cdi"))
    with cdi_berthd(root, registry) as daemon:
        yield daemon, root


@pytest.fixture(scope="module")
def pod(cdi_env: tuple[Berthd, Path], e2e_images: dict[str, PushedImage]
        ) -> Iterator[tuple[CriClient, str, Any, str]]:
    berthd, root = cdi_env
    cli = berthd.client()
    pb = cli.pb
    ref = e2e_images["busybox"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
    cfg = sandbox_config(cli, "cdi", str(root / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg),
                                       timeout=60).pod_sandbox_id
    yield cli, pod_id, cfg, ref
    cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)


def _create(cli: CriClient, pod_id: str, cfg: Any, ref: str, name: str,
            **extra: Any) -> str:
    pb = cli.pb
    ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                              image=pb.ImageSpec(image=ref), command=["sleep", "600"], **extra)
    return str(cli.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg), timeout=60).container_id)


def _sh(cli: CriClient, cid: str, script: str) -> str:
    pb = cli.pb
    r = cli.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script],
                                                timeout=20), timeout=30)
    assert r.exit_code == 0, r.stderr.decode()
    return r.stdout.decode()


@pytest.mark.parametrize("via", ["cdi_devices", "annotation"])
def test_container_sees_node_env_and_mount(cdi_env: tuple[Berthd, Path], pod: Any,
                                           via: str) -> None:
    _, root = cdi_env
    cli, pod_id, cfg, ref = pod
    pb = cli.pb
    fake_vendor(root)
    name = f"{KIND}=gpu0"
    extra: dict[str, Any] = (
        {"CDI_devices": [pb.CDIDevice(name=name)]} if via == "cdi_devices"
        else {"annotations": {"cdi.k8s.io/test": name}})
    cid = _create(cli, pod_id, cfg, ref, f"cdi-{via}", **extra)
    cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    out = _sh(cli, cid, "stat -c '%F %t:%T' /dev/fakegpu0; echo $FAKE_VISIBLE_DEVICES "
                        "$FAKE_DRIVER_VERSION; cat /opt/fake/lib.txt; "
                        "head -c 4 /dev/fakegpu0 | od -An -tx1; "
                        "echo x > /opt/fake/lib.txt 2>/dev/null && echo writable || echo ro")
    lines = out.splitlines()
    assert lines[0] == "character special file 1:7", out
    assert lines[1] == "0 1.2.3"
    assert lines[2] == "fake vendor library"
    assert lines[3].split() == ["00", "00", "00", "00"]  # reads like /dev/full: zeros
    assert lines[4] == "ro"
    created = hook_calls(root, cid)
    assert [c["status"] for c in created] == ["creating"], created
    config = json.loads((Path(created[0]["bundle"]) / "config.json").read_text())
    assert "FAKE_VISIBLE_DEVICES=0" in config["process"]["env"]  # what NVIDIA's hooks read
    cli.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    assert [c["status"] for c in hook_calls(root, cid)] == ["creating", "stopped"]


def _refused(cli: CriClient, pod_id: str, cfg: Any, ref: str, name: str) -> str:
    pb = cli.pb
    before = len(cli.runtime.ListContainers(pb.ListContainersRequest(), timeout=10).containers)
    with pytest.raises(grpc.RpcError) as err:
        _create(cli, pod_id, cfg, ref, "refused", CDI_devices=[pb.CDIDevice(name=name)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = len(cli.runtime.ListContainers(pb.ListContainersRequest(), timeout=10).containers)
    assert after == before  # nothing half-created
    return str(err.value.details())


def test_unknown_device_is_invalid_argument(cdi_env: tuple[Berthd, Path], pod: Any) -> None:
    _, root = cdi_env
    cli, pod_id, cfg, ref = pod
    fake_vendor(root)
    msg = _refused(cli, pod_id, cfg, ref, f"{KIND}=gpu9")
    assert f"{KIND}=gpu9" in msg and str(root / "etc-cdi") in msg
    assert "not a fully qualified name" in _refused(cli, pod_id, cfg, ref, "gpu0")


def test_broken_spec_is_named(cdi_env: tuple[Berthd, Path], pod: Any) -> None:
    _, root = cdi_env
    cli, pod_id, cfg, ref = pod
    spec = fake_vendor(root)
    broken = root / "run-cdi" / "other.json"
    broken.write_text(json.dumps({"cdiVersion": "0.6.0", "kind": "berth-test.example/other",
                                  "devices": [{"name": "x", "containerEdits": {
                                      "deviceNodes": [{"path": "relative/node"}]}}]}))
    try:
        msg = _refused(cli, pod_id, cfg, ref, "berth-test.example/other=x")
        assert "berth-test.example/other=x" in msg and str(broken) in msg
        assert "has no absolute path" in msg
        spec.write_text("cdiVersion: 0.6.0\nkind: [unclosed\n")
        msg = _refused(cli, pod_id, cfg, ref, f"{KIND}=gpu0")
        assert str(spec) in msg and "not valid YAML" in msg
    finally:
        broken.unlink()
        spec.unlink()


@pytest.mark.skipif(not Path("/dev/nvidia0").exists(),
                    reason="no NVIDIA GPU on this machine: /dev/nvidia0 does not exist")
def test_real_nvidia_gpu(berthd: Berthd, e2e_images: dict[str, PushedImage],
                         tmp_path: Path) -> None:
    """The session berthd reads the node's own specs (/etc/cdi, /var/run/cdi, as written by
    `nvidia-ctk cdi generate`): nvidia.com/gpu=all gives the container /dev/nvidia0."""
    cli = berthd.client()
    pb = cli.pb
    ref = e2e_images["busybox"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
    cfg = sandbox_config(cli, "gpu", str(tmp_path))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg),
                                       timeout=60).pod_sandbox_id
    try:
        cid = _create(cli, pod_id, cfg, ref, "gpu",
                      CDI_devices=[pb.CDIDevice(name="nvidia.com/gpu=all")])
        cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        assert "character special" in _sh(cli, cid, "stat -c %F /dev/nvidia0")
    finally:
        cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                     timeout=60)
