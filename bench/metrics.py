"""The benchmarks: each returns one Row measured against both peers in the same run."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness import Peer, interleave, timed
from bench.stats import Row

Metric = Callable[[Peer, Peer, int], Row]


def version_rpc(berth: Peer, ctrd: Peer, n: int) -> Row:
    """The floor under every RPC: gRPC round trip plus the servicer's dispatch."""
    b, p = interleave(lambda: timed(berth.client.version), lambda: timed(ctrd.client.version),
                      n * 5)
    return Row("Version RPC round trip", "ms", b, p, target=None)


METRICS: dict[str, Metric] = {
    "version": version_rpc,
}
