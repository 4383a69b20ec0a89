"""GetContainerEvents: kubelet's evented PLEG hears of every state change as it happens."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from cri.container_status import container_status
from cri.context import Context
from cri.grpccall import RpcContext
from cri.sandbox import pod_status
from engine.events import EventHub
from engine.store import K8S
from proto import api_pb2 as pb
from runtime.containers import ContainerEvent

KINDS = {"created": "CONTAINER_CREATED_EVENT", "started": "CONTAINER_STARTED_EVENT",
         "stopped": "CONTAINER_STOPPED_EVENT", "deleted": "CONTAINER_DELETED_EVENT"}


def to_cri(ctx: Context, ev: ContainerEvent) -> pb.ContainerEventResponse | None:
    """Attach the pod's and the container's status, as kubelet's evented PLEG reads them."""
    kind = KINDS.get(ev.kind)
    rec = ctx.store.containers.get(ev.state.id)
    if kind is None or rec is None or rec.owner != K8S:
        return None
    out = pb.ContainerEventResponse(container_id=rec.id, container_event_type=kind,
                                    created_at=time.time_ns(),
                                    containers_statuses=[container_status(rec, ev.state)])
    pod = ctx.store.pods.get(rec.pod_id)
    if pod is not None:
        out.pod_sandbox_status.CopyFrom(pod_status(pod))
    return out


def relay(ctx: Context) -> None:
    """Monitor events reach GetContainerEvents: exits nobody asked for reach kubelet too."""
    def listener(ev: ContainerEvent) -> None:
        event = to_cri(ctx, ev)
        if event is not None:
            ctx.hub.publish(event)

    ctx.listeners.append(listener)

class EventRPCs:
    """The streaming RPC itself; publishers are the sandbox and container RPCs."""

    hub: EventHub[pb.ContainerEventResponse]

    async def GetContainerEvents(self, request: pb.GetEventsRequest,
                                 context: RpcContext
                                 ) -> AsyncIterator[pb.ContainerEventResponse]:
        async with self.hub.subscribe() as events:
            async for event in events:
                yield event
