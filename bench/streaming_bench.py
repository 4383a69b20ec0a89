"""Exec round trip over SPDY (Exec RPC, upgrade, stdin echoed back, exit code): the latency a
`kubectl exec` user feels, runtime side only."""

from __future__ import annotations

import asyncio
import time

from critest.streamclient import remotecommand as rc
from tests.fixtures.cri_client import CriClient

PAYLOAD = b"berth-bench\n"
# one channel per endpoint: connecting is not the runtime's cost
_clients: dict[str, CriClient] = {}


async def _one(client: CriClient, container_id: str) -> float:
    t0 = time.perf_counter()
    req = client.pb.ExecRequest(container_id=container_id, cmd=["cat"], stdin=True, stdout=True,
                                stderr=False)
    url = client.runtime.Exec(req, timeout=10).url
    s = await rc.open_spdy(url, stdin=True, stderr=False)
    try:
        await s.send(PAYLOAD)
        await s.read_until(PAYLOAD)
        await s.close_stdin()
        res = await s.wait(10)
    finally:
        await s.aclose()
    if res.exit_code != 0:
        raise RuntimeError(f"exec round trip failed: {res}")
    return (time.perf_counter() - t0) * 1000


def exec_roundtrip(endpoint: str, container_id: str, n: int) -> list[float]:
    """n sequential exec sessions in a running container with `cat`; milliseconds each."""
    client = _clients.get(endpoint) or _clients.setdefault(endpoint, CriClient(endpoint))

    async def run() -> list[float]:
        return [await _one(client, container_id) for _ in range(n)]

    return asyncio.run(run())
