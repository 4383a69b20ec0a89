"""Run a call's coroutine to its first wait right where the request arrived, and make a task of
it only if it waits.

Most CRI calls (Version, a list served from the cache) never wait: as a task each costs a task,
a loop turn (one more epoll_wait), a done callback in yet another turn and a deadline timer
that is always cancelled. Python 3.12 has this as `asyncio.Task(..., eager_start=True)`, used
there. On 3.11 the first step is taken here with the coroutine's public `send` and the rest is
handed to a task through `_Rest`, which forwards the task's steps as `await` would; that step
runs without a current task (asyncio.current_task() is None), so on 3.11 code that needs one
(asyncio.timeout, TaskGroup; asyncio.wait_for is fine there) must not run before a call's
first wait. berthd applies deadlines from the connection (cri/h2conn.py), not with
asyncio.timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
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
    if sys.version_info >= (3, 12):
        task = asyncio.Task(coro, loop=loop, context=context,
                            eager_start=True)  # type: ignore[call-arg]
        return None if task.done() else task
    try:
        waiting = context.run(coro.send, None)
    except StopIteration:
        return None
    return loop.create_task(_rest(coro, waiting), context=context)
