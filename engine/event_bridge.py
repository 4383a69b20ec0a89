"""Container events come from the monitor, so exits nobody asked for reach the front ends.

The same stream keeps berthd's state cache current: subscribe, then list, then apply events
(buffered meanwhile) in order; each event then goes to the context's listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from engine.context import Context
from runtime.containers import ContainerEvent, MonitorError

log = structlog.get_logger("events")
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
            for listener in ctx.listeners:
                try:
                    listener(ev)
                except Exception:  # one front end's bug must not stop the others' events
                    log.exception("event listener failed", event=ev.kind)
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
