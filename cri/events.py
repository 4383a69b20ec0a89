"""GetContainerEvents: kubelet's evented PLEG hears of every state change as it happens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from proto import api_pb2 as pb

QUEUE_LIMIT = 1000


class EventHub:
    """Fan-out to subscribers with bounded queues: a stalled client loses its stream, not RAM."""

    def __init__(self) -> None:
        self.subscribers: set[asyncio.Queue[pb.ContainerEventResponse | None]] = set()

    def publish(self, event: pb.ContainerEventResponse) -> None:
        for q in list(self.subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.subscribers.discard(q)
                q.get_nowait()
                q.put_nowait(None)  # tells the stream to end; kubelet reconnects and relists

    async def subscribe(self) -> AsyncIterator[pb.ContainerEventResponse]:
        q: asyncio.Queue[pb.ContainerEventResponse | None] = asyncio.Queue(QUEUE_LIMIT)
        self.subscribers.add(q)
        try:
            while (event := await q.get()) is not None:
                yield event
        finally:
            self.subscribers.discard(q)


class EventRPCs:
    """The streaming RPC itself; publishers are the sandbox and container RPCs."""

    hub: EventHub

    async def GetContainerEvents(self, request: pb.GetEventsRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> AsyncIterator[pb.ContainerEventResponse]:
        async for event in self.hub.subscribe():
            yield event
