"""Pod sandbox RPCs: pinned namespaces and a network, no pause container."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from cri import ocispec, podconfig
from cri.context import Context
from cri.errors import AlreadyExists, InvalidArgument, NotFound
from cri.filters import id_match, labels_match
from cri.grpccall import RpcContext
from engine import pods
from engine.ids import lookup, new_id
from engine.pods import NOTREADY, READY
from engine.statecache import Entry
from engine.store import K8S, ContainerRecord, NameTaken, PodRecord
from proto import api_pb2 as pb
from runtime.network import podfiles

RUNTIME_HANDLERS = ("", "berth", "runc")
STREAM_BATCH = 500


def _full_name(m: pb.PodSandboxMetadata) -> str:
    return f"{m.name}_{m.namespace}_{m.uid}_{m.attempt}"


def pod_status(rec: PodRecord) -> pb.PodSandboxStatus:
    """The CRI view of a pod, rebuilt from its record alone (no kernel calls)."""
    cfg = pb.PodSandboxConfig.FromString(rec.config)
    ips = rec.extra.get("ips", []) if rec.state == READY else []
    opts = cfg.linux.security_context.namespace_options
    return pb.PodSandboxStatus(
        id=rec.id, metadata=cfg.metadata,
        state=rec.state, created_at=rec.created_ns,
        network=pb.PodSandboxNetworkStatus(
            ip=ips[0] if ips else "",
            additional_ips=[pb.PodIP(ip=ip) for ip in ips[1:]]),
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=opts)),
        labels=rec.labels, annotations=rec.annotations,
        runtime_handler=rec.extra.get("runtime_handler", ""))


def backfill_ports(ctx: Context) -> None:
    """Pods recorded before the engine kept port mappings on the record get them from config."""
    for rec in ctx.store.pods.find(owner=K8S, ports=[]):
        ports = podconfig.ports(pb.PodSandboxConfig.FromString(rec.config))
        if ports:
            rec.ports = ports
            ctx.store.pods.put(rec)


def _spec(cfg: pb.PodSandboxConfig) -> pods.PodSpec:
    """The pod's kernel side in the engine's terms."""
    opts = cfg.linux.security_context.namespace_options
    return pods.PodSpec(
        hostname=podconfig.hostname(cfg), host_network=opts.network == pb.NamespaceMode.NODE,
        host_ipc=opts.ipc == pb.NamespaceMode.NODE, pod_pid=opts.pid == pb.NamespaceMode.POD,
        sysctls=dict(cfg.linux.sysctls),
        dns=podfiles.DNSConfig(servers=list(cfg.dns_config.servers),
                               searches=list(cfg.dns_config.searches),
                               options=list(cfg.dns_config.options)),
        log_directory=cfg.log_directory, cgroup_parent=cfg.linux.cgroup_parent)


def _pod_matches(f: pb.PodSandboxFilter, rec: PodRecord) -> bool:
    if not id_match(f.id, rec.id) or not labels_match(f.label_selector, rec.labels):
        return False
    return not f.HasField("state") or pb.PodSandboxState.Value(rec.state) == f.state.state


class SandboxRPCs:
    """RunPodSandbox and friends; containers are reached through ContainerRPCs' helpers."""

    ctx: Context
    if TYPE_CHECKING:  # provided by ContainerRPCs in the composed servicer
        async def kill_container(self, container_id: str) -> None: ...
        async def remove_container(self, rec: ContainerRecord) -> None: ...

    def pod(self, given: str) -> PodRecord:
        return lookup(self.ctx.store.pods, given, "pod sandbox", K8S)

    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest,
                            context: RpcContext) -> pb.RunPodSandboxResponse:
        cfg = request.config
        podconfig.validate(cfg)
        if request.runtime_handler not in RUNTIME_HANDLERS:
            raise NotFound(f"runtime handler '{request.runtime_handler}' is not configured "
                           "(berth serves the default handler, 'berth' and 'runc')")
        pod_id = new_id()
        rec = PodRecord(id=pod_id, name=cfg.metadata.name, namespace=cfg.metadata.namespace,
                        uid=cfg.metadata.uid, attempt=cfg.metadata.attempt, state=NOTREADY,
                        created_ns=time.time_ns(), config=cfg.SerializeToString(),
                        labels=dict(cfg.labels), annotations=dict(cfg.annotations),
                        ports=podconfig.ports(cfg))
        try:
            await pods.run_pod(self.ctx, rec, _spec(cfg), f"pod sandbox {_full_name(cfg.metadata)}")
        except NameTaken as exc:
            raise AlreadyExists(f"pod sandbox name {_full_name(cfg.metadata)} is already "
                                f"reserved by {exc}") from None
        self.pod_event(rec, "CONTAINER_STARTED_EVENT")
        return pb.RunPodSandboxResponse(pod_sandbox_id=pod_id)

    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest,
                             context: RpcContext) -> pb.StopPodSandboxResponse:
        rec = self.pod(request.pod_sandbox_id)
        await self.stop_pod(rec)
        return pb.StopPodSandboxResponse()

    async def stop_pod(self, rec: PodRecord) -> None:
        """Kill every container, then tear the network down; repeating it is harmless."""
        if await pods.stop_pod(self.ctx, rec, self.kill_container):
            self.pod_event(rec, "CONTAINER_STOPPED_EVENT")

    async def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest,
                               context: RpcContext) -> pb.RemovePodSandboxResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id is required")
        try:
            rec = self.pod(request.pod_sandbox_id)
        except NotFound:
            return pb.RemovePodSandboxResponse()  # idempotent, as kubelet expects
        await self.stop_pod(rec)
        for c in self.ctx.store.containers.find(pod_id=rec.id):
            await self.remove_container(c)
        pods.forget_pod(self.ctx, rec)
        self.ctx.metadata.forget(rec.id)
        self.pod_event(rec, "CONTAINER_DELETED_EVENT")
        return pb.RemovePodSandboxResponse()

    async def UpdatePodSandboxResources(
            self, request: pb.UpdatePodSandboxResourcesRequest,
            context: RpcContext) -> pb.UpdatePodSandboxResourcesResponse:
        """kubelet sizes the pod cgroup itself (cgroupfs driver): Berth only checks the values,
        since it holds no per-pod process (no pause container) whose limits could change."""
        self.pod(request.pod_sandbox_id)
        ocispec.resources(request.overhead)
        ocispec.resources(request.resources)
        return pb.UpdatePodSandboxResourcesResponse()

    def pod_event(self, rec: PodRecord, kind: str) -> None:
        """Sandbox changes go out as container events carrying the pod id, as containerd does."""
        self.ctx.hub.publish(pb.ContainerEventResponse(
            container_id=rec.id, container_event_type=kind, created_at=time.time_ns(),
            pod_sandbox_status=pod_status(rec)))

    async def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest,
                               context: RpcContext) -> pb.PodSandboxStatusResponse:
        rec = self.pod(request.pod_sandbox_id)
        info = {}
        if request.verbose:
            info["info"] = json.dumps({"pid": 0, "namespaces": rec.extra.get("ns", {}),
                                       "cgroupParent": rec.extra.get("cgroup_parent", ""),
                                       "podDir": str(self.ctx.pod_dir(rec.id))})
        return pb.PodSandboxStatusResponse(status=pod_status(rec), info=info)

    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest,
                             context: RpcContext
                             ) -> pb.ListPodSandboxResponse | bytes:
        """Pre-serialised (the interceptor sends bytes as they are), rebuilt on pod writes."""
        table = self.ctx.store.pods
        listing = self.ctx.lists.get("pods", (table, table.generation), self._pod_entries)
        f = request.filter
        if not f.ListFields():
            return listing.whole
        return b"".join(wire for rec, _, wire in listing.entries if _pod_matches(f, rec))

    def _pod_item(self, rec: PodRecord) -> pb.PodSandbox:
        return pb.PodSandbox(
            id=rec.id, metadata=self.ctx.metadata.pod(rec), state=rec.state,
            created_at=rec.created_ns, labels=rec.labels, annotations=rec.annotations,
            runtime_handler=rec.extra.get("runtime_handler", ""))

    def _pod_entries(self) -> list[Entry]:
        return [(rec, rec.state,
                 pb.ListPodSandboxResponse(items=[self._pod_item(rec)]).SerializeToString())
                for rec in self.ctx.store.pods.owned(K8S)]

    def list_pods(self, f: pb.PodSandboxFilter) -> list[pb.PodSandbox]:
        return [self._pod_item(rec) for rec in self.ctx.store.pods.owned(K8S)
                if _pod_matches(f, rec)]

    async def StreamPodSandboxes(self, request: pb.StreamPodSandboxesRequest,
                                 context: RpcContext) -> Any:
        items = self.list_pods(request.filter)
        for i in range(0, len(items), STREAM_BATCH):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=items[i:i + STREAM_BATCH])
