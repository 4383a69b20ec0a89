"""Undo steps for a create that fails half-way, so a failed RPC leaves nothing behind."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("rollback")

Step = Callable[[], Awaitable[object] | object]


class Rollback:
    """Push an undo after each step succeeds; `run` unwinds them newest first."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Step]] = []

    def push(self, what: str, undo: Step) -> None:
        self.steps.append((what, undo))

    async def run(self) -> None:
        """Every undo runs even if an earlier one fails; failures are logged, not raised."""
        while self.steps:
            what, undo = self.steps.pop()
            try:
                result = undo()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("rollback step failed", step=what)
