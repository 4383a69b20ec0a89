"""Fan-out of events to streaming subscribers (CRI's GetContainerEvents, Docker's /events)."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

QUEUE_LIMIT = 1000
E = TypeVar("E")


class EventHub(Generic[E]):
    """Fan-out to subscribers with bounded queues: a stalled client loses its stream, not RAM."""

    def __init__(self) -> None:
        self.subscribers: set[asyncio.Queue[E | None]] = set()

    def publish(self, event: E) -> None:
        for q in list(self.subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.subscribers.discard(q)
                q.get_nowait()
                q.put_nowait(None)  # tells the stream to end; the client reconnects and relists

    def subscribe(self) -> Subscription[E]:
        """A stream of what is published from now on: registered here, not at the first read,
        so a client told its stream is open (Docker's 200, a gRPC call underway) misses nothing
        that happens after."""
        q: asyncio.Queue[E | None] = asyncio.Queue(QUEUE_LIMIT)
        self.subscribers.add(q)
        return Subscription(self, q)


class Subscription(Generic[E]):
    """One subscriber's events, until the hub drops it or aclose(); use it in `async with`."""

    def __init__(self, hub: EventHub[E], q: asyncio.Queue[E | None]) -> None:
        self.hub, self.q = hub, q

    def __aiter__(self) -> Subscription[E]:
        return self

    async def __anext__(self) -> E:
        event = await self.q.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self.hub.subscribers.discard(self.q)

    async def __aenter__(self) -> Subscription[E]:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()
