"""Single-use, short-lived tokens naming a prepared streaming request (the URL's secret)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_PENDING = 1024  # unconsumed URLs; a caller minting more without using them gets refused


class TooManyPending(Exception):
    """Too many URLs handed out and not yet used."""


@dataclass(frozen=True)
class ExecJob:
    container_id: str
    cmd: list[str]
    process: dict[str, Any]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class AttachJob:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class PortForwardJob:
    pod_id: str
    netns: str  # "" for host-network pods: dial from berthd's own namespace
    ports: list[int] = field(default_factory=list)


Job = ExecJob | AttachJob | PortForwardJob


class TokenCache:
    """Insertion-ordered, so expiry only ever looks at the oldest entries."""

    def __init__(self, ttl: float, max_pending: int = MAX_PENDING) -> None:
        self.ttl, self.max_pending = ttl, max_pending
        self._jobs: OrderedDict[str, tuple[float, Job]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._jobs:
            token, (deadline, _) = next(iter(self._jobs.items()))
            if deadline > now:
                break
            del self._jobs[token]

    def put(self, job: Job) -> str:
        now = time.monotonic()
        self._expire(now)
        if len(self._jobs) >= self.max_pending:
            raise TooManyPending(f"{len(self._jobs)} streaming URLs are pending")
        token = secrets.token_urlsafe(16)
        self._jobs[token] = (now + self.ttl, job)
        return token

    def consume(self, token: str) -> Job | None:
        """The job, at most once and only before it expired."""
        self._expire(time.monotonic())
        entry = self._jobs.pop(token, None)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        return len(self._jobs)
