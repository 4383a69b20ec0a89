"""Run a call's coroutine to its first wait right where the request arrived, and make a task of
it only if it waits.

The calls kubelet polls (Version, the lists served from the cache) never wait: as a task each
costs a task, a loop turn (one more epoll_wait), a done callback in yet another turn and a
deadline timer that is always cancelled. Python 3.12 has `asyncio.Task(..., eager_start=True)`;
berthd runs on 3.11, so the first step is taken here with the coroutine's public `send` and the
rest is handed to a task through `_Rest`, which forwards the task's steps as `await` would.

That first step runs without a current task (asyncio.current_task() is None): code that needs
one (asyncio.timeout, a TaskGroup, anyio and so httpx, which fail with "unknown async library")
must not run before the call's first wait. So only the calls in cri/grpccall.EAGER start here,
and deadlines come from the connection (cri/h2conn.py), not from asyncio.timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


class _Rest:
    """Awaiting this resumes `coro` from the wait its first step stopped at."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # the task's cancellation, thrown in at the wait
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration:
                    return


async def _rest(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    await _Rest(coro, waiting)


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Step `coro` once in a context of its own; None if it finished, else the task that runs
    the rest (in the same context: what the step bound, e.g. the request id, stays bound)."""
    loop, context = asyncio.get_running_loop(), contextvars.copy_context()
    try:
        waiting = context.run(coro.send, None)
    except StopIteration:
        return None
    return loop.create_task(_rest(coro, waiting), context=context)
