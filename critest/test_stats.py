"""CRI stats RPCs as kubelet's CRI stats provider reads them, and the metrics RPCs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from critest.harness import Pod
from critest.util import container_config, create, wait_exited
from tests.fixtures._proc import wait_until
from tests.fixtures.cri_client import CriClient

pytestmark = pytest.mark.timeout(180)

BUSY = ["sh", "-c", "while :; do :; done"]
SLEEP = ["sh", "-c", "sleep 600"]
NEW_IN_136 = dict(reason="containerd 1.6 predates the Stream*Stats/Metrics RPCs (CRI 1.36)",
                  berth="streams the List* answer in batches")
NO_CRI_METRICS = dict(reason="containerd 1.6 has no ListMetricDescriptors/ListPodSandboxMetrics",
                      berth="returns the cAdvisor-named families of its /metrics endpoint")


def _stats(cri: CriClient, cid: str) -> Any:
    req = cri.pb.ContainerStatsRequest(container_id=cid)
    return cri.runtime.ContainerStats(req, timeout=10).stats


def _burn_and_sleep(cri: CriClient, pod: Pod, image: str) -> tuple[str, str]:
    cfg = container_config(cri, image, BUSY, "burn", labels={"role": "burner"})
    burn = create(cri, pod.id, pod.config, cfg)
    sleep = create(cri, pod.id, pod.config, container_config(cri, image, SLEEP, "sleep"))
    return burn, sleep


def test_cpu_usage_grows_for_a_busy_loop(cri: CriClient, pod: Pod,
                                         e2e_images: dict[str, Any]) -> None:
    burn, _ = _burn_and_sleep(cri, pod, e2e_images["busybox"].ref)
    first = _stats(cri, burn)
    assert first.attributes.labels["role"] == "burner"
    time.sleep(1.0)
    second = _stats(cri, burn)
    used = second.cpu.usage_core_nano_seconds.value - first.cpu.usage_core_nano_seconds.value
    assert used > 5 * 10**7, f"a busy loop used only {used} ns of CPU in ~1 s (shared machine)"
    assert second.cpu.timestamp > first.cpu.timestamp


def test_list_container_stats_filters(cri: CriClient, pod: Pod,
                                      e2e_images: dict[str, Any]) -> None:
    pb = cri.pb
    burn, sleep = _burn_and_sleep(cri, pod, e2e_images["busybox"].ref)

    def listed(**f: Any) -> set[str]:
        req = pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(**f))
        return {s.attributes.id for s in cri.runtime.ListContainerStats(req, timeout=10).stats}

    assert listed(pod_sandbox_id=pod.id) == {burn, sleep}
    assert listed(pod_sandbox_id=pod.id, label_selector={"role": "burner"}) == {burn}
    assert listed(label_selector={"role": "nobody-has-this"}) == set()
    assert {burn, sleep} <= listed()


def test_container_stats_of_unknown_container(cri: CriClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stats(cri, "0" * 64)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_container_stats_memory_and_writable_layer(cri: CriClient, pod: Pod,
                                                   e2e_images: dict[str, Any]) -> None:
    _, sleep = _burn_and_sleep(cri, pod, e2e_images["busybox"].ref)
    pod.exec(sleep, ["sh", "-c", "head -c 8388608 /dev/zero > /dev/shm/fill"])
    st = _stats(cri, sleep)
    assert st.attributes.id == sleep and st.attributes.metadata.name == "sleep"
    assert st.memory.timestamp > 0
    assert st.memory.working_set_bytes.value >= 8 << 20
    assert st.writable_layer.fs_id.mountpoint


def test_writable_layer_usage_is_current(cri: CriClient, pod: Pod,
                                         e2e_images: dict[str, Any]) -> None:
    """Both walk writable layers in the background (every 10 s by default), not per call:
    the written bytes show within a few periods, stamped with the walk's time."""
    _, sleep = _burn_and_sleep(cri, pod, e2e_images["busybox"].ref)
    pod.exec(sleep, ["sh", "-c", "head -c 2000000 /dev/zero > /written"])
    written = time.time_ns()

    def seen() -> bool:
        layer = _stats(cri, sleep).writable_layer
        return layer.used_bytes.value >= 2_000_000 and layer.inodes_used.value >= 1

    wait_until(seen, 45, "the written file to show in the writable layer's usage")
    assert _stats(cri, sleep).writable_layer.timestamp >= written


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 fails PodSandboxStats for a sandbox without cgroup_parent "
    "('cgroupPath is empty'); kubelet always sends one, the pod fixture does not",
    berth="sums the pod's containers and reads the pod's network namespace",
)
def test_pod_sandbox_stats(cri: CriClient, pod: Pod, e2e_images: dict[str, Any]) -> None:
    pb = cri.pb
    burn, sleep = _burn_and_sleep(cri, pod, e2e_images["busybox"].ref)
    time.sleep(0.2)
    stats = cri.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod.id),
                                        timeout=10).stats
    assert stats.attributes.id == pod.id
    assert stats.attributes.metadata.name == pod.config.metadata.name
    linux = stats.linux
    assert linux.cpu.usage_core_nano_seconds.value > 0
    assert linux.memory.working_set_bytes.value > 0
    assert {c.attributes.id for c in linux.containers} == {burn, sleep}
    assert linux.network.default_interface.name == "eth0"
    assert linux.process.process_count.value >= 2
    listed = cri.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(
        filter=pb.PodSandboxStatsFilter(id=pod.id)), timeout=10).stats
    assert [s.attributes.id for s in listed] == [pod.id]


