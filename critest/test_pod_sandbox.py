"""Pod sandbox RPCs as upstream critest's pod spec exercises them: lists, idempotency, pod files."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from critest.util import (
    container_config,
    create,
    list_containers,
    list_pods,
    pod_status,
    sandbox,
    sh,
    status,
    stop_remove_pod,
    unique,
)
from tests.fixtures.cri_client import CriClient, sandbox_config
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)


def test_list_filters_and_idempotent_stop_remove(cri: CriClient, tmp_path: Path) -> None:
    pb = cri.pb
    run = unique("run")
    pod_a = cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=sandbox_config(
        cri, unique("a"), str(tmp_path), labels={"critest": run, "which": "a"},
        annotations={"note": "x"})), timeout=120).pod_sandbox_id
    try:
        with sandbox(cri, str(tmp_path), "b", labels={"critest": run, "which": "b"}) as (pod_b, _):
            assert sorted(list_pods(cri, label_selector={"critest": run})) == sorted([pod_a, pod_b])
            assert list_pods(cri, label_selector={"critest": run, "which": "b"}) == [pod_b]
            assert list_pods(cri, label_selector={"critest": run, "which": "zzz"}) == []
            assert list_pods(cri, id=pod_a) == [pod_a]
            assert list_pods(cri, id=pod_a[:12]) == [pod_a]  # crictl sends unique prefixes
            cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_a), timeout=60)
            cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_a), timeout=60)
            ready = pb.PodSandboxStateValue(state=pb.SANDBOX_READY)
            notready = pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY)
            sel = {"critest": run}
            assert list_pods(cri, label_selector=sel, state=ready) == [pod_b]
            assert list_pods(cri, label_selector=sel, state=notready) == [pod_a]
            st = pod_status(cri, pod_a)
            assert st.state == pb.SANDBOX_NOTREADY
            assert dict(st.labels) == {"critest": run, "which": "a"}
            assert dict(st.annotations) == {"note": "x"}
            assert st.created_at > 0
    finally:
        stop_remove_pod(cri, pod_a)
    assert list_pods(cri, label_selector={"critest": run}) == []
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_a), timeout=60)
    with pytest.raises(grpc.RpcError) as err:
        pod_status(cri, pod_a)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_remove_running_pod_removes_its_containers(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """RemovePodSandbox of a ready pod stops it first and takes its containers with it."""
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    with sandbox(cri, str(tmp_path)) as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "c"))
        cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        req = pb.ListContainersRequest(filter=pb.ContainerFilter(id=cid))
        assert not cri.runtime.ListContainers(req, timeout=10).containers
        assert list_pods(cri, id=pod_id) == []


def test_hostname_dns_and_sysctls(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    dns = pb.DNSConfig(servers=["10.88.0.53", "10.88.0.54"],
                       searches=["critest.local", "svc.local"], options=["ndots:5", "timeout:1"])
    linux = pb.LinuxPodSandboxConfig(sysctls={"kernel.shm_rmid_forced": "1",
                                              "net.ipv4.ip_local_port_range": "20000 30000"})
    with sandbox(cri, str(tmp_path), hostname="critest-host", dns_config=dns,
                 linux=linux) as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "c"))
        assert sh(cri, cid, "hostname").strip() == "critest-host"
        resolv = sh(cri, cid, "cat /etc/resolv.conf").splitlines()
        assert "nameserver 10.88.0.53" in resolv and "nameserver 10.88.0.54" in resolv
        assert "search critest.local svc.local" in resolv
        assert "options ndots:5 timeout:1" in resolv
        assert sh(cri, cid, "cat /proc/sys/kernel/shm_rmid_forced").strip() == "1"
        ports = sh(cri, cid, "cat /proc/sys/net/ipv4/ip_local_port_range").split()
        assert ports == ["20000", "30000"]


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 copies the node's /etc/hosts into the pod (kubelet usually "
    "mounts its own over it)",
    berth="writes localhost entries plus '<pod ip>\\t<hostname>', like kubelet's managed file",
)
def test_etc_hosts_names_the_pod(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    with sandbox(cri, str(tmp_path), hostname="critest-hosts") as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "c"))
        hosts = sh(cri, cid, "cat /etc/hosts")
        assert "127.0.0.1\tlocalhost" in hosts
        ip = pod_status(cri, pod_id).network.ip
        assert f"{ip}\tcritest-hosts" in hosts, hosts


def test_pod_status_network_and_namespaces(cri: CriClient, tmp_path: Path) -> None:
    pb = cri.pb
    with sandbox(cri, str(tmp_path)) as (pod_id, cfg):
        st = pod_status(cri, pod_id)
        assert st.id == pod_id
        assert st.metadata.name == cfg.metadata.name and st.metadata.namespace == "critest"
        assert st.state == pb.SANDBOX_READY
        assert st.network.ip.startswith("10.88.")
        opts = st.linux.namespaces.options  # echoes the request; an empty one means all POD
        assert (opts.network, opts.pid, opts.ipc) == (pb.POD, pb.POD, pb.POD)
        verbose = cri.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True), timeout=10)
        assert verbose.info


def test_host_network_pod(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """A hostNetwork pod gets no IP of its own and its containers see the node's netns."""
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    ns = pb.NamespaceOption(network=pb.NODE)
    linux = pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=ns))
    with sandbox(cri, str(tmp_path), linux=linux) as (pod_id, cfg):
        assert pod_status(cri, pod_id).network.ip == ""
        cid = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "c"))
        inode = sh(cri, cid, "stat -L -c %i /proc/self/ns/net").strip()
        assert int(inode) == Path("/proc/self/ns/net").stat().st_ino


