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
