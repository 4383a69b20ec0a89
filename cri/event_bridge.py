"""Container events come from the monitor, so exits nobody asked for reach kubelet too."""

from __future__ import annotations

import asyncio
import time

import structlog

from cri.container_status import container_status
from cri.context import Context
from cri.sandbox import pod_status
from proto import api_pb2 as pb
from runtime.containers import ContainerEvent, MonitorError

log = structlog.get_logger("events")
KINDS = {"created": "CONTAINER_CREATED_EVENT", "started": "CONTAINER_STARTED_EVENT",
         "stopped": "CONTAINER_STOPPED_EVENT", "deleted": "CONTAINER_DELETED_EVENT"}


def to_cri(ctx: Context, ev: ContainerEvent) -> pb.ContainerEventResponse | None:
    """Attach the pod's and the container's status, as kubelet's evented PLEG reads them."""
    kind = KINDS.get(ev.kind)
    rec = ctx.store.containers.get(ev.state.id)
    if kind is None or rec is None:
        return None
    out = pb.ContainerEventResponse(container_id=rec.id, container_event_type=kind,
                                    created_at=time.time_ns(),
                                    containers_statuses=[container_status(rec, ev.state)])
    pod = ctx.store.pods.get(rec.pod_id)
    if pod is not None:
        out.pod_sandbox_status.CopyFrom(pod_status(pod))
    return out


async def follow_monitor(ctx: Context) -> None:
    """Relay monitor events for the daemon's lifetime; reconnect when the stream drops."""
    while True:
        try:
            async for ev in ctx.monitor.events():
                event = to_cri(ctx, ev)
                if event is not None:
                    ctx.hub.publish(event)
        except (OSError, MonitorError, ValueError) as exc:
            log.warning("monitor event stream lost; reconnecting", error=str(exc))
        await asyncio.sleep(0.5)
