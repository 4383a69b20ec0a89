"""Container events come from the monitor, so exits nobody asked for reach kubelet too.

The same stream keeps berthd's state cache current: subscribe, then list, then apply events
(buffered meanwhile) in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

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


async def _pump(stream: AsyncIterator[ContainerEvent],
                queue: asyncio.Queue[ContainerEvent | None]) -> None:
    try:
        async for ev in stream:
            await queue.put(ev)
    finally:
        await queue.put(None)


async def _follow_once(ctx: Context) -> None:
    subscribed = asyncio.Event()
    queue: asyncio.Queue[ContainerEvent | None] = asyncio.Queue()
    pump = asyncio.create_task(_pump(ctx.monitor.events(subscribed), queue))
    try:
        waiter = asyncio.create_task(subscribed.wait())
        await asyncio.wait({pump, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not subscribed.is_set():
            pump.result()  # raises why the subscription failed
            return
        ctx.states.resync(await ctx.monitor.list())
        while (ev := await queue.get()) is not None:
            if ev.kind == "deleted":
                ctx.states.drop(ev.state.id)
            else:
                ctx.states.apply(ev.state)
            event = to_cri(ctx, ev)
            if event is not None:
                ctx.hub.publish(event)
    finally:
        ctx.states.synced = False
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


async def follow_monitor(ctx: Context) -> None:
    """Relay monitor events for the daemon's lifetime; reconnect when the stream drops."""
    while True:
        try:
            await _follow_once(ctx)
        except (OSError, MonitorError, ValueError) as exc:
            log.warning("monitor event stream lost; reconnecting", error=str(exc))
        await asyncio.sleep(0.5)
