"""Live objects the corpus refers to, and the calls that turn a corpus row into an RPC."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from tests.fixtures import hostclean
from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import CriClient

_VAR = re.compile(r"\$[A-Z_]+")


@dataclass
class Env:
    """One berthd with a ready pod, a stopped pod and containers in every state."""

    berthd: Berthd
    client: CriClient
    tmp: Path
    image: str
    registry: str
    cgroup_parent: str = field(default_factory=lambda: f"berth-bad-{uuid.uuid4().hex[:6]}")
    vars: dict[str, Any] = field(default_factory=dict)

    def run_pod(self, name: str) -> tuple[str, Any]:
        pb = self.client.pb
        meta = pb.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="badinput")
        cfg = pb.PodSandboxConfig(metadata=meta, log_directory=str(self.tmp / "logs"),
                                  linux=pb.LinuxPodSandboxConfig(cgroup_parent=self.cgroup_parent))
        pod_id = self.client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg),
                                                   timeout=60).pod_sandbox_id
        return str(pod_id), cfg

    def create(self, pod_id: str, cfg: Any, name: str, command: list[str]) -> str:
        pb = self.client.pb
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                    image=pb.ImageSpec(image=self.image), command=command)
        req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=cfg)
        return str(self.client.runtime.CreateContainer(req, timeout=60).container_id)

    def setup(self) -> None:
        """Objects in each state; extra ids until two pods and two containers share a prefix."""
        pb, rt = self.client.pb, self.client.runtime
        rt_image = self.client.image
        rt_image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=self.image)), timeout=120)
        (self.tmp / "bad.json").write_text("{not json")
        pod, cfg = self.run_pod("ready")
        stopped, _ = self.run_pod("stopped")
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=stopped), timeout=60)
        pods = [pod, stopped]
        while not _shared_prefix(pods):
            pods.append(self.run_pod(f"extra-{len(pods)}")[0])
        created = self.create(pod, cfg, "created", ["sleep", "600"])
        running = self.create(pod, cfg, "running", ["sleep", "600"])
        rt.StartContainer(pb.StartContainerRequest(container_id=running), timeout=60)
        exited = self.create(pod, cfg, "exited", ["true"])
        rt.StartContainer(pb.StartContainerRequest(container_id=exited), timeout=60)
        ctrs = [created, running, exited]
        while not _shared_prefix(ctrs):
            ctrs.append(self.create(pod, cfg, f"extra-{len(ctrs)}", ["true"]))
        _wait_exited(self.client, exited)
        self.vars = {
            "$POD": pod, "$POD_NAME": cfg.metadata.name, "$POD_UID": cfg.metadata.uid,
            "$POD_CONFIG": json_format.MessageToDict(cfg, preserving_proto_field_name=True),
            "$STOPPED_POD": stopped, "$POD_AMBIG": _shared_prefix(pods),
            "$CREATED": created, "$CREATED_NAME": "created", "$RUNNING": running,
            "$EXITED": exited, "$CTR_AMBIG": _shared_prefix(ctrs),
            "$IMAGE": self.image, "$REGISTRY": self.registry, "$TMP": str(self.tmp),
            "$CGROUP_PARENT": self.cgroup_parent,
        }

    def fill(self, value: Any) -> Any:
        """Replace $VARS (fresh $UID/$UNIQUE on every use) throughout a request dict."""
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, str):
            if value in self.vars and not isinstance(self.vars[value], str):
                return self.vars[value]
            return _VAR.sub(self._var, value)
        return value

    def _var(self, m: re.Match[str]) -> str:
        name = m.group(0)
        if name in ("$UID", "$UNIQUE"):
            return f"bad-{uuid.uuid4().hex[:10]}"
        return str(self.vars.get(name, name))

    def call(self, service: str, rpc: str, request: dict[str, Any]) -> tuple[grpc.StatusCode, str,
                                                                              Any]:
        """(code, details, response) of one RPC built from a protobuf-JSON dict."""
        stub = self.client.runtime if service == "runtime" else self.client.image
        svc = self.client.pb.DESCRIPTOR.services_by_name[
            "RuntimeService" if service == "runtime" else "ImageService"]
        method = svc.methods_by_name[rpc]
        msg = getattr(self.client.pb, method.input_type.name)()
        json_format.ParseDict(request, msg)
        try:
            if method.server_streaming:
                return grpc.StatusCode.OK, "", list(getattr(stub, rpc)(msg, timeout=30))
            return grpc.StatusCode.OK, "", getattr(stub, rpc)(msg, timeout=60)
        except grpc.RpcError as exc:
            return exc.code(), str(exc.details() or ""), None

    def remove_everything(self) -> None:
        """Pods first (they take their containers), then any container left over."""
        pb, rt = self.client.pb, self.client.runtime
        for p in rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id), timeout=60)
        for c in rt.ListContainers(pb.ListContainersRequest(), timeout=30).containers:
            rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c.id), timeout=60)

    def leftovers(self) -> list[str]:
        """Kernel state a removed pod or container could leave: mounts, cgroups, veths."""
        out = [f"mount {m}" for m in hostclean.mounts_under(self.berthd.workdir)]
        for parent in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            out += [f"cgroup {c}" for c in parent.iterdir() if c.is_dir()]
        links = subprocess.run(["ip", "-o", "link", "show", "master", self.berthd.bridge],
                               capture_output=True, text=True, check=False).stdout
        out += [f"link {ln.split(':')[1].strip()}" for ln in links.splitlines()]
        return out

    def drop_cgroup_parent(self) -> None:
        for parent in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            hostclean.rmdir_if_empty(parent)


def _shared_prefix(ids: list[str]) -> str:
    """A one-character prefix at least two ids share ('' if none)."""
    firsts = [i[0] for i in ids]
    return next((c for c in firsts if firsts.count(c) > 1), "")


def _wait_exited(client: CriClient, cid: str, timeout: float = 30.0) -> None:
    pb = client.pb
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid),
                                            timeout=10).status
        if st.state == pb.CONTAINER_EXITED:
            return
        time.sleep(0.05)
    raise AssertionError(f"container {cid} did not exit")
