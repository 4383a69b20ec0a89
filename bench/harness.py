"""Interleaved sampling: berth and containerd alternate, so machine noise hits both alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Sample = Callable[[], float | None]


@dataclass
class Peer:
    """One CRI endpoint under test, with what its metrics need."""

    name: str
    client: Any  # tests.fixtures.cri_client.CriClient
    extra: dict[str, Any]


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call in milliseconds."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def interleave(berth: Sample, peer: Sample, n: int, warmup: int = 2) -> tuple[list[float],
                                                                               list[float]]:
    """Alternate which side goes first each round; warm-up rounds are run and dropped."""
    b: list[float] = []
    p: list[float] = []
    for i in range(warmup + n):
        order = [(berth, b), (peer, p)] if i % 2 == 0 else [(peer, p), (berth, b)]
        for fn, out in order:
            value = fn()
            if i >= warmup and value is not None:
                out.append(value)
    return b, p


@dataclass(frozen=True)
class Plan:
    """How many samples each benchmark takes; --quick shrinks everything."""

    n: int = 30  # samples of per-pod metrics
    warmup: int = 2
    pulls: int = 5
    small: int = 30  # pods for list and memory figures
    large: int = 100
    clients: int = 6
    rate_rounds: int = 20  # rounds of `clients` pods brought up at once, for pods/s
    cni_pods: int = 50
    starts: int = 30
    rounds: int = 5  # exec round-trip: blocks per peer
    block: int = 6  # round trips per block
    scrapes: int = 20

    @classmethod
    def quick(cls) -> Plan:
        return cls(n=3, warmup=1, pulls=1, small=6, large=12, rate_rounds=0, cni_pods=5,
                   starts=5, rounds=1, block=3, scrapes=3)
