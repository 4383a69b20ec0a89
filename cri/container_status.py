"""Container status, lists, resource updates and log reopening."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cri.context import Context
from cri.errors import FailedPrecondition, InvalidArgument, NotFound
from cri.filters import id_match, labels_match
from cri.grpccall import RpcContext
from cri.ocispec import resources as oci_resources
from engine.statecache import Entry
from engine.store import K8S, ContainerRecord
from proto import api_pb2 as pb
from runtime import containers as monitor
from runtime.monitor.state import ContainerState

STATES = {"created": "CONTAINER_CREATED", "running": "CONTAINER_RUNNING",
          "stopped": "CONTAINER_EXITED"}
STREAM_BATCH = 500


def cri_state(st: ContainerState | None) -> str:
    return STATES.get(st.status, "CONTAINER_UNKNOWN") if st else "CONTAINER_UNKNOWN"


def container_status(rec: ContainerRecord, st: ContainerState | None) -> pb.ContainerStatus:
    """The CRI view of one container: its record for what was asked, the monitor for state."""
    cfg = pb.ContainerConfig.FromString(rec.config)
    mounts = [pb.Mount(container_path=m.container_path, host_path=m.host_path,
                       readonly=m.readonly, propagation=m.propagation)
              for m in cfg.mounts]
    status = pb.ContainerStatus(
        id=rec.id, metadata=cfg.metadata, state=cri_state(st), created_at=rec.created_ns,
        image=pb.ImageSpec(image=rec.image), image_ref=rec.extra.get("image_ref", ""),
        image_id=rec.image_id, labels=rec.labels, annotations=rec.annotations,
        mounts=mounts, log_path=rec.extra.get("log_path", ""),
        resources=pb.ContainerResources(linux=cfg.linux.resources))
    if st is not None:
        status.started_at = st.started_ns
        status.finished_at = st.finished_ns
        if st.status == "stopped":
            status.exit_code = st.exit_code
            status.reason = st.reason or ("Completed" if st.exit_code == 0 else "Error")
            status.message = st.message
    else:
        status.reason, status.message = "Unknown", "the monitor has no record of it"
    return status


def _matches(f: pb.ContainerFilter, rec: ContainerRecord, state: str) -> bool:
    if not id_match(f.id, rec.id) or not id_match(f.pod_sandbox_id, rec.pod_id):
        return False
    if f.HasField("state") and f.state.state != pb.ContainerState.Value(state):
        return False
    return labels_match(f.label_selector, rec.labels)


class ContainerStatusRPCs:
    """Read paths: one monitor round trip per call, never one per container."""

    ctx: Context
    if TYPE_CHECKING:
        def container(self, given: str) -> ContainerRecord: ...


    async def ContainerStatus(self, request: pb.ContainerStatusRequest,
                              context: RpcContext) -> pb.ContainerStatusResponse:
        rec = self.container(request.container_id)
        try:
            st: ContainerState | None = await self.ctx.monitor.state(rec.id)
        except monitor.NotFound:
            st = None
        info = {}
        if request.verbose:
            info["info"] = json.dumps({"sandboxID": rec.pod_id, "pid": st.pid if st else 0,
                                       "bundle": str(self.ctx.bundle_dir(rec.id)),
                                       "runtimeState": st.status if st else "unknown"})
        return pb.ContainerStatusResponse(status=container_status(rec, st), info=info)

    def _item(self, rec: ContainerRecord, state: str) -> pb.Container:
        return pb.Container(
            id=rec.id, pod_sandbox_id=rec.pod_id, metadata=self.ctx.metadata.container(rec),
            image=pb.ImageSpec(image=rec.image), image_ref=rec.extra.get("image_ref", ""),
            image_id=rec.image_id, state=state, created_at=rec.created_ns,
            labels=rec.labels, annotations=rec.annotations)

    async def list_containers(self, f: pb.ContainerFilter) -> list[pb.Container]:
        states = await self.ctx.container_states()
        out = []
        for rec in self.ctx.store.containers.owned(K8S):
            state = cri_state(states.get(rec.id))
            if _matches(f, rec, state):
                out.append(self._item(rec, state))
        return out

    def _entries(self) -> list[Entry]:
        states = self.ctx.states.states
        out: list[Entry] = []
        for rec in self.ctx.store.containers.owned(K8S):
            state = cri_state(states.get(rec.id))
            wire = pb.ListContainersResponse(containers=[self._item(rec, state)])
            out.append((rec, state, wire.SerializeToString()))
        return out

    async def ListContainers(self, request: pb.ListContainersRequest,
                             context: RpcContext
                             ) -> pb.ListContainersResponse | bytes:
        """Pre-serialised (the interceptor sends bytes as they are) once states are synced."""
        st, table = self.ctx.states, self.ctx.store.containers
        if not st.synced:
            return pb.ListContainersResponse(containers=await self.list_containers(request.filter))
        listing = self.ctx.lists.get("containers", (table, table.generation, st, st.generation),
                                     self._entries)
        f = request.filter
        if not f.ListFields():
            return listing.whole
        return b"".join(wire for rec, state, wire in listing.entries if _matches(f, rec, state))

    async def StreamContainers(self, request: pb.StreamContainersRequest,
                               context: RpcContext
                               ) -> AsyncIterator[pb.StreamContainersResponse]:
        items = await self.list_containers(request.filter)
        for i in range(0, len(items), STREAM_BATCH):
            yield pb.StreamContainersResponse(containers=items[i:i + STREAM_BATCH])

    async def UpdateContainerResources(
            self, request: pb.UpdateContainerResourcesRequest,
            context: RpcContext) -> pb.UpdateContainerResourcesResponse:
        rec = self.container(request.container_id)
        if not request.HasField("linux"):
            raise InvalidArgument("linux resources are required")
        res = oci_resources(request.linux)
        res.pop("devices", None)  # device rules are fixed at create time
        try:
            await self.ctx.monitor.update(rec.id, res)
        except monitor.InvalidState as exc:
            raise FailedPrecondition(f"container {rec.id}: {exc}") from None
        except monitor.NotFound:
            raise NotFound(f"container {rec.id} has no process") from None
        cfg = pb.ContainerConfig.FromString(rec.config)
        cfg.linux.resources.CopyFrom(request.linux)
        rec.config = cfg.SerializeToString()
        self.ctx.store.containers.put(rec)
        return pb.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest,
                                 context: RpcContext
                                 ) -> pb.ReopenContainerLogResponse:
        rec = self.container(request.container_id)
        try:
            await self.ctx.monitor.reopen_log(rec.id)
        except (monitor.InvalidState, monitor.NotFound) as exc:
            raise FailedPrecondition(f"container {rec.id} is not running: {exc}") from None
        return pb.ReopenContainerLogResponse()
