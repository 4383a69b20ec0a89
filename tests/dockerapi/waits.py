"""Polling for the Docker API tests: a container's state changes after the call returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(pred: Callable[[], T], timeout: float = 30.0, step: float = 0.1) -> T:
    """The predicate's first truthy value, polled every `step` seconds; fails after timeout."""
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(step)
    return got
