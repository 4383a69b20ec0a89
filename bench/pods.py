"""Pod and container operations as kubelet issues them, the same requests for both peers."""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import Peer

# exits on SIGTERM at once, so a graceful stop costs no grace period on either peer; /tmp/ready
# says the trap is set (a SIGTERM before that is ignored by pid 1 and costs the whole grace period)
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; touch /tmp/ready; sleep 3600 & wait"]
_seq = itertools.count()


@dataclass
class Pod:
    """One running pod (and its containers) on one peer."""

    peer: Peer
    id: str
    config: Any
    containers: list[str] = field(default_factory=list)


@dataclass
class Timings:
    """Milliseconds spent in each step of one pod's life."""

    run: float = 0.0
    create_start: float = 0.0
    stop_remove: float = 0.0

    @property
    def cycle(self) -> float:
        return self.run + self.create_start + self.stop_remove


def image(peer: Peer, name: str) -> str:
    return str(peer.extra["images"][name].ref)


def pull(peer: Peer, ref: str) -> str:
    pb = peer.client.pb
    req = pb.PullImageRequest(image=pb.ImageSpec(image=ref))
    return str(peer.client.image.PullImage(req, timeout=300).image_ref)


def namespaces(pb: Any, shared_pid: bool = False) -> Any:
    """What kubelet sends for a pod, with or without shareProcessNamespace (pid POD)."""
    pid = pb.NamespaceMode.POD if shared_pid else pb.NamespaceMode.CONTAINER
    return pb.NamespaceOption(network=pb.NamespaceMode.POD, pid=pid, ipc=pb.NamespaceMode.POD)


def run_pod(peer: Peer, logs: Path, t: Timings | None = None, shared_pid: bool = False) -> Pod:
    """RunPodSandbox with a kubelet-like config (unique name and uid, a log directory)."""
    pb = peer.client.pb
    n = next(_seq)
    log_dir = logs / peer.name / f"pod{n}"
    log_dir.mkdir(parents=True, exist_ok=True)
    meta = pb.PodSandboxMetadata(name=f"bench-{n}", uid=uuid.uuid4().hex, namespace="bench")
    linux = pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=namespaces(pb, shared_pid)))
    config = pb.PodSandboxConfig(metadata=meta, log_directory=str(log_dir),
                                 hostname=f"bench-{n}", linux=linux)
    t0 = time.perf_counter()
    resp = peer.client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120)
    if t is not None:
        t.run = (time.perf_counter() - t0) * 1000
    return Pod(peer, resp.pod_sandbox_id, config)


def start_container(pod: Pod, t: Timings | None = None, command: list[str] | None = None,
                    shared_pid: bool = False) -> str:
    """CreateContainer + StartContainer of a busybox sleeper in the pod."""
    peer = pod.peer
    pb = peer.client.pb
    name = f"c{len(pod.containers)}"
    spec = pb.ImageSpec(image=image(peer, "busybox"))
    config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=spec,
                                command=command or SLEEPER, log_path=f"{name}.log",
                                linux=pb.LinuxContainerConfig(
                                    security_context=pb.LinuxContainerSecurityContext(
                                        namespace_options=namespaces(pb, shared_pid))))
    req = pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=config,
                                    sandbox_config=pod.config)
    t0 = time.perf_counter()
    cid = str(peer.client.runtime.CreateContainer(req, timeout=120).container_id)
    peer.client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=120)
    if t is not None:
        t.create_start = (time.perf_counter() - t0) * 1000
    pod.containers.append(cid)
    return cid


def wait_ready(pod: Pod, cid: str, timeout: float = 30.0) -> None:
    """Until the sleeper has set its trap (untimed: a real pod runs a while before it stops)."""
    rt, pb = pod.peer.client.runtime, pod.peer.client.pb
    req = pb.ExecSyncRequest(container_id=cid, cmd=["test", "-f", "/tmp/ready"], timeout=10)
    deadline = time.monotonic() + timeout
    while rt.ExecSync(req, timeout=30).exit_code != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pod.peer.name}: container {cid} never became ready")
        time.sleep(0.01)


def remove_pod(pod: Pod, t: Timings | None = None) -> None:
    """What kubelet does on pod deletion: stop and remove containers, then the sandbox."""
    rt, pb = pod.peer.client.runtime, pod.peer.client.pb
    t0 = time.perf_counter()
    for cid in pod.containers:
        rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10), timeout=60)
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    if t is not None:
        t.stop_remove = (time.perf_counter() - t0) * 1000


def pod_cycle(peer: Peer, logs: Path) -> Timings:
    """One full pod life with a container, timed per step."""
    t = Timings()
    pod = run_pod(peer, logs, t)
    try:
        wait_ready(pod, start_container(pod, t))
    finally:
        remove_pod(pod, t)
    return t
