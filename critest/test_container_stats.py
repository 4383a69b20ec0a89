"""Container and pod stats as kubelet's summary API reads them."""

from __future__ import annotations

import time

import pytest

from critest.harness import Pod
from critest.util import container_config, create, sh
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def busy(pulled: list[str], pod: Pod, e2e_images: dict[str, PushedImage]) -> str:
    """A container holding ~8 MiB in /dev/shm and writing 1 MiB to its writable layer."""
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    script = ("head -c 8388608 /dev/zero > /dev/shm/fill; head -c 1048576 /dev/zero > /big; "
              "exec sleep 600")
    cid = create(pod.cri, pod.id, pod.config, container_config(pod.cri, ref, ["sh", "-c", script],
                                                                "stats"))
    sh(pod.cri, cid, "while [ ! -s /big ]; do sleep 0.05; done")
    time.sleep(0.2)
    return cid


def test_container_stats(busy: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    st = cri.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=busy),
                                    timeout=30).stats
    assert st.attributes.id == busy
    assert st.attributes.metadata.name == "stats"
    assert st.cpu.timestamp > 0 and st.cpu.usage_core_nano_seconds.value > 0
    assert st.memory.working_set_bytes.value >= 4 << 20
    listed = cri.runtime.ListContainerStats(pb.ListContainerStatsRequest(
        filter=pb.ContainerStatsFilter(pod_sandbox_id=pod.id)), timeout=30).stats
    assert [s.attributes.id for s in listed] == [busy]
    listed = cri.runtime.ListContainerStats(pb.ListContainerStatsRequest(
        filter=pb.ContainerStatsFilter(id=busy)), timeout=30).stats
    assert [s.attributes.id for s in listed] == [busy]


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 refreshes snapshot usage in a background syncer, so a fresh "
    "container reports 0 bytes for its writable layer",
    berth="measures the container's upper dir when asked",
)
def test_writable_layer_usage(busy: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    st = cri.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=busy),
                                    timeout=30).stats
    assert st.writable_layer.used_bytes.value >= 1 << 20
    assert st.writable_layer.inodes_used.value >= 1


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 fails PodSandboxStats for a sandbox without cgroup_parent "
    "('cgroupPath is empty'); kubelet always sends one, the pod fixture does not",
    berth="sums the pod's containers and reads the pod's network namespace",
)
def test_pod_sandbox_stats(busy: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    st = cri.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod.id),
                                     timeout=30).stats
    assert st.attributes.id == pod.id
    assert st.linux.cpu.usage_core_nano_seconds.value > 0
    assert st.linux.memory.working_set_bytes.value >= 4 << 20
    assert [c.attributes.id for c in st.linux.containers] == [busy]
    assert st.linux.network.default_interface.name == "eth0"
    listed = cri.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(
        filter=pb.PodSandboxStatsFilter(id=pod.id)), timeout=30).stats
    assert [s.attributes.id for s in listed] == [pod.id]
