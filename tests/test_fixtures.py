"""The real-part fixtures themselves: registry, test images, containerd."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.fixtures import hostclean
from tests.fixtures.berthd import Berthd
from tests.fixtures.containerd import Containerd, run_containerd
from tests.fixtures.cri_client import CriClient, run_container, sandbox_config
from tests.fixtures.images import PushedImage, layers_expected, push_one
from tests.fixtures.oci import MT_INDEX, MT_MANIFEST
from tests.fixtures.registry import Registry
from tests.fixtures.tree import layers_tree_problems

DOCKER_V2S2 = "application/vnd.docker.distribution.manifest.v2+json"


def inspect_raw(ref: str, *extra: str) -> dict:
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", *extra, f"docker://{ref}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_registry_serves_v2(registry: Registry) -> None:
    with urllib.request.urlopen(f"{registry.url}/v2/", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("busybox", MT_MANIFEST),
        ("busybox-oci", MT_MANIFEST),
        ("busybox-docker", DOCKER_V2S2),
        ("multiarch", MT_INDEX),
        ("pause", MT_MANIFEST),
    ],
)
def test_pushed_media_types(e2e_images: dict[str, PushedImage], name: str, media_type: str):
    assert inspect_raw(e2e_images[name].ref)["mediaType"] == media_type


def test_docker_and_oci_share_layers(e2e_images: dict[str, PushedImage]) -> None:
    oci = inspect_raw(e2e_images["busybox-oci"].ref)
    docker = inspect_raw(e2e_images["busybox-docker"].ref)
    assert e2e_images["busybox-oci"].digest != e2e_images["busybox-docker"].digest
    assert [x["digest"] for x in oci["layers"]] == [x["digest"] for x in docker["layers"]]
    assert docker["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"


def test_multiarch_platforms(e2e_images: dict[str, PushedImage]) -> None:
    index = inspect_raw(e2e_images["multiarch"].ref)
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}


def test_big_image_size(e2e_images: dict[str, PushedImage]) -> None:
    manifest = inspect_raw(e2e_images["big"].ref)
    assert len(manifest["layers"]) == 10
    assert sum(x["size"] for x in manifest["layers"]) > 45_000_000


def test_user_images_config(e2e_images: dict[str, PushedImage]) -> None:
    for name, user in (("user-uid", "1000"), ("user-name", "berth")):
        out = subprocess.run(
            ["skopeo", "inspect", "--config", "--tls-verify=false",
             f"docker://{e2e_images[name].ref}"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert json.loads(out.stdout)["config"]["User"] == user


def test_layers_expected_tree_matches_umoci(
    e2e_images: dict[str, PushedImage], tmp_path: Path
) -> None:
    """An independent unpacker (umoci) must agree with the expected tree we publish."""
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{e2e_images['layers'].layout}:1.0", str(bundle)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    assert layers_tree_problems(bundle / "rootfs") == []
    assert "/data/hard-b" in layers_expected(e2e_images)["present"]


def test_auth_registry_rejects_anonymous(
    auth_registry: Registry, e2e_images: dict[str, PushedImage]
) -> None:
    src = e2e_images["busybox"]
    pushed = push_one("busybox", src.layout, auth_registry.host, auth_registry.creds)
    assert pushed.digest == src.digest
    anon = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", "--no-creds",
         f"docker://{pushed.ref}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert anon.returncode != 0
    assert "unauthorized" in anon.stderr.lower() or "401" in anon.stderr
    assert inspect_raw(pushed.ref, "--creds", auth_registry.creds or "")["mediaType"] == MT_MANIFEST


@pytest.mark.timeout(120)
def test_containerd_runs_pause_sandbox(containerd_instance: Containerd) -> None:
    with CriClient(containerd_instance.endpoint) as cli:
        pb = cli.pb
        ver = cli.version()
        assert ver.runtime_name == "containerd" and ver.runtime_api_version == "v1"
        uid = uuid.uuid4().hex[:8]
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"fixture-{uid}", uid=uid, namespace="default"),
            log_directory=str(containerd_instance.workdir / "pods" / uid),
        )
        req = pb.RunPodSandboxRequest(config=config)
        pod_id = cli.runtime.RunPodSandbox(req, timeout=60).pod_sandbox_id
        try:
            status = cli.runtime.PodSandboxStatus(
                pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=10
            ).status
            assert status.state == pb.SANDBOX_READY
            assert ipaddress.ip_address(status.network.ip) in ipaddress.ip_network(
                containerd_instance.subnet
            )
            ping = ["busybox", "ping", "-c", "1", "-W", "3", status.network.ip]
            assert subprocess.run(ping, capture_output=True, timeout=10).returncode == 0
        finally:
            cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
            cli.runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30
            )
        assert not cli.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items
        assert not hostclean.mounts_under(containerd_instance.state / "io.containerd.grpc.v1.cri")


@pytest.mark.timeout(120)
def test_berthd_fixture_restart_and_crash(berthd_fn: Berthd) -> None:
    assert berthd_fn.client().version().runtime_name == "berth"
    berthd_fn.restart()
    assert berthd_fn.client().version().runtime_api_version == "v1"
    berthd_fn.kill()
    assert berthd_fn.socket.exists()  # a crash leaves the socket; the next start must cope
    berthd_fn.start()
    assert berthd_fn.client().version().runtime_name == "berth"


@pytest.mark.timeout(180)
def test_containerd_teardown_reaps_running_pod(
    tmp_path: Path, registry: Registry, e2e_images: dict[str, PushedImage]
) -> None:
    """A pod with a running container left behind must vanish with the fixture, leaks checked."""
    workdir = tmp_path / "ctrd"
    with run_containerd(workdir, [registry.host], e2e_images["pause"].ref) as c:
        with CriClient(c.endpoint) as cli:
            config = sandbox_config(cli, "left-running", str(tmp_path / "logs"))
            req = cli.pb.RunPodSandboxRequest(config=config)
            pod_id = cli.runtime.RunPodSandbox(req, timeout=60).pod_sandbox_id
            image = e2e_images["busybox"].ref
            run_container(cli, pod_id, config, image, ["sleep", "600"], "sleeper")
            ctrs = cli.runtime.ListContainers(cli.pb.ListContainersRequest(), timeout=10)
            assert [x.state for x in ctrs.containers] == [cli.pb.CONTAINER_RUNNING]
        shims = hostclean.pids_with_arg(str(c.socket))
        assert shims
        bridge = c.bridge
    assert not hostclean.pids_with_arg(str(workdir))
    assert not hostclean.mounts_under(tmp_path)
    assert not hostclean.link_exists(bridge)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_pause_binary_exits_cleanly(
    e2e_images: dict[str, PushedImage], tmp_path: Path, sig: int
) -> None:
    layout = e2e_images["pause"].layout
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads((blobs / index["digest"].split(":")[1]).read_text())
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(layer) as tar:
        tar.extractall(tmp_path, filter="tar")
    proc = subprocess.Popen([str(tmp_path / "pause")])
    try:
        time.sleep(0.2)
        assert proc.poll() is None  # it blocks
        proc.send_signal(sig)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()