@pytest.mark.differs("containerd", **NO_CRI_METRICS)
def test_pod_sandbox_metrics_use_cadvisor_names(cri: CriClient, pod: Pod,
                                                e2e_images: dict[str, Any]) -> None:
    pb = cri.pb
    burn, _ = _burn_and_sleep(cri, pod, e2e_images["busybox"].ref)
    descs = cri.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest(),
                                              timeout=10).descriptors
    keys = {d.name: list(d.label_keys) for d in descs}
    assert {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
            "container_network_receive_bytes_total", "container_oom_events_total"} <= set(keys)
    resp = cri.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=10)
    mine = next(m for m in resp.pod_metrics if m.pod_sandbox_id == pod.id)
    metrics = {m.name: m for c in mine.container_metrics if c.container_id == burn
               for m in c.metrics}
    ws = metrics["container_memory_working_set_bytes"]
    labels = dict(zip(keys[ws.name], ws.label_values, strict=True))
    assert labels["container"] == "burn"
    assert labels["pod"] == pod.config.metadata.name
    assert labels["namespace"] == pod.config.metadata.namespace
    for m in (m for c in mine.container_metrics for m in c.metrics):
        assert len(m.label_values) == len(keys[m.name]), m.name


@pytest.mark.skipif(not Path("/sys/fs/cgroup/cpu.pressure").exists(),
                    reason="per-cgroup PSI needs a cgroup v2 node (the guest stage has one)")
@pytest.mark.differs("containerd", reason="containerd 1.6 predates PSI in CRI stats",
                     berth="reads the cgroup's cpu/memory/io.pressure")
def test_stats_and_metrics_carry_psi_on_cgroup_v2(cri: CriClient, pod: Pod,
                                                  e2e_images: dict[str, Any]) -> None:
    pb = cri.pb
    burn, _ = _burn_and_sleep(cri, pod, e2e_images["busybox"].ref)
    st = _stats(cri, burn)
    for usage in (st.cpu, st.memory, st.io):
        assert usage.HasField("psi"), st
    resp = cri.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=10)
    names = {m.name for pm in resp.pod_metrics for c in pm.container_metrics
             if c.container_id == burn for m in c.metrics}
    assert {f"container_pressure_{r}_{k}_seconds_total" for r in ("cpu", "memory", "io")
            for k in ("stalled", "waiting")} <= names


@pytest.mark.differs("containerd", **NEW_IN_136)
def test_stream_stats_match_the_lists(cri: CriClient, pod: Pod,
                                      e2e_images: dict[str, Any]) -> None:
    pb = cri.pb
    burn, sleep = _burn_and_sleep(cri, pod, e2e_images["busybox"].ref)
    f = pb.ContainerStatsFilter(pod_sandbox_id=pod.id)
    streamed = {s.attributes.id for r in cri.runtime.StreamContainerStats(
        pb.StreamContainerStatsRequest(filter=f), timeout=10) for s in r.container_stats}
    assert streamed == {burn, sleep}
    pods = {s.attributes.id for r in cri.runtime.StreamPodSandboxStats(
        pb.StreamPodSandboxStatsRequest(filter=pb.PodSandboxStatsFilter(id=pod.id)),
        timeout=10) for s in r.pod_sandbox_stats}
    assert pods == {pod.id}
    metrics = {m.pod_sandbox_id for r in cri.runtime.StreamPodSandboxMetrics(
        pb.StreamPodSandboxMetricsRequest(), timeout=10) for m in r.pod_sandbox_metrics}
    assert pod.id in metrics


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 answers an error for a container whose task has exited",
    berth="answers the exited container's last figures: its cgroup stays until RemoveContainer "
    "(docs/cri-behaviour.md)",
)
def test_stats_of_an_exited_container(cri: CriClient, pod: Pod,
                                      e2e_images: dict[str, Any]) -> None:
    cfg = container_config(cri, e2e_images["busybox"].ref,
                           ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"], "done")
    cid = create(cri, pod.id, pod.config, cfg)
    assert wait_exited(cri, cid).state == cri.pb.CONTAINER_EXITED
    stats = _stats(cri, cid)
    assert stats.attributes.id == cid
    assert stats.cpu.usage_core_nano_seconds.value > 0
