"""Helpers the conformance tests share: configs built from keyword fields, waits, sandboxes."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc

from tests.fixtures.cri_client import CriClient, sandbox_config

POLL = 0.1


def unique(prefix: str) -> str:
    """Names must be unique per runtime, which lives for the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def sandbox(cri: CriClient, log_dir: str, name: str = "pod",
            **extra: Any) -> Iterator[tuple[str, Any]]:
    """A running pod sandbox with extra PodSandboxConfig fields; (id, config), removed after."""
    pb = cri.pb
    config = sandbox_config(cri, unique(name), log_dir, **extra)
    pod_id = cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120)
    try:
        yield pod_id.pod_sandbox_id, config
    finally:
        stop_remove_pod(cri, pod_id.pod_sandbox_id)


def stop_remove_pod(cri: CriClient, pod_id: str) -> None:
    """Stop then remove; a pod the test already removed is fine (both answer NOT_FOUND)."""
    pb = cri.pb
    try:
        cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)


def container_config(cri: CriClient, image: str, command: list[str], name: str,
                     **fields: Any) -> Any:
    """A ContainerConfig; `security` and `resources` go under `linux`, the rest as given."""
    pb = cri.pb
    linux = pb.LinuxContainerConfig(
        security_context=fields.pop("security", None), resources=fields.pop("resources", None))
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                              image=pb.ImageSpec(image=image), command=command, linux=linux,
                              **fields)


def create(cri: CriClient, pod_id: str, pod_config: Any, config: Any, start: bool = True) -> str:
    """Pull the image, create (and by default start) the container; returns its id."""
    pb = cri.pb
    cri.image.PullImage(pb.PullImageRequest(image=config.image), timeout=120)
    req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config)
    cid = str(cri.runtime.CreateContainer(req, timeout=60).container_id)
    if start:
        cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    return cid


def status(cri: CriClient, cid: str) -> Any:
    req = cri.pb.ContainerStatusRequest(container_id=cid)
    return cri.runtime.ContainerStatus(req, timeout=10).status


def pod_status(cri: CriClient, pod_id: str) -> Any:
    req = cri.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
    return cri.runtime.PodSandboxStatus(req, timeout=10).status


def wait_exited(cri: CriClient, cid: str, timeout: float = 30.0) -> Any:
    """The container's status once it has exited (or the last one seen at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(cri, cid)
        if st.state == cri.pb.CONTAINER_EXITED or time.monotonic() > deadline:
            return st
        time.sleep(POLL)


def exec_sync(cri: CriClient, cid: str, cmd: list[str], timeout: int = 30) -> Any:
    req = cri.pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout)
    return cri.runtime.ExecSync(req, timeout=timeout + 10)


def sh(cri: CriClient, cid: str, script: str) -> str:
    """Run a shell snippet that must succeed; its stdout."""
    res = exec_sync(cri, cid, ["sh", "-c", script])
    assert res.exit_code == 0, (script, res.stdout, res.stderr)
    return str(res.stdout.decode())


def wait_trapped(cri: CriClient, cid: str, sig: int, timeout: float = 30) -> None:
    """Until a shell in the container (not this probe's own) catches or ignores `sig`. A pid 1
    drops signals it has no handler for, and in a shared pid namespace a signal before the
    trap kills the shell: either way a test must not signal before `trap` has run, and a fixed
    sleep loses that race on a loaded machine. Pause processes catch TERM too, hence the name."""
    probe = ("awk -v me=$$ '/^Name:/{n=$2} /^Pid:/{p=$2} "
             "/^Sig(Cgt|Ign):/{if (n == \"sh\" && p != me) print $2}' /proc/[0-9]*/status")
    deadline = time.monotonic() + timeout
    while not any(int(mask, 16) >> (sig - 1) & 1 for mask in sh(cri, cid, probe).split()):
        assert time.monotonic() < deadline, f"no shell in {cid[:12]} trapped signal {sig}"
        time.sleep(0.05)


def list_containers(cri: CriClient, **filter_fields: Any) -> list[str]:
    pb = cri.pb
    req = pb.ListContainersRequest(filter=pb.ContainerFilter(**filter_fields))
    return [c.id for c in cri.runtime.ListContainers(req, timeout=10).containers]


def list_pods(cri: CriClient, **filter_fields: Any) -> list[str]:
    pb = cri.pb
    req = pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(**filter_fields))
    return [p.id for p in cri.runtime.ListPodSandbox(req, timeout=10).items]


def host_ns_inode(kind: str) -> int:
    """The test process's namespace inode, to compare with what a container sees."""
    return os.stat(f"/proc/self/ns/{kind}").st_ino


def proc_status_field(text: str, field: str) -> str:
    """One `Field:\tvalue` line of /proc/<pid>/status."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return value.strip()
    raise AssertionError(f"{field} not in /proc status")
