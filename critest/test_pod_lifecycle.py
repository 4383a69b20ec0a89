"""Pod sandbox and container lifecycle, the path every kubelet pod start takes."""

from __future__ import annotations

import time

import pytest

from critest.harness import Pod
from tests.fixtures.cri_client import CriClient, sandbox_config
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)


def pod_status(cri: CriClient, pod_id: str):
    req = cri.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
    return cri.runtime.PodSandboxStatus(req, timeout=10).status


def container_status(cri: CriClient, cid: str):
    req = cri.pb.ContainerStatusRequest(container_id=cid)
    return cri.runtime.ContainerStatus(req, timeout=10).status


def wait_exited(cri: CriClient, cid: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        st = container_status(cri, cid)
        if st.state == cri.pb.CONTAINER_EXITED or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def test_pod_sandbox_lifecycle(cri: CriClient, tmp_path) -> None:
    pb = cri.pb
    config = sandbox_config(cri, "lifecycle", str(tmp_path / "logs"))
    pod_id = cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120)
    pod_id = pod_id.pod_sandbox_id
    try:
        st = pod_status(cri, pod_id)
        assert st.state == pb.SANDBOX_READY
        assert st.metadata.uid == config.metadata.uid
        assert st.network.ip
        flt = pb.PodSandboxFilter(id=pod_id)
        items = cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=flt), timeout=10).items
        assert [p.id for p in items] == [pod_id]
        cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        assert pod_status(cri, pod_id).state == pb.SANDBOX_NOTREADY
        cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    finally:
        cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    items = cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=flt), timeout=10).items
    assert not items
    # removing again is not an error (CRI: idempotent)
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)


def test_container_exec_and_exit_code(
    pulled: list[str], pod: Pod, e2e_images: dict[str, PushedImage]
) -> None:
    cri, pb = pod.cri, pod.cri.pb
    pulled.append(e2e_images["busybox"].ref)
    cid = pod.run(e2e_images["busybox"].ref, ["sleep", "600"], "sleeper")
    st = container_status(cri, cid)
    assert st.state == pb.CONTAINER_RUNNING
    assert st.image_ref
    res = pod.exec(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 3)
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=60)
    st = container_status(cri, cid)
    assert st.state == pb.CONTAINER_EXITED
    assert st.finished_at >= st.started_at > 0


def test_container_exit_status(
    pulled: list[str], pod: Pod, e2e_images: dict[str, PushedImage]
) -> None:
    cri, pb = pod.cri, pod.cri.pb
    pulled.append(e2e_images["busybox"].ref)
    cid = pod.run(e2e_images["busybox"].ref, ["sh", "-c", "exit 7"], "exiter")
    st = wait_exited(cri, cid)
    assert st.state == pb.CONTAINER_EXITED
    assert st.exit_code == 7
    cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    flt = pb.ContainerFilter(id=cid)
    listed = cri.runtime.ListContainers(pb.ListContainersRequest(filter=flt), timeout=10)
    assert not listed.containers


@pytest.mark.parametrize(("image", "uid"), [("user-uid", 1000), ("user-name", 1000)])
def test_image_user(
    pulled: list[str], pod: Pod, e2e_images: dict[str, PushedImage], image: str, uid: int
) -> None:
    pulled.append(e2e_images[image].ref)
    cid = pod.run(e2e_images[image].ref, ["sleep", "600"], "user")
    res = pod.exec(cid, ["id"])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.decode().startswith(f"uid={uid}(berth) gid=1000(berth)")


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6.20 gives the image user only its primary group "
    "(measured here: `id` prints groups=1000(berth))",
    berth="merges the user's /etc/group memberships (10 wheel, 1001 extra), as the "
    "Kubernetes SupplementalGroupsPolicy Merge default asks",
)
def test_image_user_supplementary_groups(
    pulled: list[str], pod: Pod, e2e_images: dict[str, PushedImage]
) -> None:
    pulled.append(e2e_images["user-name"].ref)
    cid = pod.run(e2e_images["user-name"].ref, ["sleep", "600"], "groups")
    res = pod.exec(cid, ["id", "-G"])
    assert res.exit_code == 0, res.stderr
    assert {1000, 10, 1001} <= {int(g) for g in res.stdout.split()}