def test_stop_pod_stops_its_containers(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """StopPodSandbox ends every container (even one ignoring SIGTERM); they stay listed."""
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    with sandbox(cri, str(tmp_path)) as (pod_id, cfg):
        stubborn = ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
        ids = [create(cri, pod_id, cfg, container_config(cri, ref, stubborn, "stubborn")),
               create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "plain"))]
        cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        for cid in ids:
            st = status(cri, cid)
            assert st.state == pb.CONTAINER_EXITED and st.finished_at > 0
        assert sorted(list_containers(cri, pod_sandbox_id=pod_id)) == sorted(ids)


def test_hostname_env(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """HOSTNAME is the pod's hostname (the node's in a host-network pod) unless the container
    config sets it."""
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    with sandbox(cri, str(tmp_path), hostname="critest-env") as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "c"))
        assert sh(cri, cid, "echo $HOSTNAME").strip() == "critest-env"
        own = container_config(cri, ref, ["sleep", "600"], "own",
                               envs=[pb.KeyValue(key="HOSTNAME", value="mine")])
        assert sh(cri, create(cri, pod_id, cfg, own), "echo $HOSTNAME").strip() == "mine"
    linux = pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=pb.NamespaceOption(network=pb.NODE)))
    with sandbox(cri, str(tmp_path), linux=linux) as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "c"))
        assert sh(cri, cid, "echo $HOSTNAME").strip() == socket.gethostname()


def test_host_network_pod_with_other_hostname_is_refused(cri: CriClient, tmp_path: Path) -> None:
    """Without a private UTS namespace a pod cannot have a hostname of its own (runc's rule);
    Berth refuses it with INVALID_ARGUMENT before creating anything (tests/cri/test_hostname)."""
    pb = cri.pb
    linux = pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=pb.NamespaceOption(network=pb.NODE)))
    cfg = sandbox_config(cri, unique("hn"), str(tmp_path), hostname="not-the-node-21",
                         linux=linux)
    with pytest.raises(grpc.RpcError) as err:
        cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=120)
    assert "private UTS namespace" in (err.value.details() or "")
    assert [p for p in list_pods(cri)
            if pod_status(cri, p).metadata.uid == cfg.metadata.uid] == []
