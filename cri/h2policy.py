"""The CRI socket's limits, and the abuse counters each connection keeps against them.

h2 runs the protocol; what a client may cost (pings, resets, calls in flight) is ours to bound
(docs/transport.md). The counters only decide; cri/h2conn.py sends the GOAWAY.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The CRI socket's limits; cri/server.py sets them and docs/config.md says why."""

    max_receive: int
    max_send: int
    max_streams: int
    max_header_list: int
    buffered_per_connection: int  # request bytes held for calls not yet complete
    write_high_water: int  # reading pauses while this much waits to be written
    handshake_timeout: float
    keepalive_time: float
    keepalive_timeout: float
    ping_min_interval: float
    ping_strikes: int
    reset_budget: int  # client resets beyond this and twice the calls answered: GOAWAY


@dataclass
class CallBudget:
    """Calls in flight across every connection; past the limit a call gets RESOURCE_EXHAUSTED
    instead of memory."""

    limit: int
    count: int = 0


@dataclass
class Strikes:
    """One connection's record of cheap-for-the-client, costly-for-us frames."""

    limits: Limits
    answered: int = 0
    resets: int = 0
    pings: int = 0  # pings too close together with nothing sent in between
    last_ping: float = float("-inf")

    def reset(self) -> str | None:
        """CVE-2023-44487: resets are cheap for the client, not for us; past a budget (and
        twice the calls answered) the connection goes, as grpc-go and grpc core do in their
        own ways. The reason to close, or None."""
        self.resets += 1
        if self.resets > self.limits.reset_budget and self.resets > 2 * self.answered:
            return "too many stream resets"
        return None

    def ping(self) -> str | None:
        """grpc-go's enforcement policy (containerd's): pings closer than the minimum interval
        with nothing sent in between are strikes; past the allowance, GOAWAY."""
        now = time.monotonic()
        closing = None
        if now - self.last_ping < self.limits.ping_min_interval:
            self.pings += 1
            if self.pings > self.limits.ping_strikes:
                closing = "too_many_pings"
        self.last_ping = now
        return closing

    def sent(self) -> None:
        """Data went out: ping strikes start over."""
        self.pings, self.last_ping = 0, float("-inf")

    def reply(self) -> None:
        """A reply went out: the rapid-reset budget grows and ping strikes start over."""
        self.answered += 1
        self.sent()
