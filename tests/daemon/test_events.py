"""The event hub both front ends stream from (engine/events.py)."""

from __future__ import annotations

import asyncio

from engine.events import QUEUE_LIMIT, EventHub


def test_a_subscription_sees_what_is_published_before_its_first_read() -> None:
    """Registered by subscribe() itself: a front end subscribes, then tells its client the
    stream is open, and an event published in between must not be lost."""
    async def run() -> list[int]:
        hub: EventHub[int] = EventHub()
        async with hub.subscribe() as events:
            hub.publish(1)
            hub.publish(2)
            got = [await anext(events), await anext(events)]
        assert not hub.subscribers  # gone with the `async with`
        return got

    assert asyncio.run(run()) == [1, 2]


def test_a_stalled_subscriber_is_dropped_and_its_stream_ends() -> None:
    async def run() -> int:
        hub: EventHub[int] = EventHub()
        async with hub.subscribe() as events:
            for i in range(QUEUE_LIMIT + 1):
                hub.publish(i)
            assert not hub.subscribers
            return len([e async for e in events])

    assert asyncio.run(run()) == QUEUE_LIMIT - 1  # the oldest gave way to the end marker
