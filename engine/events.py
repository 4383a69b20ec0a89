"""Fan-out of events to streaming subscribers (CRI's GetContainerEvents, Docker's /events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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

    async def subscribe(self) -> AsyncIterator[E]:
        q: asyncio.Queue[E | None] = asyncio.Queue(QUEUE_LIMIT)
        self.subscribers.add(q)
        try:
            while (event := await q.get()) is not None:
                yield event
        finally:
            self.subscribers.discard(q)
