"""Crash points for fault tests: BERTH_FAILPOINTS=a,b makes berthd SIGKILL itself at a or b."""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(filter(None, os.environ.get("BERTH_FAILPOINTS", "").split(",")))


def hit(name: str) -> None:
    """A no-op in production; under test, die exactly as `kill -9` would, mid-operation."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
