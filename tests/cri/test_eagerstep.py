"""cri/eagerstep.py on a real event loop: a call that never waits needs no task, one that waits
goes on as a task in the context its first step bound, and cancellation reaches it at its wait
as it would reach a task's own coroutine."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

import pytest

from cri import eagerstep

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("rid", default=None)


async def _started(call: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Step the call from a loop callback, as CriConnection.data_received does (no task)."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[asyncio.Task[None] | None] = loop.create_future()
    loop.call_soon(lambda: started.set_result(eagerstep.start(call)))
    return await started


def test_a_call_that_never_waits_needs_no_task() -> None:
    seen: list[object] = []

    async def call() -> None:
        REQUEST_ID.set("a")
        seen.append(asyncio.current_task())

    assert asyncio.run(_started(call())) is None
    assert seen == [None]
    assert REQUEST_ID.get() is None  # bound in the call's own context only


def test_a_call_that_waits_goes_on_in_its_context() -> None:
    seen: list[object] = []

    async def call() -> None:
        REQUEST_ID.set("b")
        await asyncio.sleep(0.01)
        seen.append((REQUEST_ID.get(), asyncio.current_task() is not None))

    async def main() -> None:
        task = await _started(call())
        assert task is not None
        await task
        assert REQUEST_ID.get() is None

    asyncio.run(main())
    assert seen == [("b", True)]


@pytest.mark.parametrize("after", ["cancel", "raise"])
def test_cancellation_and_errors_reach_the_call(after: str) -> None:
    seen: list[str] = []

    async def call() -> None:
        try:
            await asyncio.sleep(0 if after == "raise" else 10)
        except asyncio.CancelledError:
            seen.append("cancelled at its wait")
            raise
        finally:
            seen.append("finally")
        raise ValueError("after the wait")

    async def main() -> None:
        task = await _started(call())
        assert task is not None
        if after == "cancel":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.cancelled()
        else:
            with pytest.raises(ValueError, match="after the wait"):
                await task

    asyncio.run(main())
    assert seen == (["cancelled at its wait", "finally"] if after == "cancel" else ["finally"])
